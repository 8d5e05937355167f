"""TESS: `OAF_angry/OAF_back_angry.wav`, two actresses saying 200 words in 7 emotions.

Speakers OAF (older) and YAF (younger), both female. The name's last part is the
emotion; `ps`, `pleasant_surprise` and `pleasant_surprised` all mean surprised. The
real corpus names one OAF file `OA_bite_neutral`, so `OA` is read as OAF.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ser.data.clip import Clip
from ser.data.scan import audio_files, warn_if_incomplete

N_CLIPS = 2800
SPEAKERS = {"OAF": "OAF", "YAF": "YAF", "OA": "OAF"}  # OA: the real corpus's misnamed file
EMOTIONS = {
    "angry": "angry",
    "disgust": "disgust",
    "fear": "fearful",
    "happy": "happy",
    "neutral": "neutral",
    "sad": "sad",
    "ps": "surprised",
    "pleasant_surprise": "surprised",
    "pleasant_surprised": "surprised",
}


class InvalidTessNameError(ValueError):
    """A file name that does not follow TESS's naming."""


@dataclass(frozen=True)
class TessRecord:
    speaker: str
    word: str
    emotion: str


def parse_tess_name(path: str | Path) -> TessRecord:
    """Decode `OAF_back_angry`; raise InvalidTessNameError naming the file."""
    path = Path(path)
    speaker, _, rest = path.stem.partition("_")
    if speaker.upper() not in SPEAKERS:
        raise InvalidTessNameError(f"{path}: speaker {speaker!r} is not one of OAF, YAF")
    # the longest emotion name that ends the stem, so "pleasant_surprise" beats nothing
    for name in sorted(EMOTIONS, key=len, reverse=True):
        word, sep, tail = rest.lower().rpartition("_" + name)
        if sep and not tail and word:
            return TessRecord(SPEAKERS[speaker.upper()], word, EMOTIONS[name])
    raise InvalidTessNameError(
        f"{path}: expected SPEAKER_word_emotion with emotion one of {', '.join(EMOTIONS)}"
    )


def scan_tess(root: str | Path) -> list[Clip]:
    """All TESS clips below `root` (speaker/emotion folders or flat), sorted by path."""
    root = Path(root)
    clips = []
    for path in audio_files(root, "TESS"):
        rec = parse_tess_name(path)
        clips.append(Clip(path=path, corpus="tess", speaker=f"tess:{rec.speaker}",
                          gender="female", emotion=rec.emotion))
    warn_if_incomplete("TESS", root, clips, N_CLIPS)
    return clips
