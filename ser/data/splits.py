"""Train/validation/test splits, and the guard that keeps test speakers out of training.

`speaker_independent` is the honest protocol. Its test speakers are fold k of one
corpus (RAVDESS when present, else the first corpus, or `test_corpus`): for RAVDESS the
6 fixed folds of 4 actors (2 male, 2 female), for EmoDB 5 fixed pairs (one actor, one
actress), for any other corpus gender-balanced speaker-held-out folds. Validation
speakers come from that corpus's other speakers, gender-balanced; every other corpus in
a mixture trains.
`emobox` is the same protocol on EmoBox's published RAVDESS test folds (for comparison
with EmoBox's numbers); only the test actors differ.
`cross_corpus` tests on whole corpora (`test_corpora`) and trains on the others.
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

# EmoBox's published RAVDESS test folds (Ma et al., Interspeech 2024), as listed there.
# They are not gender-balanced (fold 2 is four actresses); validation actors still are.
EMOBOX_RAVDESS_FOLDS: tuple[tuple[int, ...], ...] = (
    (1, 11, 20, 21),
    (4, 10, 12, 14),
    (8, 9, 19, 23),
    (3, 5, 7, 24),
    (2, 15, 16, 18),
    (6, 13, 17, 22),
)

# Fixed EmoDB test folds: the sorted actors (03, 10, 11, 12, 15) paired with the sorted
# actresses (08, 09, 13, 14, 16), one pair per fold.
EMODB_FOLDS: tuple[tuple[int, ...], ...] = ((3, 8), (10, 9), (11, 13), (12, 14), (15, 16))

# Validation speakers at most when they come from this corpus alone, whatever
# n_val_speakers asks: EmoDB has 8 speakers left after a fold's pair, and 2 (one of each
# gender) leave 6 to train on, not 4.
MAX_VAL_SPEAKERS = {"emodb": 2}

PROTOCOLS = ("speaker_independent", "emobox", "cross_corpus", "random")
LEAKY_PROTOCOLS = ("random",)
MAX_FOLDS = 6


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
    # how a rows_leak split cuts the augmented rows (the seed's protocol)
    seed: int = 0
    test_fraction: float = 0.2

    @property
    def leaky(self) -> bool:
        return self.protocol in LEAKY_PROTOCOLS

    @property
    def test_corpora(self) -> tuple[str, ...]:
        """Corpora of the test speakers (empty for the random protocol)."""
        return tuple(sorted({s.split(":", 1)[0] for s in self.test_speakers}))


def make_split(
    clips: Sequence[Clip],
    protocol: str = "speaker_independent",
    fold: int = 1,
    n_val_speakers: int = 4,
    seed: int = 0,
    test_fraction: float = 0.2,
    rows_leak: bool = True,
    test_corpus: str | None = None,
    test_corpora: Sequence[str] = (),
    val_fraction: float = 0.15,
) -> Split:
    """Dispatch on the protocol name, as set by `data.split.protocol`."""
    if protocol in ("speaker_independent", "emobox"):
        return speaker_independent_split(clips, fold, n_val_speakers, seed, test_corpus,
                                         val_fraction, protocol)
    if protocol == "cross_corpus":
        return cross_corpus_split(clips, test_corpora, n_val_speakers, seed, val_fraction)
    if protocol == "random":
        return random_split(clips, test_fraction, seed, rows_leak)
    raise ValueError(f"unknown split protocol {protocol!r}; choose from {PROTOCOLS}")


def fold_corpus(clips: Sequence[Clip], test_corpus: str | None = None) -> str:
    """The corpus whose speakers are folded: the named one, RAVDESS if present, else the first."""
    present = list(dict.fromkeys(c.corpus for c in clips))
    if test_corpus is not None:
        if present and test_corpus not in present:
            raise ValueError(f"split.test_corpus {test_corpus!r} is not among {present}")
        return test_corpus
    return "ravdess" if "ravdess" in present or not present else present[0]


def corpus_folds(
    clips: Sequence[Clip], corpus: str, protocol: str = "speaker_independent"
) -> list[tuple[str, ...]]:
    """Test-speaker folds of one corpus: RAVDESS's fixed 6 (or EmoBox's, for the `emobox`
    protocol), EmoDB's fixed 5, else up to 6 held-out groups.

    Speakers are sorted within each gender and dealt round-robin, one gender after the
    other, so each fold gets its share of both and the folds never change with the data's
    order.
    """
    if protocol == "emobox":
        if corpus != "ravdess":
            raise ValueError(f"split=emobox has folds for ravdess only, not {corpus}")
        return _numbered(corpus, EMOBOX_RAVDESS_FOLDS)
    if corpus == "ravdess":
        return _numbered(corpus, RAVDESS_FOLDS)
    if corpus == "emodb":
        return _numbered(corpus, EMODB_FOLDS)
    by_gender: dict[str, list[str]] = {}
    for spk, gender in sorted({(c.speaker, c.gender) for c in clips if c.corpus == corpus}):
        by_gender.setdefault(gender, []).append(spk)
    speakers = [s for g in sorted(by_gender) for s in by_gender[g]]
    n_folds = min(MAX_FOLDS, len(speakers))
    return [tuple(sorted(speakers[i::n_folds])) for i in range(n_folds)]


def _numbered(corpus: str, folds: Sequence[Sequence[int]]) -> list[tuple[str, ...]]:
    """Speaker ids ("ravdess:01") of folds given as speaker numbers."""
    return [tuple(f"{corpus}:{s:02d}" for s in fold) for fold in folds]


def speaker_independent_split(
    clips: Sequence[Clip],
    fold: int,
    n_val_speakers: int = 4,
    seed: int = 0,
    test_corpus: str | None = None,
    val_fraction: float = 0.15,
    protocol: str = "speaker_independent",
) -> Split:
    """Fold `fold` (1-based) of the fold corpus's speakers; validation speakers seeded."""
    corpus = fold_corpus(clips, test_corpus)
    folds = corpus_folds(clips, corpus, protocol)
    if not 1 <= fold <= len(folds):
        raise ValueError(f"data.fold must be 1..{len(folds)} for {corpus}, got {fold}")
    test_speakers = set(folds[fold - 1])
    if not test_speakers & {c.speaker for c in clips}:
        raise ValueError(f"fold {fold}: none of its test actors {sorted(test_speakers)} present")
    # validation measures what test measures: unseen speakers of the same corpus
    same_corpus = [c for c in clips if c.corpus == corpus]
    assigned = _assign(clips, test_speakers, same_corpus, n_val_speakers, seed + fold,
                       val_fraction)
    return _checked_split(clips, assigned, protocol, fold, test_speakers)


