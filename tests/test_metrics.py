import numpy as np
import pytest

from ser.evaluation.metrics import confusion_matrix, metrics_from_confusion


def test_metrics_on_a_known_confusion():
    targets = [0, 0, 0, 0, 1, 1, 2, 2]
    preds = [0, 0, 0, 1, 1, 0, 2, 2]
    cm = confusion_matrix(targets, preds, 3)
    assert cm.tolist() == [[3, 1, 0], [1, 1, 0], [0, 0, 2]]
    m = metrics_from_confusion(cm, ["a", "b", "c"])
    assert m["wa"] == pytest.approx(6 / 8)
    assert m["ua"] == pytest.approx((3 / 4 + 1 / 2 + 1) / 3)
    f1_a = 2 * (3 / 4 * 3 / 4) / (3 / 4 + 3 / 4)
    f1_b = 2 * (1 / 2 * 1 / 2) / 1
    assert m["macro_f1"] == pytest.approx((f1_a + f1_b + 1) / 3)
    assert m["per_class"]["b"] == {"recall": 0.5, "precision": 0.5, "f1": 0.5, "support": 2}


def test_classes_without_support_leave_the_macro_averages():
    cm = np.array([[2, 0, 0], [0, 0, 0], [1, 0, 1]])
    m = metrics_from_confusion(cm, ["a", "b", "c"])
    assert m["ua"] == pytest.approx((1 + 0.5) / 2)
