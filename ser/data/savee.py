"""SAVEE: four male speakers (DC, JE, JK, KL), 120 clips each, 7 emotions.

Names are `DC_a01.wav` (one folder) or `DC/a01.wav` (a folder per speaker). Emotion
codes: a angry, d disgust, f fear, h happy, n neutral, sa sad, su surprise; neutral
runs n01-n30, the others 01-15.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from ser.data.clip import Clip
from ser.data.scan import audio_files, warn_if_incomplete

N_CLIPS = 480
SPEAKERS = ("DC", "JE", "JK", "KL")
EMOTIONS = {"a": "angry", "d": "disgust", "f": "fearful", "h": "happy", "n": "neutral",
            "sa": "sad", "su": "surprised"}
_FLAT = re.compile(r"^([A-Z]{2})_([a-z]{1,2})(\d{2})$")
_NESTED = re.compile(r"^([a-z]{1,2})(\d{2})$")


class InvalidSaveeNameError(ValueError):
    """A file name that does not follow SAVEE's naming."""


@dataclass(frozen=True)
class SaveeRecord:
    speaker: str
    emotion: str
    index: int


def parse_savee_name(path: str | Path) -> SaveeRecord:
    """Decode `DC_a01` or `DC/a01`; raise InvalidSaveeNameError naming the file."""
    path = Path(path)
    if m := _FLAT.match(path.stem):
        speaker, code, index = m[1], m[2], int(m[3])
    elif m := _NESTED.match(path.stem):
        speaker, code, index = path.parent.name, m[1], int(m[2])
    else:
        raise InvalidSaveeNameError(f"{path}: expected DC_a01 or DC/a01, got {path.stem!r}")
    if speaker not in SPEAKERS:
        raise InvalidSaveeNameError(f"{path}: speaker {speaker!r} is not one of {SPEAKERS}")
    if code not in EMOTIONS:
        raise InvalidSaveeNameError(f"{path}: emotion code {code!r} is not one of "
                                    f"{', '.join(EMOTIONS)}")
    if not 1 <= index <= (30 if code == "n" else 15):
        raise InvalidSaveeNameError(f"{path}: sentence {index:02d} is out of range for {code!r}")
    return SaveeRecord(speaker, EMOTIONS[code], index)


def scan_savee(root: str | Path) -> list[Clip]:
    """All SAVEE clips below `root`, either layout, sorted by path."""
    root = Path(root)
    clips = []
    for path in audio_files(root, "SAVEE"):
        rec = parse_savee_name(path)
        clips.append(Clip(path=path, corpus="savee", speaker=f"savee:{rec.speaker}",
                          gender="male", emotion=rec.emotion))
    warn_if_incomplete("SAVEE", root, clips, N_CLIPS)
    return clips
