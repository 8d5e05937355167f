"""Hostile and odd input to the decoder and the server, on real RAVDESS/TESS clips.

Scripts that make ffmpeg open server files, FLAC of unknown length, cut MP3/M4A, signals
with no speech, absurd samples, bad option values and foreign Host headers.
"""

from __future__ import annotations

import io
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from fastapi.testclient import TestClient

from ser.serving import InputError, Predictor, decode_audio
from ser.serving.app import HostPolicy, Limits, create_app, host_name
from ser.serving.app import main as serve_main
from ser.serving.decode import check_not_silent, sniff
from ser.serving.predict import main as predict_main
from tests.conftest import real_data_dir
from tests.serving_helpers import encode

pytestmark = pytest.mark.real_data
CLIP = "Actor_01/03-01-05-01-01-01-01.flac"  # angry, 3.6 s


def real_clip(name: str = CLIP) -> tuple[np.ndarray, int]:
    """A RAVDESS clip as (frames, 1) float32 and its rate."""
    path = real_data_dir() / "ravdess" / name
    if not path.is_file():
        pytest.skip(f"real RAVDESS not found at {path}")
    samples, sr = sf.read(path, dtype="float32", always_2d=True)
    return samples, sr


def encode_av(samples: np.ndarray, sr: int, container: str, codec: str, out=None) -> bytes:
    """Encode with PyAV (ffmpeg) into `out` (a BytesIO unless given), return the bytes."""
    import av

    out = io.BytesIO() if out is None else out
    pcm = np.ascontiguousarray((samples.T * 32768).clip(-32768, 32767).astype(np.int16))
    with av.open(out, "w", format=container) as muxer:
        stream = muxer.add_stream(codec, rate=sr, layout="mono")
        for start in range(0, pcm.shape[1], 4096):  # as a recorder delivers it
            frame = av.AudioFrame.from_ndarray(pcm[:, start : start + 4096], format="s16",
                                               layout="mono")
            frame.sample_rate, frame.pts, frame.time_base = sr, start, Fraction(1, sr)
            for packet in stream.encode(frame):
                muxer.mux(packet)
        for packet in stream.encode(None):
            muxer.mux(packet)
    return bytes(out.buf) if isinstance(out, _Pipe) else out.getvalue()


class _Pipe:
    """A write-only, unseekable file: what `ffmpeg ... pipe:` writes to."""

    def __init__(self) -> None:
        self.buf = bytearray()

    def write(self, data: bytes) -> int:
        self.buf += data
        return len(data)


def _code(data: bytes, **kwargs) -> tuple[str, str]:
    with pytest.raises(InputError) as err:
        decode_audio(data, **kwargs)
    return err.value.code, str(err.value)


@pytest.fixture(scope="module")
def predictor(tiny_checkpoint) -> Predictor:
    return Predictor.load(tiny_checkpoint)


@pytest.fixture(scope="module")
def client(predictor) -> TestClient:
    app = create_app(predictor, Limits(max_bytes=2_000_000, max_seconds=20.0))
    return TestClient(app, base_url="http://127.0.0.1:8000")


def _post(client: TestClient, data: bytes, **headers: str):
    return client.post("/api/predict", content=data,
                       headers={"content-type": "application/octet-stream", **headers})


# --- 1. only listed containers; ffmpeg never picks a demuxer ------------------------

SCRIPTS = {
    "ffconcat": b"ffconcat version 1.0\nfile clip.wav\n",
    "ffconcat, missing file": b"ffconcat version 1.0\nfile missing.wav\n",
    "hls playlist": b"#EXTM3U\n#EXT-X-TARGETDURATION:4\n#EXTINF:4.0,\nclip.wav\n"
                    b"#EXT-X-ENDLIST\n",
    "m3u": b"#EXTM3U\n#EXTINF:4,clip\nclip.wav\n",
    "url": b"file:clip.wav",
    "png (image2)": b"\x89PNG\r\n\x1a\n" + bytes(200),
}


@pytest.fixture
def clip_in_cwd(tmp_path, monkeypatch) -> Path:
    """A real clip as clip.wav in the server's working directory."""
    samples, sr = real_clip()
    path = tmp_path / "clip.wav"
    sf.write(path, samples, sr)
    monkeypatch.chdir(tmp_path)
    return path


