"""Audio loading: soundfile for I/O, mono mix-down, soxr resampling, crop."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr


class AudioError(ValueError):
    """A file that can't be used as audio input; the message names the file."""


@dataclass(frozen=True)
class AudioConfig:
    """How a clip becomes the waveform a feature extractor sees.

    `offset` and `duration` crop at the file's native rate before resampling, as
    `librosa.load(offset=, duration=)` does; `duration=None` keeps the whole clip.
    A clip with less than `min_duration` seconds after the offset is rejected.
    """

    sample_rate: int = 22050
    offset: float = 0.0
    duration: float | None = None
    min_duration: float = 0.5


def load_audio(path: str | Path, cfg: AudioConfig) -> np.ndarray:
    """Read, mix to mono, crop and resample one file to float32 at `cfg.sample_rate`."""
    path = Path(path)
    try:
        with sf.SoundFile(path) as f:
            native_sr = f.samplerate
            start = int(cfg.offset * native_sr)  # librosa truncates too
            n = -1 if cfg.duration is None else int(cfg.duration * native_sr)
            f.seek(min(start, f.frames))
            audio = f.read(frames=n, dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, OSError) as err:
        raise AudioError(f"{path}: cannot read audio ({err})") from None
    if audio.size == 0 or len(audio) < cfg.min_duration * native_sr:
        raise AudioError(
            f"{path}: only {len(audio) / native_sr:.2f} s of audio after offset {cfg.offset} s, "
            f"need at least {cfg.min_duration} s"
        )
    mono = audio.mean(axis=1)
    if not np.isfinite(mono).all():
        raise AudioError(f"{path}: audio holds NaN or infinite samples")
    return resample(mono, native_sr, cfg.sample_rate)


def resample(audio: np.ndarray, orig_sr: int, target_sr: int) -> np.ndarray:
    """soxr at librosa's default quality ("soxr_hq"), so features match librosa.load."""
    if orig_sr == target_sr:
        return np.ascontiguousarray(audio, dtype=np.float32)
    return soxr.resample(audio, orig_sr, target_sr, quality="HQ").astype(np.float32, copy=False)
