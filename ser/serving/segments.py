"""Emotion over time: a long recording cut into speech segments, each predicted as a clip.

Speech is found by Silero VAD (the `silero-vad` package, MIT; its ONNX model ships inside
the package and runs on onnxruntime, so nothing is downloaded). The detector runs at
16 kHz on the recording resampled as the models' inputs are; its regions are mapped back
to samples at the recording's own rate.

Each region becomes a clip of its own, framed as corpus clips are: the speech with up to
`CONTEXT` s of the recording before and after it, never past the middle of the pause to a
neighbouring region. RAVDESS clips carry about 1 s of near-silence before their speech
(the seed CNN skips its first 0.6 s), so a segment looks to the model like the clips it
was trained on. That clip goes through `Predictor.predict_waveform`, exactly as a
recording of its own would (its own windows, speech check and length check).

A region with less speech than the model's `min_duration` (a click, a cough, an "uh") is
listed with `skipped: too_short`, not merged into a neighbour: merging would join speech
across a pause that may separate two emotions. The overall answer is the mean of the
classified segments' probabilities weighted by their speech duration.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from ser.data.audio import resample
from ser.serving.decode import InputError, decode_audio
from ser.serving.predict import Prediction, Predictor, SegmentPrediction, WindowPrediction

VAD_RATE = 16000  # Silero VAD's native rate
THRESHOLD = 0.5  # speech probability of a 32 ms frame (the package's default)
MIN_SILENCE = 0.5  # s: shorter pauses stay inside one segment (a sentence's own pauses)
MIN_SPEECH = 0.25  # s: shorter blips are not speech at all (the package's default)
MAX_SPEECH = 10.0  # s: longer speech is split at its longest pause, for a finer timeline
SPEECH_PAD = 0.03  # s the detector adds around each region (the package's default)
CONTEXT = 1.0  # s of the recording kept before and after a segment's speech

_vad: Any = None
_vad_lock = threading.Lock()  # the detector keeps state between its 32 ms frames


def _detector() -> tuple[Any, Callable[..., list[dict]]]:
    """The model and the package's segmenter; the first call imports them (under the lock)."""
    global _vad
    if _vad is None:
        import torch

        threads = torch.get_num_threads()
        # importing the package sets torch to one thread for the whole process: undo that
        from silero_vad.utils_vad import OnnxWrapper, get_speech_timestamps

        torch.set_num_threads(threads)
        model = resources.files("silero_vad.data") / "silero_vad.onnx"  # inside the package
        _vad = OnnxWrapper(str(model), force_onnx_cpu=True), get_speech_timestamps
    return _vad


def warm_up() -> None:
    """Load the detector now, so the first request doesn't pay for it."""
    with _vad_lock:
        _detector()


def speech_regions(mono: np.ndarray, sample_rate: int) -> list[tuple[int, int]]:
    """(start, end) of each speech region, in samples at `sample_rate`."""
    import torch

    wave = resample(mono, sample_rate, VAD_RATE)
    with _vad_lock:
        model, get_speech_timestamps = _detector()
        found = get_speech_timestamps(
            torch.from_numpy(wave), model, threshold=THRESHOLD, sampling_rate=VAD_RATE,
            min_speech_duration_ms=round(1e3 * MIN_SPEECH), max_speech_duration_s=MAX_SPEECH,
            min_silence_duration_ms=round(1e3 * MIN_SILENCE),
            speech_pad_ms=round(1e3 * SPEECH_PAD))
    scale = sample_rate / VAD_RATE
    n = len(mono)
    return [(min(round(r["start"] * scale), n), min(round(r["end"] * scale), n)) for r in found]


def segment_clips(regions: Sequence[tuple[int, int]], n: int, sample_rate: int,
                  context: float = CONTEXT) -> list[tuple[int, int]]:
    """Each region with up to `context` s around it, never past the middle of the pause to
    a neighbouring region, nor past the recording's ends."""
    pad = round(context * sample_rate)
    clips = []
    for k, (start, end) in enumerate(regions):
        lo = (regions[k - 1][1] + start) // 2 if k else 0
        hi = (end + regions[k + 1][0]) // 2 if k + 1 < len(regions) else n
        clips.append((max(start - pad, lo), min(end + pad, hi)))
    return clips


def predict_segments(predictor: Predictor, mono: np.ndarray, sample_rate: int,
                     name: str = "<audio>", audio_format: str = "") -> Prediction:
    """The timeline of a mono recording; InputError if no segment could be classified."""
    regions = speech_regions(mono, sample_rate)
    if not regions:
        raise InputError("no_speech", "no speech: the voice-activity detector found no "
                         "speech in the recording")
    min_speech = predictor.pipeline.audio.min_duration
    segments, windows, weighted = [], [], []
    for (start, end), (lo, hi) in zip(regions, segment_clips(regions, len(mono), sample_rate),
                                      strict=True):
        times = (start / sample_rate, end / sample_rate, lo / sample_rate, hi / sample_rate)
        skipped = "too_short" if end - start < min_speech * sample_rate else None
        if skipped is None:
            try:
                pred = predictor.predict_waveform(mono[lo:hi], sample_rate)
            except InputError as err:
                if err.code not in ("too_short", "no_speech"):
                    raise
                skipped = err.code
        if skipped:
            segments.append(SegmentPrediction(*times, None, None, None, skipped))
            continue
        segments.append(SegmentPrediction(*times, pred.top, pred.confidence, pred.probabilities))
        offset = lo / sample_rate
        windows += [WindowPrediction(w.start + offset, w.end + offset, w.top, w.probabilities)
                    for w in pred.windows]
        weighted.append((times[1] - times[0], [pred.probabilities[c]
                                               for c in predictor.class_names]))
    if not weighted:
        raise InputError("too_short", f"every speech segment is shorter than the model's "
                         f"{min_speech:g} s minimum")
    weights, probs = map(np.asarray, zip(*weighted, strict=True))
    overall = weights @ probs / weights.sum()
    best = int(overall.argmax())
    named = {c: round(float(p), 6) for c, p in zip(predictor.class_names, overall, strict=True)}
    return Prediction(name, predictor.class_names[best], float(overall[best]), named, windows,
                      len(mono) / sample_rate, predictor.name, audio_format, segments)


def predict_segments_of(predictor: Predictor, source: str | Path | bytes, *,
                        name: str | None = None, max_seconds: float | None = None
                        ) -> Prediction:
    """`predict_segments` of a file path or a whole file's bytes (any format decoded)."""
    label = name or ("<bytes>" if isinstance(source, bytes) else str(source))
    data = source if isinstance(source, bytes) else Path(source)
    try:
        decoded = decode_audio(data, max_seconds=max_seconds)
        mono = decoded.samples
        return predict_segments(predictor, mono, decoded.sample_rate, label, decoded.format)
    except InputError as err:
        raise InputError(err.code, f"{label}: {err}") from None
