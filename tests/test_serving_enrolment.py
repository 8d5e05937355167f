"""Enrolment in the web API: each browser session's own speaker statistics, in memory.

A small speaker-normalised utterance-statistics model is trained on generated tones
(experiment=stats_ravdess_speaker_norm, fold 1, a few epochs); actors 2 and 3 (test
speakers) play two visitors. Every answer must equal a `Predictor` with that visitor's
clips enrolled, and the shared predictor must never change.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from fastapi.testclient import TestClient

from ser.serving import Predictor
from ser.serving.app import SESSION_COOKIE, Enrolment, Enrolments, Limits, create_app
from tests.serving_helpers import (
    LiveServer,
    actor_clips,
    encode,
    speaker_norm_checkpoint,
    tone,
    tone_corpus,
)

pytestmark = pytest.mark.slow
BASE = "http://127.0.0.1:8000"
WAV = {"Content-Type": "audio/wav"}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    return tone_corpus(tmp_path_factory.getbasetemp())


@pytest.fixture(scope="module")
def norm_checkpoint(tmp_path_factory) -> Path:
    return speaker_norm_checkpoint(tmp_path_factory.getbasetemp())


def expected(checkpoint: Path, enrolled: list[Path], probe: Path) -> dict[str, float]:
    """What a Predictor with exactly these clips enrolled answers."""
    predictor = Predictor.load(checkpoint)
    if enrolled:
        predictor.enrol(enrolled)
    return predictor.predict(probe).probabilities


def test_two_sessions_each_get_their_own_enrolment(norm_checkpoint, corpus):
    import httpx

    shared = Predictor.load(norm_checkpoint)
    a_clips, b_clips = actor_clips(corpus, 2, (1, 3, 5)), actor_clips(corpus, 3, (2, 4, 6, 8))
    probe_a, probe_b = actor_clips(corpus, 2, (7,))[0], actor_clips(corpus, 3, (7,))[0]
    want = {"a": expected(norm_checkpoint, a_clips, probe_a),
            "b": expected(norm_checkpoint, b_clips, probe_b),
            "none": expected(norm_checkpoint, [], probe_a)}
    assert want["a"] != want["none"]  # enrolment changes the answer: the test can tell
    with LiveServer(create_app(shared)) as server, httpx.Client(base_url=server.url) as a, \
            httpx.Client(base_url=server.url) as b, httpx.Client(base_url=server.url) as anon:

        def enrol(client, path):
            return client.post("/api/enrol", content=path.read_bytes(), headers=WAV)

        def predict(client, path):
            response = client.post("/api/predict", content=path.read_bytes(), headers=WAV)
            assert response.status_code == 200, response.text
            return response.json()

        # interleaved: A's first clip, B predicts, A's second, B's clips, A's third
        assert enrol(a, a_clips[0]).json() == {"mode": "training_statistics",
                                               "enrolled_clips": 0, "clips": 1}
        assert predict(b, probe_b)["mode"] == "training_statistics"
        assert enrol(a, a_clips[1]).json()["mode"] == "enrolled"
        for path in b_clips:
            state = enrol(b, path).json()
        assert state == {"mode": "enrolled", "enrolled_clips": 4, "clips": 4}
        assert enrol(a, a_clips[2]).json()["enrolled_clips"] == 3
        assert a.cookies[SESSION_COOKIE] != b.cookies[SESSION_COOKIE]

        # at the same time: 12 requests, 4 at once, from both visitors and one without
        jobs = [("a", a, probe_a), ("b", b, probe_b), ("none", anon, probe_a)] * 4
        with ThreadPoolExecutor(4) as pool:
            answers = list(pool.map(lambda job: (job[0], predict(job[1], job[2])), jobs))
    modes = {"a": ("enrolled", 3), "b": ("enrolled", 4), "none": ("training_statistics", 0)}
    for who, answer in answers:
        assert (answer["mode"], answer["enrolled_clips"]) == modes[who]
        np.testing.assert_allclose(list(answer["probabilities"].values()),
                                   list(want[who].values()), atol=1e-6, err_msg=who)
    # the shared predictor was never changed
    assert shared.enrolment is None and "enrolment" not in shared.info


@pytest.fixture(scope="module")
def app(norm_checkpoint):
    return create_app(Predictor.load(norm_checkpoint), Limits(enrol_clips=3))


def post(client: TestClient, data: bytes, url: str = "/api/enrol"):
    return client.post(url, content=data, headers=WAV)


def test_duplicate_degenerate_and_non_speech_clips_are_refused(app, corpus):
    client = TestClient(app, base_url=BASE)
    first, second = actor_clips(corpus, 4, (1, 2))
    audio, sr = sf.read(first, dtype="float32")
    sessions = len(app.state.enrolments)
    response = post(client, b"not audio")  # a refused first clip keeps no session
    assert response.status_code == 415 and "set-cookie" not in response.headers
    assert len(app.state.enrolments) == sessions
    assert post(client, first.read_bytes()).json()["clips"] == 1
    response = post(client, encode(audio, sr, "FLAC"))  # the same samples in another format
    assert response.status_code == 422 and response.json()["error"] == "duplicate_clip"
    nudged = audio.copy()
    nudged[1000] += 1e-3  # other samples, hardly another recording
    response = post(client, encode(nudged, sr, "WAV", "FLOAT"))
    assert response.status_code == 422 and response.json()["error"] == "degenerate_enrolment"
    for data, code in ((encode(np.zeros(3 * sr, np.float32), sr, "WAV"), "no_speech"),
                       (encode(tone(0.3), sr, "WAV"), "too_short"),
                       (b"not audio", "unsupported_format")):
        response = post(client, data)
        assert response.json()["error"] == code, response.text
    assert client.get("/api/enrol").json() == {"mode": "training_statistics",
                                               "enrolled_clips": 0, "clips": 1}
    assert post(client, second.read_bytes()).json() == {"mode": "enrolled", "enrolled_clips": 2,
                                                        "clips": 2}


def test_forgetting_and_the_clip_limit(app, corpus):
    client = TestClient(app, base_url=BASE)
    paths = actor_clips(corpus, 5, (1, 2, 3, 4))
    for path in paths[:3]:
        assert post(client, path.read_bytes()).status_code == 200
    response = post(client, paths[3].read_bytes())
    assert response.status_code == 409 and response.json()["error"] == "enrolment_full"
    assert post(client, paths[0].read_bytes(), "/api/predict").json()["mode"] == "enrolled"
    response = client.delete("/api/enrol")
    assert response.json() == {"mode": "training_statistics", "enrolled_clips": 0, "clips": 0}
    assert SESSION_COOKIE not in client.cookies  # expired by the answer
    assert post(client, paths[0].read_bytes(), "/api/predict").json()["mode"] == \
        "training_statistics"


def test_the_session_cookie_is_fresh_httponly_and_strict(app, corpus):
    client = TestClient(app, base_url=BASE)
    client.cookies.set(SESSION_COOKIE, "chosen-by-the-client")
    response = post(client, actor_clips(corpus, 6, (1,))[0].read_bytes())
    cookie = response.headers["set-cookie"]
    sid = cookie.split(";")[0].split("=", 1)[1]
    assert sid != "chosen-by-the-client" and len(sid) >= 43  # 32 random bytes
    attributes = {part.strip().lower() for part in cookie.split(";")[1:]}
    assert {"httponly", "samesite=strict", "path=/"} <= attributes


def test_sessions_are_bounded_least_recently_used_first_and_expire():
    now = [0.0]
    store = Enrolments(size=2, ttl=60, clock=lambda: now[0])
    first, second = store.add(Enrolment()), store.add(Enrolment())
    now[0] = 10
    assert store.get(first) is not None  # first is now the more recently used
    third = store.add(Enrolment())  # evicts second
    assert store.get(second) is None and store.get(first) and store.get(third)
    assert len({first, second, third}) == 3
    now[0] = 75  # first and third were last used at 10
    assert store.get(first) is None and len(store) == 0


def test_a_model_without_speaker_normalisation_hides_and_refuses_enrolment(tiny_checkpoint):
    client = TestClient(create_app(Predictor.load(tiny_checkpoint)), base_url=BASE)
    assert client.get("/api/model").json()["enrolment"]["available"] is False
    data = encode(tone(), 16000, "WAV")
    for method in ("GET", "POST", "DELETE"):
        response = client.request(method, "/api/enrol", content=data, headers=WAV)
        assert response.status_code == 409, method
        assert response.json()["error"] == "enrolment_not_used"
        assert "set-cookie" not in response.headers
    answer = post(client, data, "/api/predict").json()
    assert (answer["mode"], answer["enrolled_clips"]) == ("none", 0)


def test_with_enrolment_is_a_copy(norm_checkpoint, corpus):
    predictor = Predictor.load(norm_checkpoint)
    paths = actor_clips(corpus, 2, (1, 2, 3))
    decoded = [(str(p), *sf.read(p, dtype="float32"))
               for p in paths]
    stats = predictor.enrolment_statistics(decoded)
    copy = predictor.with_enrolment(stats, 3)
    assert copy.enrolment is stats and copy.info["enrolment"] == "3 clips"
    assert predictor.enrolment is None and "enrolment" not in predictor.info
    assert copy.classify is predictor.classify and copy.pipeline is predictor.pipeline
    assert copy.predict(paths[0]).probabilities == expected(norm_checkpoint, paths, paths[0])
