"""Helpers the corpus scanners share: finding audio files and reporting inventories."""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path

from ser.data.clip import Clip
from ser.data.labels import EMOTIONS

log = logging.getLogger(__name__)

AUDIO_SUFFIXES = (".wav", ".flac")


def audio_files(root: str | Path, corpus: str) -> list[Path]:
    """Every .wav/.flac file below `root`, sorted; a missing or empty root raises."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{corpus} folder not found: {root}")
    paths = sorted(p for p in root.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES)
    if not paths:
        raise FileNotFoundError(f"{root}: no .wav or .flac files found for {corpus}")
    return paths


def speaker_emotion_table(clips: list[Clip]) -> str:
    """Clip counts per speaker and emotion, one row per speaker."""
    counts = Counter((c.speaker, c.emotion) for c in clips)
    header = f"{'speaker':<14}" + " ".join(f"{e[:5]:>5}" for e in EMOTIONS) + "  total"
    rows = [header]
    for spk in sorted({c.speaker for c in clips}):
        cells = [counts[(spk, e)] for e in EMOTIONS]
        rows.append(f"{spk:<14}" + " ".join(f"{n:>5}" for n in cells) + f"  {sum(cells):>5}")
    return "\n".join(rows)


def warn_if_incomplete(corpus: str, root: Path, clips: list[Clip], expected: int) -> None:
    """A partial copy silently changes every number reported on it: say so, with counts."""
    if len(clips) != expected:
        log.warning("%s at %s has %d clips, the full corpus %d:\n%s", corpus, root, len(clips),
                    expected, speaker_emotion_table(clips))
