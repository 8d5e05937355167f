"""Serving on generated audio: decoding, windows, the CLI, ONNX export and the HTTP API."""

from __future__ import annotations

import json

import numpy as np
import pytest
from fastapi.testclient import TestClient

from ser.data.audio import load_audio
from ser.features.hand import hand_features
from ser.serving import InputError, Predictor, decode_audio
from ser.serving.app import Limits, create_app
from ser.serving.onnx_export import export_onnx, read_metadata
from ser.serving.predict import main as predict_main
from ser.training.checkpoint import load_classifier
from tests.serving_helpers import encode, encode_ffmpeg, tone


@pytest.fixture(scope="module")
def predictor(tiny_checkpoint) -> Predictor:
    return Predictor.load(tiny_checkpoint)


def _probs(pred) -> np.ndarray:
    return np.array(list(pred.probabilities.values()))


# --- decoding ------------------------------------------------------------------------

FORMATS = {
    "wav": lambda x, sr: encode(x, sr, "WAV"),
    "flac": lambda x, sr: encode(x, sr, "FLAC"),
    "ogg-vorbis": lambda x, sr: encode(x, sr, "OGG", "VORBIS"),
    "ogg-opus": lambda x, sr: encode(x, sr, "OGG", "OPUS"),
    "webm-opus": lambda x, sr: encode_ffmpeg(x, sr),
    "mp4-aac": lambda x, sr: encode_ffmpeg(x, sr, "mp4", "aac"),
}


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize(("sr", "channels"), [(16000, 1), (44100, 2), (48000, 6)])
def test_every_format_rate_and_channel_count_decodes(fmt, sr, channels):
    if fmt == "ogg-opus" and sr == 44100:
        pytest.skip("Opus has no 44.1 kHz mode; libsndfile refuses to write it")
    decoded = decode_audio(FORMATS[fmt](tone(3.5, sr, channels=channels), sr))
    assert decoded.channels == channels and decoded.samples.dtype == np.float32
    assert decoded.samples.ndim == 1  # the channels' mean
    assert decoded.duration == pytest.approx(3.5, abs=0.08)  # codec padding
    assert 0.2 < np.abs(decoded.samples).max() < 0.5


def test_lossless_input_decodes_exactly_as_training_loads_it(tmp_path, predictor):
    """First window's features: the same numbers `featurise` computes from the file."""
    x = tone(3.5, 16000, channels=2, seed=3)
    path = tmp_path / "clip.wav"
    path.write_bytes(encode(x, 16000, "WAV", "FLOAT"))
    pipeline = predictor.pipeline
    spec = pipeline.spec
    wave = load_audio(path, spec.audio)
    raw = hand_features(wave[None], spec.audio.sample_rate, spec.hand, spec.n_samples)
    mono = decode_audio(path.read_bytes()).samples
    spans = pipeline.windows(len(mono), 16000)
    served = pipeline.serve_inputs(mono, 16000, spans)["features"]  # (windows, versions, D)
    np.testing.assert_array_equal(served[:, 0], pipeline.standardise.apply(raw))


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (b"", "empty"),
        (b"this is a text file, not a recording\n" * 20, "unsupported_format"),
        (b"\x89PNG\r\n\x1a\n" + bytes(500), "unsupported_format"),
        (b"RIFF\x10\x00\x00\x00WAVEjunk" + bytes(500), "not_audio"),
    ],
)
def test_non_audio_is_refused_with_its_reason(data, code):
    with pytest.raises(InputError) as err:
        decode_audio(data)
    assert err.value.code == code


