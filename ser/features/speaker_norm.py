"""Speaker normalisation: standardise each speaker's features with that speaker's own clips.

Statistics come from the audio of a speaker's clips only, never from labels: for a
training speaker its training clips, for a test speaker its (unlabelled) test clips,
which stand in for the enrolment clips a deployed model would ask a new speaker for.
Without enrolment, a clip is standardised with the pooled statistics of the training
speakers instead ("global"), the fallback the report also measures.

Augmented versions of a speaker's clips (a speed-perturbed copy sounds like another
speaker) are normalised with the statistics of that version's rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

MODES = ("none", "speaker")
TEST_MODES = ("speaker", "global")


@dataclass(frozen=True)
class SpeakerNormConfig:
    """`mode=speaker` turns it on; `test` says how test clips are normalised."""

    mode: str = "none"
    test: str = "speaker"  # speaker: test speakers' own clips; global: no enrolment
    eps: float = 1e-6

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"speaker_norm.mode must be one of {MODES}, got {self.mode!r}")
        if self.test not in TEST_MODES:
            raise ValueError(f"speaker_norm.test must be one of {TEST_MODES}, got {self.test!r}")

    @property
    def enabled(self) -> bool:
        return self.mode == "speaker"


@dataclass(frozen=True)
class Moments:
    mean: np.ndarray
    std: np.ndarray

    def apply(self, x: np.ndarray) -> np.ndarray:
        return ((x - self.mean) / self.std).astype(np.float32)


def moments(x: np.ndarray, eps: float = 1e-6) -> Moments:
    """Per-column mean and std (floored at `eps`) of a set of rows."""
    if len(x) == 0:
        raise ValueError("speaker normalisation needs at least one clip per speaker")
    # float64: in float32 the order of the rows (evaluation's table vs the clips enrolled
    # in serving) moves a mean by an ulp, which a near-constant column's std magnifies
    x = np.asarray(x, np.float64)
    return Moments(x.mean(axis=0), np.maximum(x.std(axis=0), eps))


def normalise_by_group(x: np.ndarray, groups: Sequence[str], eps: float = 1e-6) -> np.ndarray:
    """Each group's rows standardised with that group's own mean and std."""
    groups = np.asarray(groups)
    out = np.empty_like(x, dtype=np.float32)
    for g in np.unique(groups):
        rows = groups == g
        out[rows] = moments(x[rows], eps).apply(x[rows])
    return out


def speaker_version_groups(speakers: Sequence[str], versions: Sequence[str]) -> list[str]:
    """One group per (speaker, augmented version)."""
    return [f"{s}|{v}" for s, v in zip(speakers, versions, strict=True)]