@pytest.mark.parametrize("case", list(SCRIPTS))
def test_scripts_and_playlists_never_open_server_files(clip_in_cwd, client, case):
    code, message = _code(SCRIPTS[case])
    assert code == "unsupported_format"
    assert message == ("not a supported audio file: only WAV, FLAC, Ogg (Vorbis, Opus), "
                       "WebM/Matroska, MP4/M4A and MP3 are read (recognised by their first "
                       "bytes)")  # the same words whether the named file exists or not
    response = _post(client, SCRIPTS[case])
    assert response.status_code == 415, response.text
    assert response.json()["error"] == "unsupported_format"
    assert "clip" not in response.json()["detail"]


def test_each_listed_container_is_sniffed_from_its_bytes():
    samples, sr = real_clip()
    kinds = {
        "wav": encode(samples, sr, "WAV"), "flac": encode(samples, sr, "FLAC"),
        "ogg": encode(samples, sr, "OGG", "OPUS"),
        "mp3": encode_av(samples, sr, "mp3", "libmp3lame"),
        "matroska": encode_av(samples, sr, "matroska", "flac"),  # webm/opus: test_serving
        "mp4": encode_av(samples, sr, "mp4", "aac"),
    }
    for kind, data in kinds.items():
        assert sniff(data) == kind
        assert decode_audio(data).duration == pytest.approx(len(samples) / sr, abs=0.1), kind


# --- 2. FLAC of unknown length ------------------------------------------------------


def _unknown_length(flac: bytes) -> bytes:
    """Zero STREAMINFO's 36-bit total-samples field, as a streaming encoder leaves it."""
    data = bytearray(flac)
    assert data[:4] == b"fLaC" and data[4] & 0x7F == 0  # STREAMINFO comes first
    data[8 + 13] &= 0xF0
    data[8 + 14 : 8 + 18] = bytes(4)
    return bytes(data)


def test_flac_of_unknown_length_decodes_to_the_original_samples():
    samples, sr = real_clip()
    for data in (_unknown_length(encode(samples, sr, "FLAC")),
                 encode_av(samples, sr, "flac", "flac", out=_Pipe())):
        assert data[8 + 13] & 0x0F == 0 and data[8 + 14 : 8 + 18] == bytes(4)
        decoded = decode_audio(data, max_seconds=60)
        assert decoded.sample_rate == sr
        np.testing.assert_array_equal(decoded.samples, samples[:, 0])


def test_flac_of_unknown_length_is_held_to_the_limit_while_decoding():
    samples, sr = real_clip()
    code, message = _code(_unknown_length(encode(samples, sr, "FLAC")), max_seconds=2)
    assert code == "too_long"
    assert message.startswith("the recording is longer than the limit: over 2 s (stopped "
                              "decoding at 2.")


def test_ser_predict_classifies_a_piped_flac(tiny_checkpoint, tmp_path, predictor, capsys):
    samples, sr = real_clip()
    piped, whole = tmp_path / "piped.flac", tmp_path / "whole.flac"
    piped.write_bytes(encode_av(samples, sr, "flac", "flac", out=_Pipe()))
    whole.write_bytes(encode(samples, sr, "FLAC"))
    assert predict_main([str(tiny_checkpoint), str(piped)]) == 0
    assert "piped.flac:" in capsys.readouterr().out
    assert predictor.predict(piped).probabilities == predictor.predict(whole).probabilities


# --- 3. truncated MP3 and MP4 -------------------------------------------------------


@pytest.fixture(scope="module")
def mp3() -> bytes:
    samples, sr = real_clip()
    return encode_av(samples, sr, "mp3", "libmp3lame")  # LAME writes an Info frame count


def _mp3_frame_starts(data: bytes) -> list[int]:
    from ser.serving.decode import _id3_end, _mp3_frame

    pos, starts = _id3_end(data), []
    while (frame := _mp3_frame(data, pos)) is not None:
        starts.append(pos)
        pos += frame[0]
    assert pos == len(data)
    return starts


@pytest.mark.parametrize("keep", [0.5, 0.9, -100])
def test_an_mp3_cut_inside_a_frame_is_truncated(mp3, keep):
    cut = mp3[: int(len(mp3) * keep)] if keep > 0 else mp3[:keep]
    code, message = _code(cut)
    assert code == "truncated"
    assert message.startswith("the MP3 data is truncated: its last MPEG frame needs ")


