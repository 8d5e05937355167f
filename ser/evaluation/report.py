"""Writing an evaluation run's files: metrics.json, confusion.png, predictions.csv."""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ser.data.clip import Clip
from ser.evaluation.plots import save_confusion_png

# predictions.csv / val_predictions.csv: these columns, then one per class, then "protocol"
PREDICTION_COLUMNS = ("path", "speaker", "version", "true", "pred")
LEAKY_LABEL = "LEAKY (seed's random split: speakers shared between train and test)"


def protocol_label(protocol: dict) -> str:
    """One line saying how the test set was chosen; leaky protocols say so loudly."""
    if protocol.get("leaky"):
        return LEAKY_LABEL
    tested = list(protocol.get("tested_corpora") or [])
    if protocol.get("protocol") == "cross_corpus":
        trained = "+".join(protocol.get("trained_corpora") or ["?"])
        return (f"cross-corpus, trained on {trained}, tested on {'+'.join(tested)}"
                f"{_norm_label(protocol)}")
    where = f"{tested[0]} " if tested and tested != ["ravdess"] else ""
    if protocol.get("protocol") == "emobox":
        where += "EmoBox "
    return f"speaker-independent, {where}fold {protocol.get('fold')}{_norm_label(protocol)}"


def _norm_label(protocol: dict) -> str:
    """How a speaker-normalised run's test clips were normalised (nothing for single clips,
    the default protocol)."""
    if protocol.get("speaker_norm", "none") == "none":
        return ""
    if protocol.get("speaker_norm_test") == "global":
        return ", speaker-normalised model without enrolment (training statistics)"
    return ", speaker-normalised (test speakers' own unlabelled clips)"


def fallback_label(protocol: dict) -> str:
    """The label of the no-enrolment test of a speaker-normalised run."""
    return protocol_label({**protocol, "speaker_norm_test": "global"})


def write_report(
    out_dir: Path,
    metrics: dict,
    rows: Sequence[tuple[Clip, str]],
    probs: np.ndarray | None,
    protocol: dict,
    checkpoint: str = "",
    extra: dict | None = None,
) -> dict:
    """Write the three report files into `out_dir` and return the metrics written;
    `extra` entries (further test sets, model facts) go into metrics.json beside them."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    label = protocol_label(protocol)
    payload = {**metrics, "protocol": label, "split": protocol, "checkpoint": str(checkpoint),
               **(extra or {})}
    (out_dir / "metrics.json").write_text(json.dumps(payload, indent=2))
    save_confusion_png(
        np.array(metrics["confusion"]), metrics["classes"], out_dir / "confusion.png",
        title=f"UA {100 * metrics['ua']:.1f}  WA {100 * metrics['wa']:.1f} | {label}"[:90],
    )
    if probs is not None:
        write_predictions(out_dir / "predictions.csv", rows, probs, metrics["classes"], label)
    return payload


def write_predictions(
    path: Path,
    rows: Sequence[tuple[Clip, str]],
    probs: np.ndarray,
    classes: Sequence[str],
    protocol: str,
) -> None:
    if len(rows) != len(probs):
        raise ValueError(f"{len(rows)} rows but {len(probs)} predictions")
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow([*PREDICTION_COLUMNS, *classes, "protocol"])
        for (clip, version), p in zip(rows, probs, strict=False):
            pred = classes[int(np.argmax(p))]
            writer.writerow([clip.path, clip.speaker, version, clip.emotion, pred,
                             *(f"{x:.7f}" for x in p), protocol])
