"""Fuzz the upload endpoint with mutated real recordings: never a 5xx, a hang or a dead server.

Real RAVDESS clips are encoded with PyAV into every accepted container (WAV, FLAC, Ogg/Opus,
WebM/Opus, MP4/AAC, MP3), then cut, bit-flipped, given garbled or foreign headers, absurd
size fields and random bytes inside, and posted to a real uvicorn server on 127.0.0.1.
Each answer must be a 200 or a JSON 4xx within the per-request limit; /api/health must
answer at the end. Seeded, so a failure names a case that can be replayed.
"""

from __future__ import annotations

import io
import time
from collections.abc import Callable
from fractions import Fraction

import numpy as np
import pytest
import soundfile as sf

from ser.serving import Predictor
from ser.serving.app import Limits, create_app
from tests.conftest import real_data_dir
from tests.serving_helpers import LiveServer

pytestmark = [pytest.mark.slow, pytest.mark.real_data]
SEED = 20240611
CASES_PER_FORMAT = 80  # 480 requests
REQUEST_LIMIT_S = 10.0
TOTAL_LIMIT_S = 60.0
CLIPS = ("Actor_02/03-01-03-01-01-01-02.flac", "Actor_15/03-01-08-02-02-01-15.flac")
# container, codec, rate: what PyAV writes for each accepted format
FORMATS = {
    "wav": ("wav", "pcm_s16le", 16000),
    "flac": ("flac", "flac", 16000),
    "ogg-opus": ("ogg", "libopus", 48000),
    "webm-opus": ("webm", "libopus", 48000),
    "mp4-aac": ("mp4", "aac", 16000),
    "mp3": ("mp3", "libmp3lame", 16000),
}


def encode_av(mono: np.ndarray, sr: int, container: str, codec: str, rate: int) -> bytes:
    import av
    import soxr

    if rate != sr:
        mono = soxr.resample(mono, sr, rate)
    pcm = np.ascontiguousarray(mono[None].astype(np.float32))
    buffer = io.BytesIO()
    with av.open(buffer, "w", format=container) as muxer:
        stream = muxer.add_stream(codec, rate=rate, layout="mono")
        frame = av.AudioFrame.from_ndarray(pcm, format="fltp", layout="mono")
        frame.sample_rate, frame.pts, frame.time_base = rate, 0, Fraction(1, rate)
        for packet in [*stream.encode(frame), *stream.encode(None)]:
            muxer.mux(packet)
    return buffer.getvalue()


def real_files() -> dict[str, list[bytes]]:
    """Each format: the real clips encoded by PyAV."""
    files: dict[str, list[bytes]] = {name: [] for name in FORMATS}
    for clip in CLIPS:
        path = real_data_dir() / "ravdess" / clip
        if not path.is_file():
            pytest.skip(f"real RAVDESS not found at {path}")
        mono, sr = sf.read(path, dtype="float32")
        for name, spec in FORMATS.items():
            files[name].append(encode_av(mono, sr, *spec))
    return files


# --- mutations: each (data, rng, other formats' headers) -> new bytes --------------------

Mutation = Callable[[bytearray, np.random.Generator, list[bytes]], bytearray]


def _span(data: bytearray, rng: np.random.Generator, most: int) -> tuple[int, int]:
    start = int(rng.integers(len(data)))
    return start, start + int(rng.integers(1, most + 1))


def _truncate(data, rng, heads):
    return data[: int(rng.integers(1, len(data)))]


def _bit_flips(data, rng, heads):
    for _ in range(int(rng.integers(1, 33))):
        data[int(rng.integers(len(data)))] ^= 1 << int(rng.integers(8))
    return data


def _garbled_header(data, rng, heads):
    start, end = _span(data[:64], rng, 16)
    data[start:end] = rng.bytes(end - start)
    return data


def _foreign_header(data, rng, heads):
    head = heads[int(rng.integers(len(heads)))]
    data[: len(head)] = head
    return data


def _absurd_size(data, rng, heads):
    """A 32-bit field in the header (sizes, counts, rates) set to 0, 1 or all ones."""
    at = int(rng.integers(0, max(1, min(len(data), 256) - 4)))
    data[at : at + 4] = (b"\xff\xff\xff\xff", b"\x00\x00\x00\x00", b"\x00\x00\x00\x01",
                         b"\x7f\xff\xff\xff")[int(rng.integers(4))]
    return data


