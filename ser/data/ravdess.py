"""RAVDESS speech corpus: filename parsing, scanning and an inventory check.

Names look like `03-01-06-01-02-01-12.wav`: modality, vocal channel, emotion,
intensity, statement, repetition, actor. Odd actors are male, even female.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from ser.data.clip import Clip
from ser.data.labels import EMOTIONS
from ser.data.scan import AUDIO_SUFFIXES, audio_files  # noqa: F401 (re-exported)

log = logging.getLogger(__name__)

N_ACTORS = 24
CLIPS_PER_ACTOR = 60
_MODALITIES = {1: "full-AV", 2: "video-only", 3: "audio-only"}
_CHANNELS = {1: "speech", 2: "song"}
_INTENSITIES = {1: "normal", 2: "strong"}


class InvalidFilenameError(ValueError):
    """A file name that does not follow the RAVDESS naming scheme."""


@dataclass(frozen=True)
class RavdessRecord:
    """The seven fields of a RAVDESS file name, decoded."""

    modality: str
    vocal_channel: str
    emotion: str
    intensity: str
    statement: int
    repetition: int
    actor: int

    @property
    def gender(self) -> str:
        return "male" if self.actor % 2 else "female"


def parse_ravdess_name(path: str | Path) -> RavdessRecord:
    """Decode a RAVDESS file name; raise InvalidFilenameError naming the file."""
    path = Path(path)
    fields = path.stem.split("-")
    if len(fields) != 7 or not all(f.isdigit() and len(f) == 2 for f in fields):
        raise InvalidFilenameError(
            f"{path}: expected 7 two-digit fields like 03-01-06-01-02-01-12, got {path.stem!r}"
        )
    mod, chan, emo, inten, stmt, rep, actor = (int(f) for f in fields)
    _check(path, "modality", mod, _MODALITIES)
    _check(path, "vocal channel", chan, _CHANNELS)
    _check(path, "emotion", emo, dict(enumerate(EMOTIONS, start=1)))
    _check(path, "intensity", inten, _INTENSITIES)
    _check(path, "statement", stmt, {1: 1, 2: 2})
    _check(path, "repetition", rep, {1: 1, 2: 2})
    _check(path, "actor", actor, {a: a for a in range(1, N_ACTORS + 1)})
    if emo == 1 and inten == 2:
        raise InvalidFilenameError(f"{path}: neutral has no strong intensity in RAVDESS")
    return RavdessRecord(
        modality=_MODALITIES[mod],
        vocal_channel=_CHANNELS[chan],
        emotion=EMOTIONS[emo - 1],
        intensity=_INTENSITIES[inten],
        statement=stmt,
        repetition=rep,
        actor=actor,
    )


def _check(path: Path, field: str, value: int, allowed: dict) -> None:
    if value not in allowed:
        raise InvalidFilenameError(
            f"{path}: {field} code {value:02d} is not one of {sorted(allowed)}"
        )


def ravdess_clip(path: Path) -> Clip:
    """A corpus-independent Clip for one RAVDESS file."""
    rec = parse_ravdess_name(path)
    return Clip(
        path=path,
        corpus="ravdess",
        speaker=f"ravdess:{rec.actor:02d}",
        gender=rec.gender,
        emotion=rec.emotion,
    )


def scan_ravdess(root: str | Path, *, expect_complete: bool = True) -> list[Clip]:
    """All RAVDESS speech clips under `root` (`Actor_XX/*.wav|flac`), sorted by path.

    Names that don't parse raise. A root missing actors or clips is logged with the
    counts per actor and emotion (`inventory_report`), since a partial copy silently
    changes every number the project reports.
    """
    paths = audio_files(root, "RAVDESS")
    # Song files (vocal channel 02) share the naming scheme; this corpus is speech only.
    clips = [ravdess_clip(p) for p in paths if parse_ravdess_name(p).vocal_channel == "speech"]
    problems = inventory_problems(clips)
    if problems and expect_complete:
        log.warning("RAVDESS at %s is incomplete:\n%s", root, inventory_report(clips, problems))
    return clips


def inventory_problems(clips: list[Clip]) -> list[str]:
    """Missing actors and actors with fewer than 60 speech clips."""
    per_actor = Counter(c.speaker for c in clips)
    problems = []
    for actor in range(1, N_ACTORS + 1):
        n = per_actor.get(f"ravdess:{actor:02d}", 0)
        if n == 0:
            problems.append(f"actor {actor:02d}: missing")
        elif n != CLIPS_PER_ACTOR:
            problems.append(f"actor {actor:02d}: {n} clips, expected {CLIPS_PER_ACTOR}")
    return problems


def inventory_report(clips: list[Clip], problems: list[str] | None = None) -> str:
    """A table of clip counts per actor and emotion, followed by any problems."""
    counts = Counter((c.speaker, c.emotion) for c in clips)
    speakers = sorted({c.speaker for c in clips})
    header = "actor     " + " ".join(f"{e[:5]:>5}" for e in EMOTIONS) + "  total"
    rows = [header]
    for spk in speakers:
        cells = [counts[(spk, e)] for e in EMOTIONS]
        rows.append(f"{spk:<10}" + " ".join(f"{n:>5}" for n in cells) + f"  {sum(cells):>5}")
    problems = inventory_problems(clips) if problems is None else problems
    return "\n".join(rows + problems)
