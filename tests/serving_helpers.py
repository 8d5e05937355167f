"""Shared pieces of the serving tests: encoders, a live server, long recordings and a
speaker-normalised model.

Holds no tests; the serving test modules import its helpers (the other models they serve
are conftest.py fixtures).
"""

from __future__ import annotations

import io
import socket
import threading
import time
from fractions import Fraction
from pathlib import Path

import numpy as np
import soundfile as sf


def tone(seconds: float = 3.5, sr: int = 16000, freq: float = 450.0, channels: int = 1,
         seed: int = 0) -> np.ndarray:
    """The generated corpus's kind of signal, (frames, channels) float32."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    wave = 0.3 * np.sin(2 * np.pi * freq * t) + 0.02 * rng.standard_normal(t.size)
    return np.repeat(wave[:, None], channels, axis=1).astype(np.float32)


def encode(samples: np.ndarray, sr: int, fmt: str, subtype: str | None = None) -> bytes:
    """wav / flac / ogg (subtype OPUS or VORBIS) bytes through libsndfile."""
    buffer = io.BytesIO()
    sf.write(buffer, samples, sr, format=fmt, subtype=subtype)
    return buffer.getvalue()


def encode_ffmpeg(samples: np.ndarray, sr: int, container: str = "webm", codec: str = "libopus",
                  live: bool = True) -> bytes:
    """webm/opus (as MediaRecorder writes it: `live`, no declared duration) or mp4/aac."""
    import av

    channels = samples.shape[1]
    layout = {1: "mono", 2: "stereo", 6: "5.1"}[channels]
    rate = 48000 if codec == "libopus" else sr
    if rate != sr:
        import soxr

        samples = soxr.resample(samples, sr, rate).astype(np.float32)
    buffer = io.BytesIO()
    options = {"live": "1"} if live and container == "webm" else {}
    with av.open(buffer, "w", format=container, options=options) as out:
        stream = out.add_stream(codec, rate=rate, layout=layout)
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(samples.T), format="fltp",
                                           layout=layout)
        frame.sample_rate = rate
        frame.pts, frame.time_base = 0, Fraction(1, rate)  # lets mp4 record the priming
        for packet in stream.encode(frame):
            out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return buffer.getvalue()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LiveServer:
    """uvicorn in a thread on 127.0.0.1, stopped on exit."""

    def __init__(self, app) -> None:
        import uvicorn

        self.port = free_port()
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> LiveServer:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.05)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


def long_recording(clips: list, gap: float = 1.0, sr: int = 16000
                   ) -> tuple[np.ndarray, list[int]]:
    """Clips (16 kHz mono files) joined with `gap` s of digital silence after each; the
    samples and each clip's first sample in them."""
    parts, starts, pos = [], [], 0
    for clip in clips:
        audio, rate = sf.read(clip, dtype="float32")
        assert rate == sr and audio.ndim == 1, clip
        starts.append(pos)
        parts += [audio, np.zeros(int(gap * sr), np.float32)]
        pos += len(audio) + int(gap * sr)
    return np.concatenate(parts), starts


def held_out_clips(checkpoint, ravdess, pattern: str = "03-01-0[2-8]-02-01-01-*.flac",
                   ) -> list:
    """Clips of the checkpoint's test actors (speakers it never heard), actor by actor."""
    import torch

    meta = torch.load(checkpoint, map_location="cpu", weights_only=True)["ser_meta"]
    actors = [s.split(":")[1] for s in meta["training"]["test_speakers"]]
    return [c for a in actors for c in sorted(ravdess.glob(f"Actor_{a}/{pattern}"))]


def energy_span(audio: np.ndarray, sr: int = 16000) -> tuple[int, int]:
    """First and last sample of the clip's 25 ms frames within 30 dB of its loudest."""
    from ser.serving.decode import frame_levels

    levels = frame_levels(audio, sr)  # whole 25 ms frames, end to end
    active = np.flatnonzero(levels > levels.max() - 30)
    frame = round(0.025 * sr)
    return int(active[0]) * frame, (int(active[-1]) + 1) * frame


def speech_clips(paths: list, sr: int = 16000) -> tuple[list, list]:
    """(path, samples, speech region) of the clips whose speech is unambiguous, and the
    others with both measures: one region by the voice-activity detector, whose start an
    energy threshold puts within 0.1 s and its end within 0.2 s (the detector's end takes
    in the decaying tail). A shouted first syllable the detector half-hears in a clip alone
    (probability 0.48, but taken in within a longer recording) leaves the start ambiguous."""
    from ser.serving.segments import speech_regions

    kept, refused = [], []
    for path in paths:
        audio, _ = sf.read(path, dtype="float32")
        regions, energy = speech_regions(audio, sr), energy_span(audio, sr)
        if len(regions) == 1 and abs(regions[0][0] - energy[0]) <= 0.1 * sr \
                and abs(regions[0][1] - energy[1]) <= 0.2 * sr:
            kept.append((path, audio, regions[0]))
        else:
            refused.append((path.name, np.divide(regions, sr).round(2).tolist(),
                            np.divide(energy, sr).round(2).tolist()))
    return kept, refused


# --- a speaker-normalised model, for the enrolment tests ------------------------------


def tone_corpus(base: Path) -> Path:
    """<base>/enrol-data: 24 actors x 8 emotions of generated tones, made once."""
    from tests.conftest import make_ravdess_tree

    data = base / "enrol-data"
    if not (data / "ravdess").is_dir():
        make_ravdess_tree(data / "ravdess")
    return data


def speaker_norm_checkpoint(base: Path) -> Path:
    """experiment=stats_ravdess_speaker_norm on `tone_corpus(base)` (fold 1, 3 epochs, 2
    versions), trained once under <base>/enrol-model however many modules ask."""
    from omegaconf import open_dict

    from ser.training.train import train
    from tests.conftest import train_cfg

    out = base / "enrol-model"
    ckpt = out / "checkpoints" / "best.ckpt"
    if not ckpt.is_file():
        cfg = train_cfg(out, tone_corpus(base), "experiment=stats_ravdess_speaker_norm",
                        "logger=none", "trainer.max_epochs=3", "test=false",
                        "augment.versions=[original,speed0.9]",
                        "augment.test_versions=[original,speed1.1]")
        with open_dict(cfg):
            cfg.paths.output_dir = str(out)
        train(cfg)
    return ckpt


def actor_clips(corpus: Path, actor: int, emotions) -> list[Path]:
    """The generated corpus's clips of one actor (statement 1)."""
    from tests.conftest import ravdess_name

    return [corpus / "ravdess" / f"Actor_{actor:02d}" / f"{ravdess_name(e, 1, 1, 1, actor)}.wav"
            for e in emotions]


def timeline_clips(checkpoint, ravdess) -> tuple[list, list]:
    """One unambiguous held-out clip per emotion (`speech_clips`), from the first test actor
    that has one (quiet actors' clips are often ambiguous), and the clips left out."""
    kept, refused = speech_clips(held_out_clips(checkpoint, ravdess))
    by_emotion: dict[str, tuple] = {}
    for clip in kept:
        by_emotion.setdefault(clip[0].name.split("-")[2], clip)
    return [by_emotion[e] for e in sorted(by_emotion)], refused
