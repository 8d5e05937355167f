"""A corpus-independent record of one labelled recording."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Clip:
    """One recording with what splits and labels need.

    `speaker` is prefixed by the corpus ("ravdess:01") so mixtures of corpora never
    merge two people who share an id.
    """

    path: Path
    corpus: str
    speaker: str
    gender: str  # "male" | "female"
    emotion: str

    @property
    def clip_id(self) -> str:
        """Stable id for grouping every augmented copy of this recording."""
        return f"{self.corpus}:{self.path.stem}"