def test_an_mp3_cut_between_frames_is_truncated_by_its_frame_count(mp3):
    starts = _mp3_frame_starts(mp3)
    code, message = _code(mp3[: starts[-3]])  # three whole frames missing
    assert code == "truncated"
    assert message == (f"the MP3 data is truncated: {len(starts) - 3} MPEG frames present of "
                       f"the {len(starts) - 1} its header declares")


def test_a_whole_mp3_decodes(mp3):
    samples, sr = real_clip()
    decoded = decode_audio(mp3)
    assert decoded.format == "mp3/mpeg_layer_iii"
    assert decoded.duration == pytest.approx(len(samples) / sr, abs=0.01)


@pytest.fixture(scope="module")
def m4a() -> bytes:
    samples, sr = real_clip()
    return encode_av(samples, sr, "mp4", "aac")  # moov after mdat, as ffmpeg writes it


def test_an_m4a_cut_in_half_is_truncated_not_not_audio(m4a, client):
    code, message = _code(m4a[: len(m4a) // 2])
    assert code == "truncated"
    assert message.startswith("the MP4/M4A data is truncated: its 'mdat' box declares ")
    code, message = _code(m4a[:-40])
    assert message.startswith("the MP4/M4A data is truncated: its 'moov' box declares ")
    response = _post(client, m4a[: len(m4a) // 2], **{"content-type": "audio/mp4"})
    assert response.status_code == 422 and response.json()["error"] == "truncated"
    assert decode_audio(m4a).format == "mp4/aac"


def test_a_flac_cut_between_frames_is_truncated():
    samples, sr = real_clip()
    flac = encode(samples, sr, "FLAC")
    code, message = _code(flac[: flac.rfind(b"\xff\xf8")])  # at the last frame's sync code
    assert code == "truncated"
    assert message == (f"the flac/pcm_16 data is truncated or corrupt: it ends before the "
                       f"{len(samples)} samples its header declares")


# --- 4. speech by energy ------------------------------------------------------------


def _level(db: float) -> float:
    return 10 ** (db / 20)


def _no_speech_signals(sr: int = 16000, seconds: float = 4.0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    t = np.arange(int(seconds * sr)) / sr
    return {
        "white noise at -45 dBFS": _level(-45) * rng.standard_normal(t.size),
        "digital silence": np.zeros(t.size),
        "DC offset": np.full(t.size, 0.25),
        "quiet 50 Hz hum": _level(-47) * np.sin(2 * np.pi * 50 * t),  # -50 dBFS RMS
        "hum with harmonics": _level(-40) * (np.sin(2 * np.pi * 60 * t)
                                             + 0.5 * np.sin(2 * np.pi * 180 * t)),
    }


NO_SPEECH = {
    "white noise at -45 dBFS": "no speech: the recording is a steady sound around -45 dBFS "
    "(noise, a hum or a tone) - only 0 of its 25 ms frames rise 6 dB above its floor or "
    "reach -30 dBFS, speech gives at least 8",
    "digital silence": "no speech: the recording is silent (its loudest 25 ms frame, DC "
    "offset removed, is digital silence; speech needs -70 dBFS)",
    "DC offset": "no speech: the recording is silent (its loudest 25 ms frame, DC offset "
    "removed, is digital silence; speech needs -70 dBFS)",
    "quiet 50 Hz hum": "no speech: the recording is a steady sound around -50 dBFS (noise, "
    "a hum or a tone) - only 0 of its 25 ms frames",
    "hum with harmonics": "no speech: the recording is a steady sound around -42 dBFS",
}


@pytest.mark.parametrize("case", list(NO_SPEECH))
def test_signals_without_speech_are_no_speech(case, client):
    signal = _no_speech_signals()[case].astype(np.float32)
    with pytest.raises(InputError) as err:
        check_not_silent(signal, 16000)
    assert err.value.code == "no_speech" and str(err.value).startswith(NO_SPEECH[case])
    response = _post(client, encode(signal[:, None], 16000, "WAV", "FLOAT"))
    assert response.status_code == 422, response.text
    assert response.json()["error"] == "no_speech"
    assert NO_SPEECH[case][:40] in response.json()["detail"]


def test_speech_passes_even_quiet_or_over_noise():
    samples, sr = real_clip("Actor_09/03-01-04-01-02-02-09.flac")  # the quietest RAVDESS clip
    mono = samples[:, 0]
    check_not_silent(mono, sr)
    check_not_silent(mono[int(0.6 * sr):], sr)  # what a 0.6 s-offset model hears
    loud, _ = real_clip()
    noisy = loud[:, 0] + _level(-45) * np.random.default_rng(1).standard_normal(len(loud))
    check_not_silent(noisy.astype(np.float32), sr)
    check_not_silent(mono)  # without a rate: 400-sample frames


def _corpus_files(corpus: str, every: int = 1) -> list[Path]:
    files = sorted((real_data_dir() / corpus).glob("*/*.flac"))
    if not files:
        pytest.skip(f"real {corpus} not found")
    return files[::every]


@pytest.mark.slow
def test_every_ravdess_clip_and_a_tess_sample_count_as_speech():
    """All 1440 RAVDESS clips and every 4th TESS clip, whole and after a 0.6 s offset."""
    files = _corpus_files("ravdess") + _corpus_files("tess", every=4)
    assert len(files) >= 1440 + 690
    for path in files:
        samples, sr = sf.read(path, dtype="float32", always_2d=True)
        mono = samples.mean(axis=1)
        check_not_silent(mono, sr)
        check_not_silent(mono[int(0.6 * sr):], sr)


# --- 5. non-finite and absurd samples -----------------------------------------------


@pytest.mark.parametrize(("value", "message"), [
    (1e19, "the wav/float audio holds samples of amplitude 1e+19, over the 1000 limit "
           "(full scale is 1.0), from 0.062 s"),
    (np.inf, "the wav/float audio holds non-finite samples (NaN, infinity, or beyond "
             "float32's range), from 0.062 s"),
    (np.nan, "the wav/float audio holds non-finite samples (NaN, infinity, or beyond "
             "float32's range), from 0.062 s"),
])
def test_absurd_samples_are_bad_audio(client, value, message):
    samples, sr = real_clip()
    samples = samples.copy()
    samples[[1000, 20000, 40000]] = value
    data = encode(samples, sr, "WAV", "FLOAT")
    assert _code(data) == ("bad_audio", message)
    response = _post(client, data)
    assert response.status_code == 422 and response.json()["error"] == "bad_audio"
    assert response.json()["detail"] == f"upload: {message}"


def test_loud_but_sane_float_samples_are_audio():
    samples, sr = real_clip()
    assert decode_audio(encode(samples * 500, sr, "WAV", "FLOAT")).samples.max() > 50


# --- 6. option values ---------------------------------------------------------------


@pytest.mark.parametrize(("args", "error"), [
    (["--concurrency", "0"], "argument --concurrency: must be a positive whole number, got '0'"),
    (["--concurrency", "1.5"], "argument --concurrency: must be a positive whole number, "
                               "got '1.5'"),
    (["--hop", "0"], "argument --hop: must be a positive number, got '0'"),
    (["--hop", "-1"], "argument --hop: must be a positive number, got '-1'"),
    (["--hop", "nan"], "argument --hop: must be a positive number, got 'nan'"),
    (["--max-mb", "0"], "argument --max-mb: must be a positive number, got '0'"),
    (["--max-seconds", "-5"], "argument --max-seconds: must be a positive number, got '-5'"),
    (["--max-seconds", "inf"], "argument --max-seconds: must be a positive number, got 'inf'"),
    (["--port", "0"], "argument --port: must be a port number 1-65535, got '0'"),
])
def test_bad_option_values_stop_ser_serve_with_one_line(tmp_path, capsys, args, error):
    with pytest.raises(SystemExit) as exit_:
        serve_main([str(tmp_path / "model.ckpt"), *args])
    assert exit_.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines[-1] == f"ser-serve: error: {error}"


def test_limits_refuse_non_positive_values():
    with pytest.raises(ValueError, match="Limits.concurrency must be positive, got 0"):
        Limits(concurrency=0)
    with pytest.raises(ValueError, match="Limits.max_seconds must be positive"):
        Limits(max_seconds=float("nan"))


# --- 7. Host header -----------------------------------------------------------------


@pytest.mark.parametrize("host", ["localhost", "localhost:8000", "127.0.0.1:8000",
                                  "[::1]:8000", "LOCALHOST."])
def test_loopback_names_are_served(client, host):
    assert client.get("/api/health", headers={"host": host}).status_code == 200


@pytest.mark.parametrize("host", ["evil.example", "evil.example:8000", "127.0.0.1.nip.io",
                                  "localhost.evil.example:8000", "192.168.1.5"])
def test_a_foreign_host_gets_421_before_anything_runs(client, host):
    samples, sr = real_clip()
    response = _post(client, encode(samples, sr, "WAV"), host=host)
    assert response.status_code == 421
    assert response.json() == {
        "error": "bad_host", "status": 421,
        "detail": f"this server does not answer for host {host!r}, only for "
                  "127.0.0.1, [::1], localhost"}
    assert client.get("/", headers={"host": host}).status_code == 421


def test_host_policy_follows_the_bound_address():
    wildcard = HostPolicy.serving("0.0.0.0", ["ser.lan"])
    assert wildcard.allows("192.168.1.5:8000") and wildcard.allows("ser.lan:8000")
    assert not wildcard.allows("evil.example") and not wildcard.allows(None)
    named = HostPolicy.serving("10.0.0.7")
    assert named.allows("10.0.0.7:8000") and not named.allows("localhost")
    assert HostPolicy.serving("::1").allows("[::1]:80")
    assert [host_name(h) for h in ("A.B:1", "[::1]", "x:y", "[::1]z")] == ["a.b", "[::1]",
                                                                           None, None]


# --- 10. long recordings: decoded a block at a time, read a batch of windows at a time --


def _long_recording(seconds: float, sr: int, channels: int) -> np.ndarray:
    """Real speech at `sr`, repeated to `seconds`, each channel at its own gain."""
    import soxr

    samples, native = real_clip()
    wave = soxr.resample(samples[:, 0], native, sr).astype(np.float32)
    wave = np.tile(wave, int(np.ceil(seconds * sr / len(wave))))[: int(seconds * sr)]
    return wave[:, None] * np.linspace(1.0, 0.5, channels, dtype=np.float32)[None, :]


def test_spooling_a_long_file_holds_a_block_of_it_not_the_file(tmp_path):
    """A minute of 48 kHz 6-channel PCM (34 MB of file, 11.5 MB of decoded mono): decoding
    it into the spool file allocates about a second of it at a time."""
    import tracemalloc

    from ser.serving.decode import spool_audio

    samples = _long_recording(60, 48000, 6)
    path = tmp_path / "long.wav"
    sf.write(path, samples, 48000, subtype="PCM_16")
    tracemalloc.start()
    try:
        with spool_audio(path) as audio:
            _, peak = tracemalloc.get_traced_memory()
            assert (audio.frames, audio.sample_rate, audio.channels) == (len(samples), 48000, 6)
            expected = sf.read(path, dtype="float32")[0].mean(axis=1, dtype=np.float32)
            np.testing.assert_array_equal(audio.read(0, audio.frames), expected)
            np.testing.assert_array_equal(audio.read(1_000_000, 1_000_100),
                                          expected[1_000_000:1_000_100])
    finally:
        tracemalloc.stop()
    one_second = 48000 * 6 * 4  # float32 frames of all channels
    assert peak < 4 * one_second, f"peak {peak / 1e6:.1f} MB while spooling"


def test_a_long_file_and_its_bytes_give_the_same_windows(predictor, tmp_path):
    """ser-predict reads a file from its spool, a server reads an upload from memory: the
    same windows and probabilities, to the last bit."""
    samples = _long_recording(90, 44100, 2)
    path = tmp_path / "long.flac"
    sf.write(path, samples, 44100)
    from_file = predictor.predict(path)
    from_bytes = predictor.predict(path.read_bytes(), name=str(path))
    assert len(from_file.windows) > 2 * 16  # more than two batches of windows
    assert from_file == from_bytes
    assert from_file.duration == pytest.approx(90.0)


def test_a_missing_file_is_unreadable_not_a_traceback(predictor, tmp_path):
    with pytest.raises(InputError) as err:
        predictor.predict(tmp_path / "nowhere.wav")
    assert err.value.code == "unreadable"
    assert str(err.value) == (f"{tmp_path / 'nowhere.wav'}: cannot read file "
                              "(No such file or directory)")
