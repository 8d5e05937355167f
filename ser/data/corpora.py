"""Registry of corpus scanners: name -> function(root) returning Clips."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from ser.data.clip import Clip
from ser.data.ravdess import scan_ravdess

SCANNERS: dict[str, Callable[[Path], list[Clip]]] = {
    "ravdess": scan_ravdess,
}


def load_corpora(data_dir: Path, corpora: Sequence[str]) -> list[Clip]:
    """Clips of every named corpus, each read from `data_dir/<name>`."""
    clips: list[Clip] = []
    for name in corpora:
        if name not in SCANNERS:
            raise ValueError(f"unknown corpus {name!r}; known: {', '.join(sorted(SCANNERS))}")
        clips.extend(SCANNERS[name](Path(data_dir) / name))
    return clips
