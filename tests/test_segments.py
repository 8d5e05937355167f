"""Emotion over time: speech segments of a long recording, each predicted as a clip.

The fast tests use generated audio and a fixed list of regions; the real-data tests join
RAVDESS clips of one held-out actor (different emotions) with 1 s of silence between them.
A clip's "true" speech region is what the same detector finds in that clip alone (RAVDESS
clips carry about 1 s of near-silence before and after the speech), used only where an
energy threshold agrees with it (`tests.serving_helpers.speech_clips`).
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf

from ser.data.audio import resample
from ser.serving import InputError, Predictor
from ser.serving import segments as seg
from ser.serving.predict import main as predict_main
from tests.serving_helpers import long_recording, timeline_clips, tone

SR = 16000
TOLERANCE = 0.2  # s between a found boundary and the true one


# --- fast: generated audio ------------------------------------------------------------


def test_a_segment_keeps_context_up_to_the_middle_of_each_pause():
    regions = [(16000, 32000), (40000, 80000), (200000, 210000)]
    clips = seg.segment_clips(regions, 220000, SR, context=1.0)
    assert clips == [(0, 36000), (36000, 96000), (184000, 220000)]


def test_each_segment_is_predicted_as_a_clip_of_its_own(tiny_checkpoint, monkeypatch):
    predictor = Predictor.load(tiny_checkpoint)
    mono = np.concatenate([tone(3.0, freq=450), np.zeros((SR, 1), np.float32),
                           tone(0.8, freq=600), np.zeros((SR, 1), np.float32),
                           tone(3.0, freq=900, seed=1)])[:, 0]
    regions = [(0, 3 * SR), (4 * SR, 4 * SR + 4000), (int(5.8 * SR), len(mono))]
    monkeypatch.setattr(seg, "speech_regions", lambda mono, sr: regions)
    pred = seg.predict_segments(predictor, mono, SR)
    assert [s.skipped for s in pred.segments] == [None, "too_short", None]  # 0.25 s < 0.5 s
    clips = seg.segment_clips(regions, len(mono), SR)
    classified = [(s, c) for s, c in zip(pred.segments, clips, strict=True) if not s.skipped]
    for s, (lo, hi) in classified:
        alone = predictor.predict_waveform(mono[lo:hi], SR)
        assert (s.clip_start, s.clip_end) == (lo / SR, hi / SR)
        assert s.probabilities == alone.probabilities and s.top == alone.top
    # overall: the classified segments' probabilities weighted by their speech duration
    weights = np.array([s.end - s.start for s, _ in classified])
    expected = weights @ np.array([list(s.probabilities.values()) for s, _ in classified])
    np.testing.assert_allclose(list(pred.probabilities.values()), expected / weights.sum(),
                               atol=1e-6)
    assert len(pred.windows) == sum(len(predictor.predict_waveform(mono[lo:hi], SR).windows)
                                    for _, (lo, hi) in classified)


def test_silence_and_only_short_speech_are_errors(tiny_checkpoint, monkeypatch):
    predictor = Predictor.load(tiny_checkpoint)
    with pytest.raises(InputError) as err:
        seg.predict_segments(predictor, np.zeros(5 * SR, np.float32), SR)
    assert err.value.code == "no_speech"
    monkeypatch.setattr(seg, "speech_regions", lambda mono, sr: [(SR, SR + 3000)])
    with pytest.raises(InputError) as err:
        seg.predict_segments(predictor, tone(3.0)[:, 0], SR)
    assert err.value.code == "too_short"


def test_loading_the_detector_leaves_torchs_threads_alone():
    """silero-vad's import sets torch to one thread for the whole process."""
    code = ("import numpy as np, torch; torch.set_num_threads(2);"
            "from ser.serving.segments import speech_regions;"
            "speech_regions(np.zeros(16000, np.float32), 16000); print(torch.get_num_threads())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=120)
    assert out.stdout.split()[-1] == "2"


# --- real data: RAVDESS clips joined by silences ---------------------------------------------


@pytest.fixture(scope="module")
def recording(real_ravdess, real_checkpoint, tmp_path_factory):
    """The long recording, its file, and per clip: path, samples and true speech region."""
    clips, refused = timeline_clips(real_checkpoint, real_ravdess)
    print("left out (detector, energy):", refused)
    assert len(clips) >= 5, f"the detector and the energy disagree on most clips: {refused}"
    mono, starts = long_recording([c[0] for c in clips])
    path = tmp_path_factory.mktemp("long") / "long.flac"
    sf.write(path, mono, SR)
    truth = [((start + s) / SR, (start + e) / SR)
             for start, (_, _, (s, e)) in zip(starts, clips, strict=True)]
    return {"mono": mono, "path": path, "clips": clips, "truth": truth}


@pytest.mark.real_data
def test_true_regions_are_sentences(recording):
    for path, audio, (s, e) in recording["clips"]:
        assert 0.8 * SR < e - s < len(audio), path.name  # a sentence, not a blip


@pytest.mark.real_data
@pytest.mark.parametrize("rate", [16000, 48000])
def test_segment_boundaries_are_within_a_fifth_of_a_second(recording, rate):
    mono = resample(recording["mono"], SR, rate)  # a browser records at 48 kHz
    found = [(s / rate, e / rate) for s, e in seg.speech_regions(mono, rate)]
    truth = recording["truth"]
    print("found", np.round(found, 2).tolist(), "\ntrue", np.round(truth, 2).tolist())
    assert len(found) == len(truth)
    np.testing.assert_allclose(found, truth, atol=TOLERANCE)


@pytest.mark.real_data
def test_each_segment_is_the_models_prediction_of_its_own_samples(
        recording, real_checkpoint, capsys):
    predictor = Predictor.load(real_checkpoint)
    assert predict_main([str(real_checkpoint), str(recording["path"]), "--segments",
                         "--json"]) == 0
    timeline = json.loads(capsys.readouterr().out)["results"][0]["segments"]
    mono, names = recording["mono"], predictor.class_names
    assert len(timeline) == len(recording["clips"])
    diffs = []
    for s, (start, end), (path, audio, _) in zip(timeline, recording["truth"],
                                                 recording["clips"], strict=True):
        assert s["skipped"] is None
        lo, hi = round(s["clip_start"] * SR), round(s["clip_end"] * SR)
        own = predictor.predict_waveform(mono[lo:hi], SR)  # the segment's samples alone
        assert s["probabilities"] == own.probabilities and s["top"] == own.top
        # the segment covers the clip's speech, so it is close to the clip alone
        assert s["clip_start"] <= start and end <= s["clip_end"]
        alone = predictor.predict_waveform(audio, SR)
        diff = np.abs(np.subtract([s["probabilities"][c] for c in names],
                                  [alone.probabilities[c] for c in names]))
        diffs.append(diff.max())
        print(f"{path.name}: segment {s['top']} {s['confidence']:.2f}, alone {alone.top} "
              f"{alone.confidence:.2f}, largest difference {diff.max():.3f}")
    assert np.median(diffs) < 0.1 and max(diffs) < 0.3
