"""Serving on real RAVDESS clips: training's features, ONNX parity, browser codecs."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from ser.data.audio import load_audio
from ser.features.hand import hand_features
from ser.serving import Predictor
from ser.serving.onnx_export import export_onnx
from tests.serving_helpers import encode_ffmpeg

pytestmark = pytest.mark.real_data


@pytest.fixture(scope="module")
def clips(real_ravdess):
    """Two clips per emotion from four actors: 64 real recordings of every kind."""
    return sorted(real_ravdess.glob("Actor_0[1-4]/03-01-0?-0?-01-01-*.flac"))


def _probs(pred) -> np.ndarray:
    return np.array(list(pred.probabilities.values()))


def test_a_real_clip_gets_exactly_trainings_features(clips, tiny_checkpoint):
    pipeline = Predictor.load(tiny_checkpoint).pipeline
    spec = pipeline.spec
    for clip in clips[::8]:
        raw = hand_features(load_audio(clip, spec.audio)[None], spec.audio.sample_rate,
                            spec.hand, spec.n_samples)
        audio, sr = sf.read(clip, dtype="float32")
        served = pipeline.serve_inputs(audio, sr, pipeline.windows(len(audio), sr)[:1])
        np.testing.assert_array_equal(served["features"][:, 0], pipeline.standardise.apply(raw))


def _agree(torch_model: Predictor, onnx_model: Predictor, clips) -> None:
    worst = 0.0
    for clip in clips:
        a, b = torch_model.predict(clip), onnx_model.predict(clip)
        assert a.top == b.top, clip.name
        worst = max(worst, float(np.abs(_probs(a) - _probs(b)).max()))
    assert worst < 1e-5


def test_onnxruntime_and_torch_agree_on_real_clips(clips, tiny_checkpoint, tiny_onnx):
    _agree(Predictor.load(tiny_checkpoint), Predictor.load(tiny_onnx), clips)


@pytest.mark.slow
def test_onnxruntime_and_torch_agree_for_a_real_model(clips, real_checkpoint, tmp_path):
    """A model trained on speech, whose probabilities are far from one-hot on speech."""
    onnx_path = export_onnx(real_checkpoint, tmp_path / "real.onnx")
    torch_model = Predictor.load(real_checkpoint)
    assert max(torch_model.predict(clips[0]).probabilities.values()) < 0.99
    _agree(torch_model, Predictor.load(onnx_path), clips)


@pytest.mark.slow
def test_a_real_clip_as_a_browser_recording_keeps_its_answer(clips, real_checkpoint):
    """webm/opus at 48 kHz (what Chrome sends) versus the FLAC itself."""
    predictor = Predictor.load(real_checkpoint)
    for clip in clips[::16]:
        audio, sr = sf.read(clip, dtype="float32", always_2d=True)
        flac, webm = predictor.predict(clip), predictor.predict(encode_ffmpeg(audio, sr))
        np.testing.assert_allclose(_probs(webm), _probs(flac), atol=0.1, err_msg=clip.name)
