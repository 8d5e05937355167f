"""ser-ensemble: per-fold weights chosen on validation actors, never on test labels."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from ser.evaluation.ensemble import EnsembleError, choose_weight, ensemble, main, read_predictions

CLASSES = ["neutral", "happy", "sad"]


def write_run(run: Path, fold: int, val: np.ndarray, test: np.ndarray, val_y, test_y,
              version: str = "original") -> None:
    run.mkdir(parents=True)
    label = f"speaker-independent, fold {fold}"
    split = {"protocol": "speaker_independent", "fold": fold, "tested_corpora": ["ravdess"]}
    (run / "metrics.json").write_text(json.dumps({"protocol": label, "split": split}))
    for name, probs, ys in (("val_predictions.csv", val, val_y), ("predictions.csv", test, test_y)):
        with open(run / name, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["path", "speaker", "version", "true", "pred", *CLASSES, "protocol"])
            for i, (p, y) in enumerate(zip(probs, ys, strict=True)):
                w.writerow([f"/d/{name[:3]}{i}.wav", "ravdess:01", version, CLASSES[y],
                            CLASSES[int(np.argmax(p))], *p, label])


def one_hot(preds, sure=0.6):
    n = len(CLASSES)
    out = np.full((len(preds), n), (1 - sure) / (n - 1))
    out[np.arange(len(preds)), preds] = sure
    return out


@pytest.fixture
def sweeps(tmp_path):
    """A is right on validation and wrong on test, B the reverse: the chosen weight must
    follow validation, whatever the test labels say."""
    y = np.array([0, 1, 2, 0, 1, 2])
    wrong = (y + 1) % 3
    write_run(tmp_path / "a" / "0", 1, one_hot(y), one_hot(wrong), y, y)
    # B averaged test-time versions: its rows name them; clips still pair up by path
    write_run(tmp_path / "b" / "0", 1, one_hot(wrong, sure=0.9), one_hot(y), y, y,
              version="original+speed0.9")
    return tmp_path / "a", tmp_path / "b"


def test_the_weight_follows_validation_not_test(sweeps):
    summary = ensemble(*sweeps, step=0.25)
    fold = summary["folds"]["speaker_independent fold 1 ravdess"]
    # w = 0.75 and 1 are both right on every validation clip; the tie goes nearer 0.5
    assert fold["weight_a"] == 0.75 and fold["val_ua"] == 1.0
    assert fold["ua"] == 0.0 == summary["ua"]["mean"]  # A's test predictions, all wrong
    assert fold["test_ua_b"] == 1.0


def test_ties_go_to_the_even_mix():
    y = np.array([0, 1, 2])
    same = read_like(one_hot(y), y)
    w, ua = choose_weight(same, same, np.array([0.0, 0.25, 0.5, 0.75, 1.0]))
    assert (w, ua) == (0.5, 1.0)


def read_like(probs, y):
    from ser.evaluation.ensemble import Scored

    return Scored([str(i) for i in range(len(y))], np.asarray(y), probs, CLASSES)


def test_folds_pair_up_by_split_and_fold_whatever_the_protocol_label(sweeps, tmp_path):
    metrics = sweeps[1] / "0" / "metrics.json"
    report = json.loads(metrics.read_text())
    metrics.write_text(json.dumps({**report, "protocol": report["protocol"] + ", speaker-"
                                   "normalised (test speakers' own unlabelled clips)"}))
    fold = ensemble(*sweeps)["folds"]["speaker_independent fold 1 ravdess"]
    assert fold["protocol_b"].endswith("speaker-normalised (test speakers' own unlabelled clips)")
    other = tmp_path / "c" / "0"
    y = np.array([0, 1, 2, 0, 1, 2])
    write_run(other, 2, one_hot(y), one_hot(y), y, y)
    with pytest.raises(EnsembleError, match="share no fold"):
        ensemble(sweeps[0], tmp_path / "c")


def test_runs_that_scored_different_clips_are_refused(sweeps, tmp_path):
    other = tmp_path / "c" / "0"
    y = np.array([0, 1, 2, 0, 1, 2])
    write_run(other, 1, one_hot(y), one_hot(y), y, y)
    (other / "predictions.csv").write_text(
        (other / "predictions.csv").read_text().replace("/d/pre0.wav", "/d/elsewhere.wav"))
    with pytest.raises(EnsembleError, match="scored different clips"):
        ensemble(sweeps[0], tmp_path / "c")


def test_a_file_with_several_rows_per_clip_is_refused(sweeps):
    path = sweeps[0] / "0" / "predictions.csv"
    lines = path.read_text().splitlines()
    path.write_text("\n".join([*lines, lines[1].replace(",original,", ",noise,")]) + "\n")
    with pytest.raises(EnsembleError, match="a clip has several rows"):
        ensemble(*sweeps)


def test_a_run_without_validation_predictions_is_named(sweeps):
    missing = sweeps[1] / "0" / "val_predictions.csv"
    missing.unlink()
    with pytest.raises(EnsembleError, match=f"{missing}: missing"):
        ensemble(*sweeps)
    with pytest.raises(SystemExit, match="ser-ensemble: .*val_predictions.csv: missing"):
        main([str(s) for s in sweeps])


def test_the_command_writes_its_table(sweeps, tmp_path, capsys):
    main([str(sweeps[0]), str(sweeps[1]), "--out", str(tmp_path / "out"), "--step", "0.5"])
    table = capsys.readouterr().out
    assert "| speaker_independent fold 1 ravdess | 1.00 |" in table  # 0.5 mixes wrongly
    assert json.loads((tmp_path / "out" / "ensemble.json").read_text())["ua"]["mean"] == 0.0


def test_a_training_run_writes_its_validation_predictions(tmp_path, generated_data_dir):
    """The best checkpoint's probabilities on the validation actors only, one row each."""
    from ser.training.train import train
    from tests.conftest import train_cfg

    train(train_cfg(tmp_path, generated_data_dir, "logger=none", "trainer.max_epochs=1",
                    "data.batch_size=8", "data.n_jobs=0"))
    val = read_predictions(tmp_path / "run" / "val_predictions.csv")
    test = read_predictions(tmp_path / "run" / "predictions.csv")
    with open(tmp_path / "run" / "val_predictions.csv") as f:
        speakers = {r["speaker"] for r in csv.DictReader(f)}
    with open(tmp_path / "run" / "predictions.csv") as f:
        test_speakers = {r["speaker"] for r in csv.DictReader(f)}
    assert len(speakers) == 4 and not speakers & test_speakers
    assert len(val.keys) == len(set(val.keys)) > 0 and val.classes == test.classes
    np.testing.assert_allclose(val.probs.sum(axis=1), 1.0, atol=1e-5)
