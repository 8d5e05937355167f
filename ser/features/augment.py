"""Waveform augmentations: the seed's noise and pitch shift, stretch / shift, and speed.

`speed<factor>` versions (e.g. `speed0.9`, `speed1.1`) resample the clip so it plays
`factor` times as fast: duration, pitch and formants all move, which stands in for new
speakers (Ko et al.'s speed perturbation). They are deterministic.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import soxr
import torch

from ser.features import dsp

# Order matters: version i draws from child i of the clip's generator (part of the cache
# format), so new versions go at the end.
VERSIONS = ("original", "noise", "pitch", "pitch_noise", "stretch", "shift")
_SPEED = re.compile(r"speed(\d+(?:\.\d+)?)")


@dataclass(frozen=True)
class AugmentConfig:
    """Parameters of the augmented versions; `seed` roots every random draw."""

    noise_amplitude: float = 0.035  # noise std = amplitude * U(0,1) * max|x|
    pitch_steps: float = 0.7  # semitones
    stretch_rate: float = 0.8  # < 1 slows down (the result is cropped to the clip length)
    shift_max: int = 5000  # samples, either way
    seed: int = 0


def check_versions(versions: Sequence[str]) -> list[str]:
    """The versions as a list; unknown or repeated names are an error."""
    versions = list(versions)
    unknown = [v for v in versions if v not in VERSIONS and speed_factor(v) is None]
    if unknown or not versions or len(set(versions)) != len(versions):
        raise ValueError(f"versions must be distinct names from {VERSIONS} or speed<factor> "
                         f"with 0.5 <= factor <= 2 (e.g. speed0.9), got {versions}")
    return versions


def speed_factor(version: str) -> float | None:
    """The factor of a `speed<factor>` version name; None for any other name."""
    match = _SPEED.fullmatch(version)
    factor = float(match.group(1)) if match else None
    return factor if factor is not None and 0.5 <= factor <= 2.0 else None


def change_speed(wave: np.ndarray, sr: int, factor: float) -> np.ndarray:
    """The clip played `factor` times as fast (resampled, so pitch moves with it)."""
    return soxr.resample(wave, sr, sr / factor, quality="HQ").astype(np.float32, copy=False)


def add_noise(wave: np.ndarray, amplitude: float, rng: np.random.Generator) -> np.ndarray:
    """The seed's noise: `x + amplitude * U(0,1) * max|x| * N(0,1)`, one normal per sample."""
    scale = amplitude * rng.uniform() * float(np.max(np.abs(wave), initial=0.0))
    # torch draws normals ~3x faster than numpy; seeded from `rng`, so still reproducible
    gen = torch.Generator().manual_seed(int(rng.integers(2**63)))
    noise = torch.randn(wave.shape[-1], generator=gen).numpy()
    return (wave + np.float32(scale) * noise).astype(np.float32, copy=False)


def roll_shift(wave: np.ndarray, shift_max: int, rng: np.random.Generator) -> np.ndarray:
    """`np.roll` by a whole number of samples drawn uniformly from [-shift_max, shift_max]."""
    return np.roll(wave, int(rng.integers(-shift_max, shift_max + 1)))


def make_versions(
    wave: np.ndarray,
    sr: int,
    versions: Sequence[str],
    cfg: AugmentConfig,
    rng: np.random.Generator,
) -> dict[str, np.ndarray]:
    """The asked versions of one waveform, each float32; "stretch" comes out longer.

    Each version draws from its own child of `rng`, so a version's randomness does not
    depend on which other versions are asked for. One pitch shift serves both "pitch"
    and "pitch_noise".
    """
    versions = check_versions(versions)
    rngs = dict(zip(VERSIONS, rng.spawn(len(VERSIONS)), strict=True))
    wave = np.asarray(wave, dtype=np.float32)
    pitched: list[np.ndarray] = []  # computed on first use

    def pitch() -> np.ndarray:
        if not pitched:
            pitched.append(dsp.pitch_shift(wave[None], sr, cfg.pitch_steps)[0])
        return pitched[0]

    makers: dict[str, Callable[[np.random.Generator], np.ndarray]] = {
        "original": lambda _: wave,
        "noise": lambda g: add_noise(wave, cfg.noise_amplitude, g),
        "pitch": lambda _: pitch(),
        "pitch_noise": lambda g: add_noise(pitch(), cfg.noise_amplitude, g),
        "stretch": lambda _: dsp.time_stretch(wave[None], cfg.stretch_rate)[0],
        "shift": lambda g: roll_shift(wave, cfg.shift_max, g),
    }
    return {v: makers[v](rngs[v]) if v in makers else change_speed(wave, sr, speed_factor(v))
            for v in versions}
