"""Confusion-matrix figure, shared by TensorBoard logging and evaluation reports."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: runs in CI and on servers
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def confusion_figure(cm: np.ndarray, class_names: Sequence[str], title: str = "") -> plt.Figure:
    """Row-normalised colours (recall), raw counts written in each cell."""
    cm = np.asarray(cm)
    rows = cm.sum(axis=1, keepdims=True)
    norm = np.divide(cm, rows, out=np.zeros(cm.shape), where=rows > 0)
    fig, ax = plt.subplots(figsize=(6.4, 5.6))
    ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ticks = range(len(class_names))
    ax.set_xticks(ticks, class_names, rotation=45, ha="right")
    ax.set_yticks(ticks, class_names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for i in ticks:
        for j in ticks:
            colour = "white" if norm[i, j] > 0.5 else "black"
            ax.text(j, i, int(cm[i, j]), ha="center", va="center", color=colour, fontsize=8)
    if title:
        ax.set_title(title)
    fig.tight_layout()
    return fig


def save_confusion_png(
    cm: np.ndarray, class_names: Sequence[str], path: Path, title: str = ""
) -> Path:
    fig = confusion_figure(cm, class_names, title)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
