"""Generated corpora with each corpus's real naming (no tests here; imported by others)."""

from __future__ import annotations

import csv
from pathlib import Path

from tests.conftest import make_ravdess_tree, write_tone

CREMA_EMOTIONS = ("ANG", "DIS", "FEA", "HAP", "NEU", "SAD")
TESS_EMOTIONS = ("angry", "disgust", "fear", "happy", "neutral", "ps", "sad")
SAVEE_CODES = ("a", "d", "f", "h", "n", "sa", "su")


def _tone(path: Path, index: int, seed: int) -> Path:
    return write_tone(path, 150.0 + 90 * index, seconds=3.2, seed=seed)


def make_crema_d_tree(root: Path, actors=(1001, 1002, 1005, 1006, 1011, 1012),
                      sentences=("DFA",), demographics: dict[int, str] | None = None) -> Path:
    """`AudioWAV/1001_DFA_ANG_XX.wav`, as the corpus ships; optionally its demographics."""
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
