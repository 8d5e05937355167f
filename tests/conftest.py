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


# -- generated CREMA-D, TESS and SAVEE, with each corpus's real naming ---------------------

CREMA_EMOTIONS = ("ANG", "DIS", "FEA", "HAP", "NEU", "SAD")
TESS_EMOTIONS = ("angry", "disgust", "fear", "happy", "neutral", "ps", "sad")
SAVEE_CODES = ("a", "d", "f", "h", "n", "sa", "su")


def _tone(path: Path, index: int, seed: int) -> Path:
    return write_tone(path, 150.0 + 90 * index, seconds=3.2, seed=seed)


def make_crema_d_tree(root: Path, actors=(1001, 1002, 1005, 1006, 1011, 1012),
                      sentences=("DFA",), demographics: dict[int, str] | None = None) -> Path:
    """`AudioWAV/1001_DFA_ANG_XX.wav`, as the corpus ships; optionally its demographics."""
    import csv  # only the optional demographics table needs it
    for actor in actors:
        for e, emo in enumerate(CREMA_EMOTIONS):
            for sentence in sentences:
                level = "XX" if sentence != "IEO" else "HI"
                _tone(root / "AudioWAV" / f"{actor}_{sentence}_{emo}_{level}.wav", e, actor + e)
    if demographics:
        with open(root / "VideoDemographics.csv", "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["ActorID", "Age", "Sex", "Race", "Ethnicity"])
            for actor, sex in demographics.items():
                writer.writerow([actor, 30, sex.capitalize(), "Caucasian", "Not Hispanic"])
    return root


def make_tess_tree(root: Path, words=("back", "bite")) -> Path:
    """`OAF_angry/OAF_back_angry.wav` etc., with the real corpus's `OA_bite_neutral`."""
    for s, speaker in enumerate(("OAF", "YAF")):
        for e, emo in enumerate(TESS_EMOTIONS):
            folder = "pleasant_surprise" if emo == "ps" else emo
            for word in words:
                prefix = "OA" if (speaker, word, emo) == ("OAF", "bite", "neutral") else speaker
                path = root / f"{speaker}_{folder}" / f"{prefix}_{word}_{emo}.wav"
                _tone(path, e, 10 * s + e)
    return root


def make_savee_tree(root: Path, nested: bool = False, per_emotion: int = 1) -> Path:
    """`DC_a01.wav` in one folder, or `DC/a01.wav` (nested)."""
    for speaker in ("DC", "JE", "JK", "KL"):
        for e, code in enumerate(SAVEE_CODES):
            for i in range(1, per_emotion + 1):
                name = f"{code}{i:02d}.wav"
                path = root / speaker / name if nested else root / "ALL" / f"{speaker}_{name}"
                _tone(path, e, e + i)
    return root


def make_all_corpora(data_dir: Path, ravdess_emotions=range(1, 9), crema_actors=None,
                     tess_words=("back", "bite")) -> Path:
    """Tiny RAVDESS (24 actors x 8 emotions), CREMA-D, TESS and SAVEE under `data_dir`."""
    make_ravdess_tree(data_dir / "ravdess", emotions=ravdess_emotions)
    make_crema_d_tree(data_dir / "crema_d", **({"actors": crema_actors} if crema_actors else {}))
    make_tess_tree(data_dir / "tess", words=tess_words)
    make_savee_tree(data_dir / "savee")
    return data_dir