def cross_corpus_split(
    clips: Sequence[Clip],
    test_corpora: Sequence[str],
    n_val_speakers: int = 4,
    seed: int = 0,
    val_fraction: float = 0.15,
) -> Split:
    """Every clip of `test_corpora` is test; the other corpora train, some speakers validate."""
    test_corpora = list(test_corpora)
    present = {c.corpus for c in clips}
    if not test_corpora or not set(test_corpora) <= present:
        raise ValueError(f"split.test_corpora {test_corpora} must name loaded corpora "
                         f"({sorted(present)})")
    if present <= set(test_corpora):
        raise ValueError("cross_corpus needs at least one training corpus besides the test ones")
    test_speakers = {c.speaker for c in clips if c.corpus in test_corpora}
    rest = [c for c in clips if c.corpus not in test_corpora]
    assigned = _assign(clips, test_speakers, rest, n_val_speakers, seed, val_fraction)
    return _checked_split(clips, assigned, "cross_corpus", None, test_speakers)


def _checked_split(clips: Sequence[Clip], assigned: tuple[list[int], list[int], list[int]],
                   protocol: str, fold: int | None, test_speakers: set[str]) -> Split:
    """The Split of (train, val, test) indices, after the leak guard has passed it."""
    split = Split(*assigned, protocol, fold, test_speakers=tuple(sorted(test_speakers)))
    check_no_leak(clips, split)
    return split


def _assign(
    clips: Sequence[Clip],
    test_speakers: set[str],
    val_pool: Sequence[Clip],
    n_val_speakers: int,
    seed: int,
    val_fraction: float,
) -> tuple[list[int], list[int], list[int]]:
    """Indices of train, val and test; val speakers come from `val_pool`.

    At least one speaker of the pool stays in training. A pool with a single non-test
    speaker (TESS: OAF tests, YAF is all that is left) validates on a seeded fraction of
    that speaker's clips instead: still never a test speaker.
    """
    candidates = {c.speaker for c in val_pool} - test_speakers
    n_val = min(_capped(val_pool, n_val_speakers), len(candidates) - 1)
    val_speakers = _pick_val_speakers(val_pool, test_speakers, n_val, seed) if n_val > 0 else set()
    train, val, test = [], [], []
    for i, clip in enumerate(clips):
        if clip.speaker in test_speakers:
            test.append(i)
        elif clip.speaker in val_speakers:
            val.append(i)
        else:
            train.append(i)
    if not val_speakers and n_val_speakers > 0:
        pool = candidates or {clips[i].speaker for i in train}
        train, val = _clip_holdout(clips, train, pool, val_fraction, seed)
    return train, val, test


def _capped(val_pool: Sequence[Clip], n_val_speakers: int) -> int:
    """n_val_speakers, at most the corpus's cap when the pool is one corpus (EmoDB: 2)."""
    corpora = {c.corpus for c in val_pool}
    cap = MAX_VAL_SPEAKERS.get(corpora.pop()) if len(corpora) == 1 else None
    return n_val_speakers if cap is None else min(n_val_speakers, cap)


def _clip_holdout(
    clips: Sequence[Clip], train: list[int], pool: set[str], fraction: float, seed: int
) -> tuple[list[int], list[int]]:
    """Move a seeded `fraction` of the pool speakers' training clips to validation."""
    eligible = [i for i in train if clips[i].speaker in pool]
    if not eligible:
        return train, []
    chosen = set(_random.Random(seed).sample(eligible, max(1, round(fraction * len(eligible)))))
    return [i for i in train if i not in chosen], sorted(chosen)


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
    return Split(train, list(test), test, "random", None, rows_leak=rows_leak, seed=seed,
                 test_fraction=test_fraction)


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