def _random_inside(data, rng, heads):
    start, end = _span(data, rng, 4096)
    data[start:end] = rng.bytes(end - start)
    return data


def _inserted(data, rng, heads):
    at = int(rng.integers(len(data)))
    data[at:at] = rng.bytes(int(rng.integers(1, 2048)))
    return data


def _zeroed(data, rng, heads):
    start, end = _span(data, rng, 8192)
    data[start:end] = bytes(len(data[start:end]))
    return data


def _doubled(data, rng, heads):
    """Two files in one body (a container after its own end)."""
    return data + data[: int(rng.integers(1, len(data)))]


MUTATIONS: dict[str, Mutation] = {
    "truncate": _truncate, "bit flips": _bit_flips, "garbled header": _garbled_header,
    "foreign header": _foreign_header, "absurd size field": _absurd_size,
    "random bytes inside": _random_inside, "inserted bytes": _inserted, "zeroed span": _zeroed,
    "doubled": _doubled,
}


def cases(files: dict[str, list[bytes]], seed: int = SEED):
    """(description, body): CASES_PER_FORMAT seeded mutations of each format's files."""
    rng = np.random.default_rng(seed)
    heads = [f[0][:16] for f in files.values()]
    names = list(MUTATIONS)
    for fmt, originals in files.items():
        for i in range(CASES_PER_FORMAT):
            clip = int(rng.integers(len(originals)))
            name = names[i % len(names)] if i < 2 * len(names) else names[rng.integers(len(names))]
            body = MUTATIONS[name](bytearray(originals[clip]), rng, heads)
            if rng.random() < 0.2:  # a second mutation on top of the first
                body = MUTATIONS[names[rng.integers(len(names))]](body, rng, heads)
            yield f"{fmt} clip {clip} case {i}: {name}", bytes(body) or b"\0"


# --- the test ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def server(tiny_checkpoint):
    app = create_app(Predictor.load(tiny_checkpoint), Limits(max_bytes=2_000_000,
                                                             max_seconds=20.0))
    with LiveServer(app) as live:
        yield live


def _problem(response) -> str | None:
    """None for a 200 or a JSON 4xx of the documented shape, else what is wrong."""
    if response.status_code == 200:
        return None if "top" in response.json() else "200 without a prediction"
    if not 400 <= response.status_code < 500:
        return f"status {response.status_code}: {response.text[:200]}"
    error = response.json()
    if set(error) != {"error", "detail", "status"} or error["status"] != response.status_code:
        return f"malformed error {error}"
    return None


def test_mutated_real_files_get_200_or_a_json_4xx(server):
    import httpx

    files = real_files()
    problems, counts, start = [], {}, time.monotonic()
    with httpx.Client(base_url=server.url, timeout=REQUEST_LIMIT_S) as client:
        for clean in (f[0] for f in files.values()):  # the originals are answered
            assert client.post("/api/predict", content=clean).status_code == 200
        for n, (label, body) in enumerate(cases(files)):
            if time.monotonic() - start > TOTAL_LIMIT_S:
                pytest.fail(f"fuzzing took over {TOTAL_LIMIT_S} s after {n} requests")
            sent = time.monotonic()
            try:
                response = client.post("/api/predict", content=body,
                                       headers={"content-type": "application/octet-stream"})
            except httpx.HTTPError as err:  # a timeout (a hang) or a dropped connection
                problems.append(f"{label}: {type(err).__name__} after "
                                f"{time.monotonic() - sent:.1f} s")
                continue
            if problem := _problem(response):
                problems.append(f"{label}: {problem}")
            key = "problem" if problem else response.json().get("error", "ok")
            counts[key] = counts.get(key, 0) + 1
        assert client.get("/api/health").json() == {"status": "ok"}
    print(f"\n{sum(counts.values())} mutated uploads in {time.monotonic() - start:.1f} s: "
          f"{dict(sorted(counts.items()))}")
    assert not problems, "\n".join(problems)
    assert server.thread.is_alive()
