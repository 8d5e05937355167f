"""Which emotions a run classifies: merging and dropping labels, and what corpora share.

Every parser maps its corpus into the project's labels (`LABELS`: RAVDESS's eight,
then boredom, which only EmoDB has). A `LabelSpace` then merges labels (calm into
neutral, for 7-class comparisons) or drops them (surprised, for CREMA-D's 6), and a
run's classes are the space's labels that its corpora can produce, in `LABELS` order.
"""

from __future__ import annotations

import dataclasses
import logging
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from ser.data.clip import Clip
from ser.data.labels import EMOTIONS, LABELS

# What each corpus can produce, already mapped into LABELS.
CORPUS_EMOTIONS: dict[str, frozenset[str]] = {
    "ravdess": frozenset(EMOTIONS),
    "crema_d": frozenset({"angry", "disgust", "fearful", "happy", "neutral", "sad"}),
    "tess": frozenset(EMOTIONS) - {"calm"},
    "savee": frozenset(EMOTIONS) - {"calm"},
    "emodb": frozenset({"angry", "boredom", "disgust", "fearful", "happy", "neutral", "sad"}),
}


@dataclass(frozen=True)
class LabelSpace:
    """`merge` maps a label onto another; `drop` removes labels (and their clips)."""

    merge: Mapping[str, str] = field(default_factory=dict)
    drop: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for name in (*self.merge, *self.merge.values(), *self.drop):
            if name not in LABELS:
                known = ", ".join(LABELS)
                raise ValueError(f"unknown emotion {name!r} in labels; known: {known}")
        chained = sorted(set(self.merge) & set(self.merge.values()))
        if chained:
            raise ValueError(f"labels.merge maps onto a label that is itself merged: {chained}")
        both = sorted((set(self.merge) | set(self.merge.values())) & set(self.drop))
        if both:
            raise ValueError(f"labels {both} are both merged and dropped")

    @classmethod
    def from_config(cls, cfg: Mapping | None) -> LabelSpace:
        cfg = dict(cfg or {})
        unknown = set(cfg) - {"merge", "drop"}
        if unknown:
            raise ValueError(f"data.labels takes merge and drop, got {sorted(unknown)}")
        return cls(merge=dict(cfg.get("merge") or {}), drop=tuple(cfg.get("drop") or ()))

    def map(self, emotion: str) -> str | None:
        """The label an emotion is classified as, or None where it is dropped."""
        if emotion not in LABELS:
            raise ValueError(f"unknown emotion {emotion!r}; known: {', '.join(LABELS)}")
        if emotion in self.drop:
            return None
        return self.merge.get(emotion, emotion)

    def covers(self, corpora: Iterable[str]) -> frozenset[str]:
        """Labels (after merging and dropping) that any of `corpora` can produce."""
        out: set[str] = set()
        for corpus in corpora:
            out.update(m for e in corpus_emotions(corpus) if (m := self.map(e)) is not None)
        return frozenset(out)

    def classes(
        self, corpora: Sequence[str], test_corpora: Sequence[str] = ()
    ) -> tuple[str, ...]:
        """The run's classes: what the corpora produce; with test corpora, what both share."""
        labels = self.covers(corpora)
        if test_corpora:
            labels &= self.covers(test_corpora)
        classes = tuple(e for e in LABELS if e in labels)
        if not classes:
            raise ValueError(f"no labels left for corpora {list(corpora)} / {list(test_corpora)}")
        return classes

    def to_config(self) -> dict:
        return {"merge": dict(self.merge), "drop": list(self.drop)}


def corpus_emotions(corpus: str) -> frozenset[str]:
    if corpus not in CORPUS_EMOTIONS:
        raise ValueError(f"unknown corpus {corpus!r}; known: {', '.join(sorted(CORPUS_EMOTIONS))}")
    return CORPUS_EMOTIONS[corpus]


def keep_labelled(
    clips: Sequence[Clip], space: LabelSpace, class_names: Sequence[str], corpora: Sequence[str]
) -> list[Clip]:
    """Clips with their label mapped into `class_names`; the others left out (and logged)."""
    kept, dropped = [], Counter()
    for clip in clips:
        label = space.map(clip.emotion)
        if label in class_names:
            kept.append(dataclasses.replace(clip, emotion=label) if label != clip.emotion
                        else clip)
        else:
            dropped[f"{clip.corpus}:{clip.emotion}"] += 1
    if dropped:
        logging.getLogger(__name__).info(
            "labels outside classes %s left out: %s", class_names, dict(dropped))
    if not kept:
        raise ValueError(f"no clip of {list(corpora)} has one of the classes {class_names}")
    return kept
