"""The page in a real browser: headless Chromium, a fake microphone playing a RAVDESS clip,
and a long recording of several clips uploaded for the emotion timeline.

Chromium and chromedriver come from Debian (`apt-get install chromium chromium-driver`,
which `.ci/run` does); without them the test skips and says so. The browser is driven
over chromedriver's W3C WebDriver HTTP API on loopback. `SER_SCREENSHOT=path.png` and
`SER_TIMELINE_SCREENSHOT=path.png` also save the screenshots there (the README's pictures).
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from ser.serving import Prediction, Predictor
from ser.serving.app import create_app
from ser.serving.segments import predict_segments
from tests.serving_helpers import (
    LiveServer,
    actor_clips,
    free_port,
    long_recording,
    speaker_norm_checkpoint,
    timeline_clips,
    tone_corpus,
)

pytestmark = [pytest.mark.slow, pytest.mark.real_data]
ELEMENT = "element-6066-11e4-a52e-4f735466cecf"  # the W3C key of an element reference


def _browser() -> tuple[str, str]:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if not chromium or not driver:
        pytest.skip("chromium and chromedriver not installed "
                    "(apt-get install chromium chromium-driver)")
    return chromium, driver


class WebDriver:
    """Just the WebDriver commands this test needs."""

    def __init__(self, driver: str, chromium: str, args: list[str]) -> None:
        port = free_port()
        # `nice`: the test machine's cores are shared; the browser needn't be first
        self.proc = subprocess.Popen(["nice", "-n", "19", driver, f"--port={port}"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.base = f"http://127.0.0.1:{port}"
        self._wait_ready()
        caps = {"browserName": "chrome", "goog:chromeOptions": {"binary": chromium, "args": args}}
        self.session = self._call("POST", "/session", {"capabilities": {"alwaysMatch": caps}})[
            "sessionId"]

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if self._call("GET", "/status")["ready"]:
                    return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError("chromedriver did not start")

    def _call(self, method: str, path: str, body: dict | None = None):
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.base + path, data=data, method=method,
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=120) as response:
            return json.loads(response.read())["value"]

    def cmd(self, method: str, path: str, body: dict | None = None):
        return self._call(method, f"/session/{self.session}{path}", body)

    def get(self, url: str) -> None:
        self.cmd("POST", "/url", {"url": url})

    def find(self, css: str) -> str:
        return self.cmd("POST", "/element", {"using": "css selector", "value": css})[ELEMENT]

    def click(self, css: str) -> None:
        self.cmd("POST", f"/element/{self.find(css)}/click", {})

    def upload(self, css: str, path: Path) -> None:
        """Choose a file in an <input type=file>, as a person picking it would."""
        self.cmd("POST", f"/element/{self.find(css)}/value", {"text": str(path)})

    def js(self, script: str):
        return self.cmd("POST", "/execute/sync", {"script": script, "args": []})

    def wait_for(self, script: str, timeout: float = 60.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = self.js(script)
            if value:
                return value
            time.sleep(0.1)
        raise TimeoutError(f"timed out waiting for: {script}")

    def screenshot(self, path: Path) -> None:
        path.write_bytes(base64.b64decode(self.cmd("GET", "/screenshot")))

    def quit(self) -> None:
        try:
            self.cmd("DELETE", "")
        finally:
            self.proc.terminate()
            self.proc.wait(timeout=10)


def _chromium_args(tmp_path: Path, *extra: str) -> list[str]:
    return ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            f"--user-data-dir={tmp_path / 'profile'}", *extra]


SHIFTS = (-0.1, 0.0, 0.1, 0.2, 0.3)  # s the recording may start before/after the clip does


def _robust_clip(predictor: Predictor, clips: list[Path]) -> tuple[Path, Prediction]:
    """The clip whose answer least depends on when the recording starts.

    The seed's features stack frames by position, so a recording that starts 0.1 s late
    shifts every frame; the microphone's start is not the file's start, and the
    comparison must not hinge on that. Among clips with the same top emotion at every
    shift, the one with the largest worst-case margin; its unshifted prediction is the one
    the page must show.
    """
    def margin(pred: Prediction, top: str) -> float:
        others = [p for c, p in pred.probabilities.items() if c != top]
        return pred.probabilities[top] - max(others)

    scored = []
    for clip in clips:
        audio, sr = sf.read(clip, dtype="float32")
        expected = predictor.predict(clip)
        shifted = [predictor.predict_waveform(_shift(audio, sr, s), sr) for s in SHIFTS]
        scored.append((min(margin(p, expected.top) for p in shifted), clip, expected))
    worst_margin, clip, expected = max(scored, key=lambda item: item[0])
    assert worst_margin > 0, "no candidate clip keeps its answer when shifted"
    return clip, expected


def _shift(audio: np.ndarray, sr: int, seconds: float) -> np.ndarray:
    """Positive: the recording starts late (the clip's start is missing); negative: early."""
    n = int(abs(seconds) * sr)
    return audio[n:] if seconds > 0 else np.concatenate([np.zeros(n, audio.dtype), audio])


def test_record_with_a_fake_microphone_shows_the_models_prediction(
    tmp_path, real_ravdess, real_checkpoint
):
    chromium, driver = _browser()
    predictor = Predictor.load(real_checkpoint)
    # strong-intensity clips of the model's test actors: speakers it never heard
    meta = torch.load(real_checkpoint, map_location="cpu", weights_only=True)["ser_meta"]
    actors = [s.split(":")[1] for s in meta["training"]["test_speakers"]]
    clips = sorted(c for a in actors
                   for c in real_ravdess.glob(f"Actor_{a}/03-01-0[2-8]-02-0[12]-01-*.flac"))
    clip, expected = _robust_clip(predictor, clips)
    audio, sr = sf.read(clip, dtype="float32")
    wav = tmp_path / "mic.wav"  # Chromium's fake capture reads 16-bit PCM WAV
    sf.write(wav, audio, sr, subtype="PCM_16")

    args = _chromium_args(tmp_path, "--window-size=900,900", "--use-fake-ui-for-media-stream",
                          "--use-fake-device-for-media-stream",
                          f"--use-file-for-fake-audio-capture={wav}")
    with LiveServer(create_app(predictor)) as server:
        browser = WebDriver(driver, chromium, args)
        try:
            browser.get(server.url + "/")
            browser.wait_for("return document.body.dataset.state === 'idle' && "
                             "!document.getElementById('record').disabled")
            assert predictor.name in browser.js("return document.getElementById('model')"
                                                ".textContent")
            browser.click("#record")
            browser.wait_for("return document.body.dataset.state === 'recording'")
            time.sleep(len(audio) / sr)  # the whole clip, once
            browser.click("#record")
            state = browser.wait_for("const s = document.body.dataset.state;"
                                     "return (s === 'done' || s === 'error') && s", timeout=60)
            shown = browser.js(
                "const bars = [...document.querySelectorAll('.bar-track')];"
                "return {state: document.body.dataset.state,"
                " error: document.getElementById('error').textContent,"
                " top: document.getElementById('top').textContent,"
                " model: document.getElementById('answered-by').textContent,"
                " bars: bars.map(b => [b.dataset.emotion,"
                "   parseFloat(b.firstChild.style.width) / 100]),"
                " answer: window.lastAnswer};")
            shot = tmp_path / "serve-page.png"
            browser.screenshot(shot)
        finally:
            browser.quit()
    if os.environ.get("SER_SCREENSHOT"):
        shutil.copyfile(shot, os.environ["SER_SCREENSHOT"])
    answer = shown["answer"] or {}
    print(f"screenshot: {shot}; clip {clip.name}: expected {expected.top} "
          f"({expected.confidence:.2f}), page {shown['top']}; recorded "
          f"{answer.get('duration', 0):.2f} s: {answer.get('probabilities')}")
    assert state == "done", shown["error"]
    assert answer["audio_format"].endswith("/opus")  # it really came through MediaRecorder
    assert answer["duration"] == pytest.approx(len(audio) / sr, abs=1.0)
    # the page shows the server's answer: top emotion, every bar, the model
    assert shown["top"] == answer["top"] and shown["model"] == predictor.name
    bars = dict(shown["bars"])
    assert list(bars) == predictor.class_names
    shown_p = [bars[c] for c in predictor.class_names]  # (WebDriver's JSON sorts keys)
    answer_p = [answer["probabilities"][c] for c in predictor.class_names]
    np.testing.assert_allclose(shown_p, answer_p, atol=1e-3)
    # and that answer is the model's prediction for the clip
    assert answer["top"] == expected.top
    want = [expected.probabilities[c] for c in predictor.class_names]
    assert np.abs(np.subtract(answer_p, want)).max() < 0.2
    assert shot.stat().st_size > 10_000


def test_a_long_upload_shows_the_emotion_timeline(tmp_path, real_ravdess, real_checkpoint):
    chromium, driver = _browser()
    predictor = Predictor.load(real_checkpoint)
    clips, _ = timeline_clips(real_checkpoint, real_ravdess)
    mono, _ = long_recording([c[0] for c in clips])
    upload = tmp_path / "long-recording.flac"
    sf.write(upload, mono, 16000)
    expected = predict_segments(predictor, mono, 16000)

    with LiveServer(create_app(predictor)) as server:
        browser = WebDriver(driver, chromium, _chromium_args(tmp_path, "--window-size=900,1250"))
        try:
            browser.get(server.url + "/")
            browser.wait_for("return document.body.dataset.state === 'idle' && "
                             "!document.getElementById('record').disabled")
            enrol_hidden = browser.js("return document.getElementById('enrol').hidden")
            browser.click("#analysis-segments")
            browser.upload("#file", upload)
            state = browser.wait_for("const s = document.body.dataset.state;"
                                     "return (s === 'done' || s === 'error') && s", timeout=120)
            shown = browser.js(
                "return {error: document.getElementById('error').textContent,"
                " bars: [...document.querySelectorAll('#timeline rect.segment')].map(r =>"
                "   [parseFloat(r.dataset.start), parseFloat(r.dataset.end), r.dataset.emotion]),"
                " rows: document.querySelectorAll('#segments tbody tr').length,"
                " boxHidden: document.getElementById('timeline-box').hidden,"
                " answer: window.lastAnswer};")
            browser.js("document.getElementById('timeline-box').scrollIntoView({block: 'end'})")
            shot = tmp_path / "serve-timeline.png"
            browser.screenshot(shot)
        finally:
            browser.quit()
    if os.environ.get("SER_TIMELINE_SCREENSHOT"):
        shutil.copyfile(shot, os.environ["SER_TIMELINE_SCREENSHOT"])
    print(f"screenshot: {shot}; {len(clips)} clips; timeline "
          f"{[(round(a, 2), round(b, 2), e) for a, b, e in shown['bars']]}")
    assert state == "done", shown["error"]
    assert enrol_hidden  # the CNN is not speaker-normalised: no enrolment on its page
    answer = shown["answer"]
    assert answer["mode"] == "none" and not shown["boxHidden"]
    # the page draws the server's segments, and they are the model's timeline of the file
    want = [(s.start, s.end, s.top) for s in expected.segments]
    assert len(shown["bars"]) == len(want) == len(clips) == shown["rows"]
    for (start, end, top), (w_start, w_end, w_top) in zip(shown["bars"], want, strict=True):
        assert top == w_top and abs(start - w_start) < 1e-3 and abs(end - w_end) < 1e-3
    for got, s in zip(answer["segments"], expected.segments, strict=True):
        assert got["probabilities"] == s.probabilities
    assert shot.stat().st_size > 10_000


def test_enrolling_in_the_page_changes_which_statistics_answer(tmp_path, tmp_path_factory):
    """A speaker-normalised model (generated tones): upload three clips of one "voice" to
    enrol, predict a fourth, forget the clips, predict it again."""
    chromium, driver = _browser()
    base = tmp_path_factory.getbasetemp()
    checkpoint, corpus = speaker_norm_checkpoint(base), tone_corpus(base)
    enrol, probe = actor_clips(corpus, 2, (1, 3, 5)), actor_clips(corpus, 2, (7,))[0]
    enrolled = Predictor.load(checkpoint)
    enrolled.enrol(enrol)
    want = {"enrolled": enrolled.predict(probe).probabilities,
            "training_statistics": Predictor.load(checkpoint).predict(probe).probabilities}
    read = ("return {mode: document.getElementById('mode').textContent,"
            " answer: window.lastAnswer, error: document.getElementById('error').textContent,"
            " enrol: document.getElementById('enrol-status').textContent};")
    shown = {}
    with LiveServer(create_app(Predictor.load(checkpoint))) as server:
        browser = WebDriver(driver, chromium, _chromium_args(tmp_path, "--window-size=900,1100"))
        try:
            browser.get(server.url + "/")
            browser.wait_for("return !document.getElementById('enrol').hidden")
            browser.upload("#enrol-file", "\n".join(map(str, enrol)))  # three files at once
            browser.wait_for("return document.getElementById('enrol').dataset.clips === '3'")
            for mode in ("enrolled", "training_statistics"):
                browser.upload("#file", probe)
                browser.wait_for(f"return window.lastAnswer && window.lastAnswer.mode === "
                                 f"'{mode}' && document.body.dataset.state === 'done'")
                shown[mode] = browser.js(read)
                if mode == "enrolled":
                    browser.screenshot(tmp_path / "enrolled.png")
                    browser.click("#enrol-clear")
                    browser.wait_for("return document.getElementById('enrol').dataset.clips "
                                     "=== '0'")
        finally:
            browser.quit()
    assert "enrolled, 3 clips" in shown["enrolled"]["mode"]
    assert "3 clips enrolled" in shown["enrolled"]["enrol"]
    assert "training statistics" in shown["training_statistics"]["mode"]
    assert "0 clips" in shown["training_statistics"]["enrol"]
    for mode, page in shown.items():
        assert page["answer"]["probabilities"] == want[mode], mode
    assert want["enrolled"] != want["training_statistics"]
