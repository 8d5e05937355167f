"""Train/validation/test splits, and the guard that keeps test speakers out of training.

`speaker_independent` is the honest protocol: 6 fixed folds of 4 RAVDESS test actors
(2 male, 2 female), validation actors drawn from the rest, gender-balanced.
`random` reproduces the seed's leaky protocol (clips, or even augmented copies of one
clip, shared between train and test) and is labelled leaky wherever it is reported.
"""

from __future__ import annotations

import random as _random
from collections.abc import Sequence
from dataclasses import dataclass, field

from ser.data.clip import Clip

# Fixed RAVDESS test folds (actor numbers); each holds 2 male (odd) and 2 female (even)
# actors and together they cover all 24 actors once.
RAVDESS_FOLDS: tuple[tuple[int, ...], ...] = (
    (1, 2, 3, 4),
    (5, 6, 7, 8),
    (9, 10, 11, 12),
    (13, 14, 15, 16),
    (17, 18, 19, 20),
    (21, 22, 23, 24),
)

PROTOCOLS = ("speaker_independent", "random")


class SplitLeakError(RuntimeError):
    """Test data reached training: the run would report a leaky number as honest."""


@dataclass(frozen=True)
class Split:
    """Indices into a clip list, plus how they were made."""

    train: list[int]
    val: list[int]
    test: list[int]
    protocol: str
    fold: int | None
    # random protocol only: split augmented rows rather than clips, as the seed did
    rows_leak: bool = False
    test_speakers: tuple[str, ...] = field(default=())

    @property
    def leaky(self) -> bool:
        return self.protocol != "speaker_independent"


def make_split(
    clips: Sequence[Clip],
    protocol: str = "speaker_independent",
    fold: int = 1,
    n_val_speakers: int = 4,
    seed: int = 0,
    test_fraction: float = 0.2,
    rows_leak: bool = True,
) -> Split:
    """Dispatch on the protocol name, as set by `data.split.protocol`."""
    if protocol == "speaker_independent":
        return speaker_independent_split(clips, fold, n_val_speakers, seed)
    if protocol == "random":
        return random_split(clips, test_fraction, seed, rows_leak)
    raise ValueError(f"unknown split protocol {protocol!r}; choose from {PROTOCOLS}")


def speaker_independent_split(
    clips: Sequence[Clip], fold: int, n_val_speakers: int = 4, seed: int = 0
) -> Split:
    """Fold `fold` (1-based) of the fixed RAVDESS folds; validation speakers seeded."""
    if not 1 <= fold <= len(RAVDESS_FOLDS):
        raise ValueError(f"data.fold must be 1..{len(RAVDESS_FOLDS)}, got {fold}")
    test_speakers = {f"ravdess:{a:02d}" for a in RAVDESS_FOLDS[fold - 1]}
    present = {c.speaker for c in clips}
    if not test_speakers & present:
        raise ValueError(f"fold {fold}: none of its test actors {sorted(test_speakers)} present")
    val_speakers = _pick_val_speakers(clips, test_speakers, n_val_speakers, seed + fold)
    train, val, test = [], [], []
    for i, clip in enumerate(clips):
        if clip.speaker in test_speakers:
            test.append(i)
        elif clip.speaker in val_speakers:
            val.append(i)
        else:
            train.append(i)
    split = Split(train, val, test, "speaker_independent", fold,
                  test_speakers=tuple(sorted(test_speakers)))
    check_no_leak(clips, split)
    return split


def _pick_val_speakers(
    clips: Sequence[Clip], exclude: set[str], n: int, seed: int
) -> set[str]:
    """n speakers, half of each gender, never a test speaker."""
    rng = _random.Random(seed)
    by_gender: dict[str, list[str]] = {}
    for spk, gender in sorted({(c.speaker, c.gender) for c in clips if c.speaker not in exclude}):
        by_gender.setdefault(gender, []).append(spk)
    chosen: set[str] = set()
    for i, gender in enumerate(sorted(by_gender)):
        k = n // len(by_gender) + (1 if i < n % len(by_gender) else 0)
        chosen.update(rng.sample(by_gender[gender], min(k, len(by_gender[gender]))))
    return chosen


def random_split(
    clips: Sequence[Clip], test_fraction: float = 0.2, seed: int = 0, rows_leak: bool = True
) -> Split:
    """The seed's protocol: a random clip split, test doubling as validation (leaky)."""
    order = list(range(len(clips)))
    _random.Random(seed).shuffle(order)
    n_test = int(round(test_fraction * len(order)))
    test = sorted(order[:n_test])
    train = sorted(order[n_test:])
    return Split(train, list(test), test, "random", None, rows_leak=rows_leak)


def check_no_leak(clips: Sequence[Clip], split: Split) -> None:
    """Fail if a test speaker or clip is in training or validation (honest protocol only)."""
    if split.leaky:
        return
    test_speakers = {clips[i].speaker for i in split.test}
    test_ids = {clips[i].clip_id for i in split.test}
    for name, idx in (("train", split.train), ("val", split.val)):
        leaked = sorted({clips[i].speaker for i in idx} & test_speakers)
        if leaked:
            raise SplitLeakError(f"test speakers {leaked} appear in {name}")
        shared = sorted({clips[i].clip_id for i in idx} & test_ids)
        if shared:
            raise SplitLeakError(f"clips {shared[:5]} appear in both {name} and test")


def check_rows_no_leak(train_ids: Sequence[str], test_ids: Sequence[str]) -> None:
    """Fail if augmented rows of one clip sit on both sides (checked on feature rows)."""
    shared = sorted(set(train_ids) & set(test_ids))
    if shared:
        raise SplitLeakError(
            f"{len(shared)} clips have augmented copies in both train and test, e.g. {shared[:3]}"
        )
