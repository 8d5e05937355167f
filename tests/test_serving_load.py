"""A bounded load test on loopback: 200 requests, 8 at a time, no errors, p50/p95 printed."""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from ser.serving import Predictor
from ser.serving.app import create_app
from tests.serving_helpers import LiveServer, encode, encode_ffmpeg, tone

N_REQUESTS, CONCURRENCY = 200, 8


def _post(url: str, body: bytes, content_type: str) -> tuple[int, float]:
    request = urllib.request.Request(url, data=body, method="POST",
                                     headers={"Content-Type": content_type})
    start = time.perf_counter()
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            response.read()
            status = response.status
    except urllib.error.HTTPError as err:
        status = err.code
    return status, time.perf_counter() - start


@pytest.mark.slow
def test_load_on_loopback(tiny_checkpoint):
    bodies = [  # a browser recording and an uploaded file, 3.5 s each
        (encode_ffmpeg(tone(3.5, 48000), 48000), "audio/webm;codecs=opus"),
        (encode(tone(3.5, 44100, channels=2), 44100, "WAV"), "audio/wav"),
    ]
    with LiveServer(create_app(Predictor.load(tiny_checkpoint))) as server:
        url = server.url + "/api/predict"
        start = time.perf_counter()
        with ThreadPoolExecutor(CONCURRENCY) as pool:
            results = list(pool.map(lambda i: _post(url, *bodies[i % 2]), range(N_REQUESTS)))
        wall = time.perf_counter() - start
    statuses = [status for status, _ in results]
    latency_ms = 1e3 * np.array([seconds for _, seconds in results])
    p50, p95 = np.percentile(latency_ms, [50, 95])
    print(f"\nload: {N_REQUESTS} requests, {CONCURRENCY} concurrent, {wall:.1f} s "
          f"({N_REQUESTS / wall:.1f} req/s): p50 {p50:.0f} ms, p95 {p95:.0f} ms, "
          f"max {latency_ms.max():.0f} ms")
    assert statuses == [200] * N_REQUESTS
    assert p95 < 10_000  # bounded: a stall, not speed, is what this guards against
