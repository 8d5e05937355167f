"""Shared fixtures: generated RAVDESS-named corpora, the real data location, configs."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from ser.config import REPO_ROOT, register_resolvers

register_resolvers()


def real_data_dir() -> Path:
    return Path(os.environ.get("SER_DATA_DIR", REPO_ROOT.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def real_ravdess() -> Path:
    root = real_data_dir() / "ravdess"
    if not root.is_dir():
        pytest.skip(f"real RAVDESS not found at {root}")
    return root


def ravdess_name(emotion: int, intensity: int, statement: int, rep: int, actor: int) -> str:
    return f"03-01-{emotion:02d}-{intensity:02d}-{statement:02d}-{rep:02d}-{actor:02d}"


def write_tone(path: Path, freq: float, seconds: float = 3.5, sr: int = 16000,
               channels: int = 1, seed: int = 0) -> Path:
    """A tone plus a little noise: distinct per emotion, so a tiny fit can learn it."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    wave = 0.3 * np.sin(2 * np.pi * freq * t) + 0.02 * rng.standard_normal(t.size)
    data = np.repeat(wave[:, None], channels, axis=1) if channels > 1 else wave
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, data.astype(np.float32), sr)
    return path


def make_ravdess_tree(root: Path, actors=range(1, 25), emotions=range(1, 9),
                     statements=(1,), suffix: str = ".wav", sr: int = 16000) -> Path:
    """A RAVDESS-named corpus of generated tones: one clip per actor × emotion × statement."""
    for actor in actors:
        for emo in emotions:
            for stmt in statements:
                name = ravdess_name(emo, 1, stmt, 1, actor)
                freq = 150.0 * emo + 7 * actor + 30 * stmt
                write_tone(root / f"Actor_{actor:02d}" / f"{name}{suffix}", freq, sr=sr,
                           seed=actor * 100 + emo, channels=2 if actor == 1 and emo == 2 else 1)
    return root


@pytest.fixture(scope="session")
def generated_data_dir(tmp_path_factory) -> Path:
    """<tmp>/ravdess with 24 actors × 8 emotions × 2 statements of generated audio."""
    data_dir = tmp_path_factory.mktemp("data")
    make_ravdess_tree(data_dir / "ravdess", statements=(1, 2))
    return data_dir
