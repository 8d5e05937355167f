"""EmoDB (Berlin Database of Emotional Speech): `03a01Fa.wav`, 10 actors, 7 emotions, German.

A name is speaker (2 digits), text (a01 ... b10), emotion letter (German initials: W Wut
= anger, L Langeweile = boredom, E Ekel = disgust, A Angst = fear, F Freude = happiness,
T Trauer = sadness, N neutral) and a version letter (a, b, ...). The official archive
keeps the clips in `wav/`; a folder holding them directly works too. Boredom has no
counterpart in RAVDESS and stays its own label.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from ser.data.clip import Clip
from ser.data.download import DatasetNotFoundError
from ser.data.scan import audio_files, warn_if_incomplete

N_CLIPS = 535
MALE_SPEAKERS = (3, 10, 11, 12, 15)
FEMALE_SPEAKERS = (8, 9, 13, 14, 16)
TEXTS = ("a01", "a02", "a04", "a05", "a07", "b01", "b02", "b03", "b09", "b10")
EMOTIONS = {"W": "angry", "L": "boredom", "E": "disgust", "A": "fearful", "F": "happy",
            "T": "sad", "N": "neutral"}
_NAME = re.compile(r"^(\d{2})([ab]\d{2})([A-Z])([a-z])$")


class InvalidEmodbNameError(ValueError):
    """A file name that does not follow EmoDB's naming."""


@dataclass(frozen=True)
class EmodbRecord:
    speaker: int
    text: str
    emotion: str
    version: str

    @property
    def gender(self) -> str:
        return "male" if self.speaker in MALE_SPEAKERS else "female"


def parse_emodb_name(path: str | Path) -> EmodbRecord:
    """Decode `03a01Fa`; raise InvalidEmodbNameError naming the file."""
    path = Path(path)
    m = _NAME.match(path.stem)
    if not m:
        raise InvalidEmodbNameError(f"{path}: expected a name like 03a01Fa (speaker, text, "
                                    f"emotion letter, version), got {path.stem!r}")
    speaker, text, letter, version = int(m[1]), m[2], m[3], m[4]
    if speaker not in MALE_SPEAKERS + FEMALE_SPEAKERS:
        known = ", ".join(f"{s:02d}" for s in sorted(MALE_SPEAKERS + FEMALE_SPEAKERS))
        raise InvalidEmodbNameError(f"{path}: speaker {speaker:02d} is not one of {known}")
    if text not in TEXTS:
        raise InvalidEmodbNameError(f"{path}: text {text!r} is not one of {', '.join(TEXTS)}")
    if letter not in EMOTIONS:
        raise InvalidEmodbNameError(f"{path}: emotion letter {letter!r} is not one of "
                                    f"{', '.join(EMOTIONS)}")
    return EmodbRecord(speaker, text, EMOTIONS[letter], version)


def missing_message(root: Path) -> str:
    """Where to get EmoDB and where to put it (it is never downloaded automatically)."""
    return (
        f"EmoDB (the Berlin Database of Emotional Speech) was not found in {root}.\n"
        f"Download it from the official site of the Berlin Database of Emotional Speech "
        f"(Emo-DB, TU Berlin) and unzip it so the clips are\n"
        f"    {root}/wav/03a01Fa.wav\n"
        f"    ...\n"
        f"({N_CLIPS} files named speaker, text, emotion letter, version).\n"
        f"If the data lives elsewhere, set SER_DATA_DIR=/path/to/data or pass "
        f"paths.data_dir=/path/to/data (the folder containing emodb/)."
    )


def scan_emodb(root: str | Path) -> list[Clip]:
    """All EmoDB clips in `root/wav` (or `root` itself), sorted by path."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetNotFoundError(missing_message(root))
    folder = root / "wav" if (root / "wav").is_dir() else root
    try:
        paths = audio_files(folder, "EmoDB")
    except FileNotFoundError as err:  # an empty folder: say what belongs there
        raise DatasetNotFoundError(f"{err}\n{missing_message(root)}") from err
    clips = []
    for path in paths:
        rec = parse_emodb_name(path)
        clips.append(Clip(path=path, corpus="emodb", speaker=f"emodb:{rec.speaker:02d}",
                          gender=rec.gender, emotion=rec.emotion))
    warn_if_incomplete("EmoDB", root, clips, N_CLIPS)
    return clips
