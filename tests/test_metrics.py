import warnings

import numpy as np
import pytest
from sklearn import metrics as sk

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


# -- agreement with scikit-learn -----------------------------------------------------------


def ours(targets: np.ndarray, preds: np.ndarray, n_classes: int) -> dict:
    cm = confusion_matrix(targets, preds, n_classes)
    return metrics_from_confusion(cm, [f"c{i}" for i in range(n_classes)])


def assert_matches_sklearn(targets: np.ndarray, preds: np.ndarray, n_classes: int) -> dict:
    """UA is balanced_accuracy_score; macro-F1 averages over the classes in the targets."""
    m = ours(targets, preds, n_classes)
    labels = list(range(n_classes))
    present = sorted(set(targets.tolist()))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # sklearn warns about classes absent from targets
        ua = sk.balanced_accuracy_score(targets, preds)
    assert m["wa"] == pytest.approx(sk.accuracy_score(targets, preds), rel=1e-12)
    assert m["ua"] == pytest.approx(ua, rel=1e-12)
    f1 = sk.f1_score(targets, preds, labels=present, average="macro", zero_division=0)
    assert m["macro_f1"] == pytest.approx(f1, rel=1e-12, abs=1e-15)
    if present == labels:  # then sklearn's default label set is ours too
        assert m["macro_f1"] == pytest.approx(sk.f1_score(targets, preds, average="macro"),
                                              rel=1e-12, abs=1e-15)
    np.testing.assert_array_equal(m["confusion"], sk.confusion_matrix(targets, preds,
                                                                      labels=labels))
    p, r, f, s = sk.precision_recall_fscore_support(targets, preds, labels=labels,
                                                    zero_division=0)
    for i in labels:
        row = m["per_class"][f"c{i}"]
        got = [row["precision"], row["recall"], row["f1"]]
        np.testing.assert_allclose(got, [p[i], r[i], f[i]], rtol=1e-12, atol=1e-15)
        assert row["support"] == s[i]
    return m


def test_many_random_prediction_sets_match_sklearn():
    rng = np.random.default_rng(0)
    absent = never_predicted = 0
    for _ in range(250):
        n = int(rng.integers(2, 9))
        in_targets = rng.choice(n, size=int(rng.integers(1, n + 1)), replace=False)
        targets = rng.choice(in_targets, size=int(rng.integers(1, 120)))
        skill = rng.uniform(0, 1)  # chance of copying the target, else a random class
        guesses = rng.choice(rng.choice(n, size=int(rng.integers(1, n + 1)), replace=False),
                             size=targets.size)
        preds = np.where(rng.uniform(size=targets.size) < skill, targets, guesses)
        assert_matches_sklearn(targets, preds, n)
        absent += len(set(targets.tolist())) < n
        never_predicted += len(set(preds.tolist())) < n
    assert absent > 60 and never_predicted > 60  # both cases were exercised often


def test_a_class_absent_from_targets_but_predicted():
    """Predicting an absent class only costs the true class's recall; it is not averaged."""
    targets = np.array([0, 0, 1, 1, 1, 2])
    preds = np.array([0, 3, 1, 1, 3, 2])  # class 3 never occurs in the targets
    m = assert_matches_sklearn(targets, preds, 4)
    assert m["ua"] == pytest.approx((1 / 2 + 2 / 3 + 1) / 3)
    assert m["per_class"]["c3"] == {"recall": 0.0, "precision": 0.0, "f1": 0.0, "support": 0}
    # sklearn's default label set (targets and predictions) would also average in c3's 0
    assert m["macro_f1"] > sk.f1_score(targets, preds, average="macro")


def test_a_class_never_predicted_counts_zero():
    targets = np.array([0, 0, 1, 1, 2, 2])
    preds = np.array([0, 0, 0, 1, 0, 1])  # class 2 never predicted
    m = assert_matches_sklearn(targets, preds, 3)
    assert m["per_class"]["c2"] == {"recall": 0.0, "precision": 0.0, "f1": 0.0, "support": 2}
    assert m["ua"] == pytest.approx((1 + 1 / 2 + 0) / 3)


def test_a_ravdess_shaped_fold_matches_sklearn():
    """4 test actors: 16 neutral, 32 of each other emotion; a middling, confused model."""
    rng = np.random.default_rng(7)
    targets = np.repeat(np.arange(8), [16] + [32] * 7)
    recall = np.array([0.3, 0.8, 0.6, 0.4, 0.7, 0.5, 0.45, 0.65])
    right = rng.uniform(size=targets.size) < recall[targets]
    neighbour = (targets + rng.choice([-1, 1], size=targets.size)) % 8
    preds = np.where(right, targets, neighbour)
    m = assert_matches_sklearn(targets, preds, 8)
    assert abs(m["ua"] - m["wa"]) > 1e-3  # unequal supports: the two accuracies differ


def test_nothing_to_score_gives_zeros():
    m = metrics_from_confusion(np.zeros((3, 3), dtype=int), ["a", "b", "c"])
    assert (m["wa"], m["ua"], m["macro_f1"]) == (0.0, 0.0, 0.0)
