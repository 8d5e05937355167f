"""The project's labels: RAVDESS's eight emotions, then those only other corpora have."""

from __future__ import annotations

# RAVDESS's eight, in RAVDESS code order (its parser decodes codes 01-08 with it).
EMOTIONS: tuple[str, ...] = (
    "neutral",
    "calm",
    "happy",
    "sad",
    "angry",
    "fearful",
    "disgust",
    "surprised",
)

# Every label a corpus can produce: EMOTIONS first, so classes of runs on the existing
# corpora keep their order and indices; each new label is appended, never inserted.
LABELS: tuple[str, ...] = (*EMOTIONS, "boredom")  # boredom: EmoDB only


def label_index(emotion: str, classes: tuple[str, ...] = LABELS) -> int:
    """Index of `emotion` in `classes`, with an error that lists the known labels."""
    try:
        return classes.index(emotion)
    except ValueError:
        raise ValueError(f"unknown emotion {emotion!r}; known: {', '.join(classes)}") from None
