"""CREMA-D: `1001_DFA_ANG_XX.wav` = actor, sentence, emotion, level.

91 actors (1001-1091; 48 male, 43 female), 12 sentences, six emotions, levels LO, MD,
HI or XX (unspecified). Sex is not in the name: it comes from the corpus's
`VideoDemographics.csv` when the folder has it, else from the table below (the same
data).
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from pathlib import Path

from ser.data.clip import Clip
from ser.data.scan import audio_files, warn_if_incomplete

N_CLIPS = 7442
ACTORS = range(1001, 1092)
SENTENCES = ("IEO", "TIE", "IOM", "IWW", "TAI", "MTI", "IWL", "ITH", "DFA", "ITS", "TSI", "WSI")
EMOTIONS = {"ANG": "angry", "DIS": "disgust", "FEA": "fearful", "HAP": "happy",
            "NEU": "neutral", "SAD": "sad"}
LEVELS = {"LO": "low", "MD": "medium", "HI": "high", "XX": "unspecified"}
FEMALE_ACTORS = frozenset({
    1002, 1003, 1004, 1006, 1007, 1008, 1009, 1010, 1012, 1013, 1018, 1020, 1021, 1024,
    1025, 1028, 1029, 1030, 1037, 1043, 1046, 1047, 1049, 1052, 1053, 1054, 1055, 1056,
    1058, 1060, 1061, 1063, 1072, 1073, 1074, 1075, 1076, 1078, 1079, 1082, 1084, 1089,
    1091,
})
_NAME = re.compile(r"^(\d{4})_([A-Z]{3})_([A-Z]{3})_([A-Z]{2})$")


class InvalidCremaDNameError(ValueError):
    """A file name that does not follow CREMA-D's naming."""


@dataclass(frozen=True)
class CremaDRecord:
    actor: int
    sentence: str
    emotion: str
    level: str


def parse_crema_d_name(path: str | Path) -> CremaDRecord:
    """Decode `1001_DFA_ANG_XX`; raise InvalidCremaDNameError naming the file."""
    path = Path(path)
    m = _NAME.match(path.stem)
    if not m:
        raise InvalidCremaDNameError(f"{path}: expected a name like 1001_DFA_ANG_XX, got "
                                     f"{path.stem!r}")
    actor, sentence, emotion, level = int(m[1]), m[2], m[3], m[4]
    for field, value, known in (("actor", actor, ACTORS), ("sentence", sentence, SENTENCES),
                                ("emotion", emotion, EMOTIONS), ("level", level, LEVELS)):
        if value not in known:
            raise InvalidCremaDNameError(f"{path}: {field} {value!r} is not a CREMA-D {field}")
    return CremaDRecord(actor, sentence, EMOTIONS[emotion], LEVELS[level])


def read_demographics(root: Path) -> dict[int, str]:
    """Actor -> "male"/"female" from `VideoDemographics.csv` below `root`, if present."""
    files = sorted(root.rglob("VideoDemographics.csv"))
    if not files:
        return {}
    with open(files[0], newline="") as f:
        return {int(row["ActorID"]): row["Sex"].strip().lower() for row in csv.DictReader(f)}


def scan_crema_d(root: str | Path) -> list[Clip]:
    """All CREMA-D clips below `root` (any layout, e.g. `AudioWAV/`), sorted by path."""
    root = Path(root)
    sexes = read_demographics(root) if root.is_dir() else {}
    clips = []
    for path in audio_files(root, "CREMA-D"):
        rec = parse_crema_d_name(path)
        gender = sexes.get(rec.actor) or ("female" if rec.actor in FEMALE_ACTORS else "male")
        clips.append(Clip(path=path, corpus="crema_d", speaker=f"crema_d:{rec.actor}",
                          gender=gender, emotion=rec.emotion))
    warn_if_incomplete("CREMA-D", root, clips, N_CLIPS)
    return clips
