"""Classification metrics derived from one confusion matrix, so every report agrees.

Names are fixed: `wa` (accuracy), `ua` (mean per-class recall), `macro_f1`.
Classes absent from the targets are left out of the macro averages (cross-corpus
tests cover a subset of the labels); predicting such a class still costs the true
class's recall. So `ua` is scikit-learn's `balanced_accuracy_score` exactly, and
`macro_f1` is `f1_score(average="macro", labels=<classes in the targets>)`, which is
sklearn's default `average="macro"` whenever every class occurs in the targets (its
default would add a 0 for each predicted-but-absent class). tests/test_metrics.py checks both.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def confusion_matrix(targets: Sequence[int], preds: Sequence[int], n_classes: int) -> np.ndarray:
    """Rows are true classes, columns predictions."""
    cm = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(cm, (np.asarray(targets), np.asarray(preds)), 1)
    return cm


def metrics_from_confusion(cm: np.ndarray, class_names: Sequence[str]) -> dict:
    """wa, ua, macro_f1, per-class recall/precision/f1/support and the matrix itself."""
    cm = np.asarray(cm, dtype=np.float64)
    support = cm.sum(axis=1)
    predicted = cm.sum(axis=0)
    tp = np.diag(cm)
    present = support > 0
    recall = np.divide(tp, support, out=np.zeros_like(tp), where=present)
    precision = np.divide(tp, predicted, out=np.zeros_like(tp), where=predicted > 0)
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros_like(tp), where=denom > 0)
    total = cm.sum()
    return {
        "wa": float(tp.sum() / total) if total else 0.0,
        "ua": float(recall[present].mean()) if present.any() else 0.0,
        "macro_f1": float(f1[present].mean()) if present.any() else 0.0,
        "per_class": {
            name: {
                "recall": float(recall[i]),
                "precision": float(precision[i]),
                "f1": float(f1[i]),
                "support": int(support[i]),
            }
            for i, name in enumerate(class_names)
        },
        "confusion": cm.astype(np.int64).tolist(),
        "classes": list(class_names),
    }
