"""Helpers the corpus scanners share: finding audio files and reporting inventories."""

from __future__ import annotations

import logging
import os
from collections import Counter
from pathlib import Path

from ser.data.clip import Clip
from ser.data.labels import EMOTIONS, LABELS

log = logging.getLogger(__name__)

AUDIO_SUFFIXES = (".wav", ".flac")


def audio_files(root: str | Path, corpus: str) -> list[Path]:
    """Every .wav/.flac file below `root`, sorted; a missing or empty root raises.

    Hidden files and folders (a leading '.') are skipped: macOS leaves `._<name>.wav`
    AppleDouble files beside each clip on a copy, and they would fail name parsing.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{corpus} folder not found: {root}")
    paths, hidden = [], 0
    for folder, dirs, files in os.walk(root):
        hidden += sum(name.startswith(".") for name in dirs + files)
        dirs[:] = [d for d in dirs if not d.startswith(".")]  # never descend into them
        paths += [Path(folder, name) for name in files
                  if not name.startswith(".") and Path(name).suffix.lower() in AUDIO_SUFFIXES]
    if hidden:
        log.info("%s: ignored %d hidden files/folders below %s", corpus, hidden, root)
    if not paths:
        raise FileNotFoundError(f"{root}: no .wav or .flac files found for {corpus}")
    return sorted(paths)


def speaker_emotion_table(clips: list[Clip]) -> str:
    """Clip counts per speaker and emotion, one row per speaker.

    Columns: RAVDESS's eight, plus any other label the clips have (EmoDB's boredom).
    """
    counts = Counter((c.speaker, c.emotion) for c in clips)
    present = {c.emotion for c in clips}
    labels = [e for e in LABELS if e in EMOTIONS or e in present]
    header = f"{'speaker':<14}" + " ".join(f"{e[:5]:>5}" for e in labels) + "  total"
    rows = [header]
    for spk in sorted({c.speaker for c in clips}):
        cells = [counts[(spk, e)] for e in labels]
        rows.append(f"{spk:<14}" + " ".join(f"{n:>5}" for n in cells) + f"  {sum(cells):>5}")
    return "\n".join(rows)


def warn_if_incomplete(corpus: str, root: Path, clips: list[Clip], expected: int) -> None:
    """A partial copy silently changes every number reported on it: say so, in one line
    (the whole speaker x emotion table goes to the debug log)."""
    if len(clips) == expected:
        return
    cells = Counter((c.speaker, c.emotion) for c in clips)
    usual = Counter(cells.values()).most_common(1)[0][0] if cells else 0
    short = [f"{s} {e} {n}" for (s, e), n in sorted(cells.items()) if n < usual]
    where = f"; fewer than the usual {usual} in: {', '.join(short[:6])}" if short else ""
    log.warning("%s at %s has %d of its %d clips%s", corpus, root, len(clips), expected, where)
    log.debug("%s clips per speaker and emotion:\n%s", corpus, speaker_emotion_table(clips))