@pytest.mark.parametrize("fmt", ["wav", "flac", "ogg-opus", "webm-declared"])
def test_truncated_files_are_refused(fmt):
    x = tone(3.5, 16000)
    data = (encode_ffmpeg(x, 16000, live=False) if fmt == "webm-declared"
            else FORMATS[fmt](x, 16000))
    with pytest.raises(InputError, match="truncated") as err:
        decode_audio(data[: len(data) * 2 // 3])
    assert err.value.code == "truncated"


def test_length_limit_is_checked_before_decoding_everything():
    with pytest.raises(InputError, match="longer than the limit") as err:
        decode_audio(encode(tone(12, 8000), 8000, "FLAC"), max_seconds=10)
    assert err.value.code == "too_long"
    with pytest.raises(InputError, match="longer than the limit"):
        decode_audio(encode_ffmpeg(tone(12, 16000), 16000), max_seconds=10)


# --- prediction ----------------------------------------------------------------------


def test_the_same_clip_in_any_format_gets_the_same_answer(predictor):
    x = tone(3.5, 44100, freq=150.0 * 5 + 7 * 3, channels=2)  # an "angry" tone of actor 3
    reference = predictor.predict(encode(x, 44100, "WAV"))
    for fmt in ("flac", "ogg-vorbis", "webm-opus", "mp4-aac"):
        pred = predictor.predict(FORMATS[fmt](x, 44100), name=fmt)
        assert pred.top == reference.top, fmt
        np.testing.assert_allclose(_probs(pred), _probs(reference), atol=0.05, err_msg=fmt)
    lossless = predictor.predict(encode(x, 44100, "FLAC"))
    # libsndfile's WAV and FLAC writers round a few samples 1 LSB apart; nothing more
    wav, flac = (decode_audio(encode(x, 44100, f)).samples for f in ("WAV", "FLAC"))
    assert np.abs(wav - flac).max() <= 2.0**-15
    np.testing.assert_allclose(_probs(lossless), _probs(reference), atol=1e-4)


def test_a_clip_of_training_length_is_one_window_from_the_offset(predictor):
    pred = predictor.predict(encode(tone(3.5), 16000, "WAV"), name="clip.wav")
    assert len(pred.windows) == 1
    assert (pred.windows[0].start, pred.windows[0].end) == (0.6, 3.1)
    assert pred.top == max(pred.probabilities, key=pred.probabilities.get)
    assert sum(pred.probabilities.values()) == pytest.approx(1, abs=1e-4)
    assert list(pred.probabilities) == predictor.class_names
    assert pred.source == "clip.wav" and pred.model.startswith("cnn ")


def test_long_recordings_slide_the_window_and_average(predictor):
    x = np.concatenate([tone(5.6, freq=171), tone(5.2, freq=621)])  # two "emotions"
    pred = predictor.predict(encode(x, 16000, "FLAC"))
    assert [w.start for w in pred.windows] == pytest.approx([0.6, 3.1, 5.6, 8.1])
    assert all(w.end - w.start == pytest.approx(2.5) for w in pred.windows)
    mean = np.mean([list(w.probabilities.values()) for w in pred.windows], axis=0)
    np.testing.assert_allclose(_probs(pred), mean, atol=1e-5)
    first, last = (list(w.probabilities.values()) for w in (pred.windows[0], pred.windows[-1]))
    assert not np.allclose(first, last, atol=1e-3)  # each window is its own audio
    hop = Predictor(predictor.classify, predictor.class_names, predictor.pipeline, hop=0.5)
    assert len(hop.predict(encode(x, 16000, "FLAC")).windows) == 16  # 0.6 .. 8.1 by 0.5


def test_short_and_silent_recordings_are_errors_not_guesses(predictor):
    with pytest.raises(InputError, match="only 0.40 s of audio after") as err:
        predictor.predict(encode(tone(1.0), 16000, "WAV"), name="short.wav")
    assert err.value.code == "too_short" and "short.wav" in str(err.value)
    with pytest.raises(InputError, match="no speech: the recording is silent") as err:
        predictor.predict(encode(np.zeros((48000, 1), np.float32), 16000, "WAV"))
    assert err.value.code == "no_speech"
    quiet = tone(3.5) * 1e-3  # peak -70 dBFS
    with pytest.raises(InputError, match="no speech: the recording is silent"):
        predictor.predict(encode_ffmpeg(quiet, 16000))


# --- command line --------------------------------------------------------------------


def test_predict_cli_prints_every_file_and_json(tiny_checkpoint, tmp_path, capsys):
    good = tmp_path / "a.ogg"
    good.write_bytes(encode(tone(3.5, 48000, channels=2), 48000, "OGG", "OPUS"))
    long = tmp_path / "long.webm"
    long.write_bytes(encode_ffmpeg(tone(9.0), 16000))
    bad = tmp_path / "notes.txt"
    bad.write_text("not audio")
    assert predict_main([str(tiny_checkpoint), str(good), str(long)]) == 0
    out = capsys.readouterr().out
    assert "a.ogg:" in out and "surprised" in out and "window   3.10-  5.60 s" in out

    assert predict_main([str(tiny_checkpoint), str(good), str(bad), "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["model"]["network"] == "cnn" and report["model"]["input"] == "hand"
    first, second = report["results"]
    assert set(first["probabilities"]) == set(report["model"]["class_names"])
    assert first["windows"][0]["start"] == 0.6
    assert second["error"] == "unsupported_format" and "notes.txt" in second["detail"]


def test_predict_cli_stops_quietly_when_its_reader_does(tiny_checkpoint, tmp_path):
    """`ser-predict MODEL *.wav | head -1`: no BrokenPipeError traceback, at any point."""
    import subprocess
    import sys

    from ser.config import REPO_ROOT

    clip = tmp_path / "a.wav"
    clip.write_bytes(encode(tone(3.5, 16000), 16000, "WAV", "PCM_16"))
    for n_files in (2, 400):  # the output fits the pipe's buffer, or it doesn't
        proc = subprocess.Popen(
            [sys.executable, "-m", "ser.serving.predict", str(tiny_checkpoint),
             *[str(clip)] * n_files], cwd=REPO_ROOT,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert proc.stdout.readline().startswith(str(clip))
        proc.stdout.close()  # as head does after its line
        err = proc.stderr.read()
        proc.wait(timeout=300)
        assert "Traceback" not in err and "BrokenPipe" not in err, err
        assert proc.returncode == 1


def test_predict_cli_names_a_bad_model(tmp_path, capsys):
    assert predict_main([str(tmp_path / "missing.ckpt"), str(tmp_path / "x.wav")]) == 2
    assert "cannot load model" in capsys.readouterr().err


# --- ONNX ----------------------------------------------------------------------------


def test_onnx_export_carries_labels_and_preprocessing(tiny_checkpoint, tiny_onnx, predictor):
    props = read_metadata(tiny_onnx)
    assert json.loads(props["class_names"]) == predictor.class_names
    meta = json.loads(props["ser_meta"])
    assert meta == load_classifier(tiny_checkpoint).checkpoint_meta().to_dict()
    assert meta["pipeline"]["features"]["audio"] == {"sample_rate": 22050, "offset": 0.6,
                                                     "duration": 2.5, "min_duration": 0.5}
    assert tiny_checkpoint.name in props["source_checkpoint"]


def test_onnxruntime_gives_torchs_probabilities(tiny_onnx, predictor):
    runtime = Predictor.load(tiny_onnx)
    assert runtime.info["backend"] == "onnxruntime"
    assert runtime.pipeline.meta() == predictor.pipeline.meta()
    for seed, freq in enumerate((171, 321, 621, 1221)):
        data = encode(tone(3.5, 22050, freq=freq, seed=seed), 22050, "FLAC")
        torch_p, onnx_p = predictor.predict(data), runtime.predict(data)
        np.testing.assert_allclose(_probs(onnx_p), _probs(torch_p), atol=1e-5)


def test_export_cli(tiny_checkpoint, tmp_path, capsys):
    from ser.serving.onnx_export import main

    assert main([str(tiny_checkpoint), str(tmp_path / "m.onnx")]) == 0
    assert (tmp_path / "m.onnx").stat().st_size > 10_000
    assert export_onnx  # the function the CLI wraps


# --- HTTP ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def client(predictor) -> TestClient:
    limits = Limits(max_bytes=600_000, max_seconds=20.0)
    return TestClient(create_app(predictor, limits), base_url="http://127.0.0.1:8000")


def test_page_and_model_info(client):
    page = client.get("/")
    assert page.status_code == 200
    assert 'id="record"' in page.text and 'type="file"' in page.text
    assert client.get("/static/app.js").status_code == 200
    info = client.get("/api/model").json()
    assert info["network"] == "cnn" and info["limits"]["max_seconds"] == 20.0


def test_api_predicts_a_browser_recording(client, predictor):
    data = encode_ffmpeg(tone(4.0, 48000, channels=2), 48000)
    response = client.post("/api/predict", content=data,
                           headers={"content-type": "audio/webm;codecs=opus"})
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["top"] in predictor.class_names and answer["model"] == predictor.name
    assert answer["audio_format"] == "matroska/opus" and answer["elapsed_ms"] > 0


def _bad_inputs() -> dict[str, tuple[bytes, str, int, str]]:
    wav = encode(tone(3.5), 16000, "WAV")
    return {
        "empty body": (b"", "audio/wav", 400, "empty"),
        "not audio": (b"GIF89a" + bytes(1000), "audio/wav", 415, "unsupported_format"),
        "bad wav": (b"RIFF\x10\x00\x00\x00WAVEjunk" + bytes(500), "audio/wav", 422,
                    "not_audio"),
        "truncated": (encode(tone(3.5), 16000, "FLAC")[:40_000], "audio/flac", 422, "truncated"),
        "silence": (encode(np.zeros((56000, 1), np.float32), 16000, "WAV"), "audio/wav", 422,
                    "no_speech"),
        "too short": (encode(tone(0.8), 16000, "WAV"), "audio/wav", 422, "too_short"),
        "too long": (encode(tone(30, 8000), 8000, "FLAC"), "audio/flac", 413, "too_long"),
        "too big": (bytes(700_000), "audio/wav", 413, "body_too_large"),
        "content type": (wav, "text/plain", 415, "unsupported_media_type"),
        "form post": (wav, "multipart/form-data; boundary=x", 415, "unsupported_media_type"),
    }


@pytest.mark.parametrize("case", list(_bad_inputs()))
def test_bad_input_gets_a_clear_json_error_and_the_server_keeps_serving(client, case):
    data, content_type, status, code = _bad_inputs()[case]
    response = client.post("/api/predict", content=data, headers={"content-type": content_type})
    assert response.status_code == status, response.text
    error = response.json()
    assert error["error"] == code and error["status"] == status and len(error["detail"]) > 10
    ok = client.post("/api/predict", content=encode(tone(3.5), 16000, "WAV"),
                     headers={"content-type": "audio/wav"})
    assert ok.status_code == 200


def test_a_body_over_the_limit_is_refused_while_streaming(client):
    """No Content-Length (chunked upload): the size check counts what arrives."""
    chunks = (bytes(100_000) for _ in range(10))
    response = client.post("/api/predict", content=chunks, headers={"content-type": "audio/wav"})
    assert response.status_code == 413 and response.json()["error"] == "body_too_large"
