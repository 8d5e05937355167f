"""The project's label space: RAVDESS's eight emotions, in RAVDESS code order."""

from __future__ import annotations

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


def label_index(emotion: str, classes: tuple[str, ...] = EMOTIONS) -> int:
    """Index of `emotion` in `classes`, with an error that lists the known labels."""
    try:
        return classes.index(emotion)
    except ValueError:
        raise ValueError(f"unknown emotion {emotion!r}; known: {', '.join(classes)}") from None
