"""Average two recipes' probabilities per fold, with the weight chosen on validation actors.

    ser-ensemble SWEEP_A SWEEP_B [--out DIR] [--step 0.05]

Each sweep holds one run per fold (`metrics.json`, `predictions.csv` and
`val_predictions.csv`, which `train.py` writes). For every fold both sweeps ran, the
weight w of `w * p_A + (1 - w) * p_B` is the one with the highest UA on that fold's
validation actors (ties: the w nearest 0.5); the test clips are then scored once with it.
No test label enters the choice. Runs pair up by split protocol and fold; the two runs of
a fold must have scored the same clips with the same labels and classes. A run's own
protocol (single clips or speaker-normalised) is listed beside it: mixing in a
speaker-normalised run makes the ensemble speaker-normalised too.

Writes `ensemble.json` and `ensemble.md` into --out (default: SWEEP_A/ensemble_with_<B>).
"""

from __future__ import annotations

import argparse
import csv
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ser.evaluation.aggregate import KEYS, mean_std
from ser.evaluation.metrics import confusion_matrix, metrics_from_confusion
from ser.evaluation.report import PREDICTION_COLUMNS


class EnsembleError(ValueError):
    """Two sweeps that can't be combined; the message names the files."""


@dataclass(frozen=True)
class Scored:
    """One predictions file: rows keyed by clip path (a row is a clip, its test-time
    versions already averaged by the model that wrote it), labels, probabilities."""
    keys: list[str]
    labels: np.ndarray
    probs: np.ndarray
    classes: list[str]


def read_predictions(path: Path) -> Scored:
    if not path.is_file():
        raise EnsembleError(f"{path}: missing (runs trained before val_predictions.csv "
                            f"existed need training again)")
    with open(path, newline="") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        lead = len(PREDICTION_COLUMNS)
        if not header or tuple(header[:lead]) != PREDICTION_COLUMNS:
            raise EnsembleError(f"{path}: not a predictions file (header {header})")
        classes = header[lead:-1]
        rows = list(reader)
    index = {c: i for i, c in enumerate(classes)}
    try:
        labels = np.array([index[r[3]] for r in rows], dtype=np.int64)
        probs = np.array([[float(x) for x in r[lead:-1]] for r in rows], dtype=np.float64)
    except (KeyError, ValueError, IndexError) as err:
        raise EnsembleError(f"{path}: unreadable row ({err})") from None
    keys = [r[0] for r in rows]
    if len(set(keys)) != len(keys):
        raise EnsembleError(f"{path}: a clip has several rows (versions scored apart, as in the "
                            f"leaky random protocol); ensembles take one row per clip")
    return Scored(keys, labels, probs.reshape(len(rows), -1), classes)


def fold_key(report: dict) -> str:
    """Which test set a run scored: its split's protocol, fold and tested corpora (a
    speaker-normalised and a single-clip run of one fold share it)."""
    split = report.get("split") or {}
    corpora = "+".join(split.get("tested_corpora") or [])
    return f"{split.get('protocol', '?')} fold {split.get('fold', '?')} {corpora}".strip()


def runs_by_fold(sweep: Path) -> dict[str, Path]:
    """Run folders of a sweep, keyed by the test set they scored (one fold each)."""
    runs = {}
    for metrics in sorted(Path(sweep).rglob("metrics.json")):
        label = fold_key(json.loads(metrics.read_text()))
        if label in runs:
            raise EnsembleError(f"{sweep}: two runs of {label!r}: {runs[label]}, {metrics.parent}")
        runs[label] = metrics.parent
    if not runs:
        raise EnsembleError(f"{sweep}: no metrics.json found below it")
    return runs


def _aligned(a: Scored, b: Scored, where: str) -> np.ndarray:
    """b's row order matching a's keys; refuses different clips, classes or labels."""
    if a.classes != b.classes:
        raise EnsembleError(f"{where}: classes differ ({a.classes} vs {b.classes})")
    position = {k: i for i, k in enumerate(b.keys)}
    if set(position) != set(a.keys):
        raise EnsembleError(f"{where}: the two runs scored different clips")
    order = np.array([position[k] for k in a.keys], dtype=np.int64)
    if not np.array_equal(a.labels, b.labels[order]):
        raise EnsembleError(f"{where}: the two runs disagree on the clips' labels")
    return order


def _scores(labels: np.ndarray, probs: np.ndarray, classes: list[str]) -> dict:
    """Every metric of the clips' argmax predictions."""
    cm = confusion_matrix(labels, probs.argmax(axis=1), len(classes))
    return metrics_from_confusion(cm, classes)


def choose_weight(val_a: Scored, val_b: Scored, weights: np.ndarray) -> tuple[float, float]:
    """(w, validation UA) of the best mix; ties go to the w nearest 0.5."""
    order = _aligned(val_a, val_b, "validation")
    scores = [_scores(val_a.labels, w * val_a.probs + (1 - w) * val_b.probs[order],
                  val_a.classes)["ua"] for w in weights]
    best = max(range(len(weights)), key=lambda i: (round(scores[i], 12), -abs(weights[i] - 0.5)))
    return float(weights[best]), float(scores[best])


def ensemble_fold(run_a: Path, run_b: Path, weights: np.ndarray) -> dict:
    val_a = read_predictions(run_a / "val_predictions.csv")
    val_b = read_predictions(run_b / "val_predictions.csv")
    w, val_ua = choose_weight(val_a, val_b, weights)
    test_a = read_predictions(run_a / "predictions.csv")
    test_b = read_predictions(run_b / "predictions.csv")
    order = _aligned(test_a, test_b, f"{run_a} / {run_b}")
    mixed = _scores(test_a.labels, w * test_a.probs + (1 - w) * test_b.probs[order],
                    test_a.classes)
    protocols = [json.loads((r / "metrics.json").read_text()).get("protocol", "?")
                 for r in (run_a, run_b)]
    return {"run_a": str(run_a), "run_b": str(run_b), "protocol_a": protocols[0],
            "protocol_b": protocols[1], "weight_a": w, "val_ua": val_ua,
            "val_ua_a": _scores(val_a.labels, val_a.probs, val_a.classes)["ua"],
            "val_ua_b": _scores(val_b.labels, val_b.probs, val_b.classes)["ua"],
            "test_ua_a": _scores(test_a.labels, test_a.probs, test_a.classes)["ua"],
            "test_ua_b": _scores(test_b.labels, test_b.probs, test_b.classes)["ua"],
            **{k: mixed[k] for k in KEYS}, "confusion": mixed["confusion"]}


def ensemble(sweep_a: Path, sweep_b: Path, step: float = 0.05) -> dict:
    if not 0 < step <= 1:
        raise EnsembleError(f"--step must be in (0, 1], got {step}")
    weights = np.round(np.arange(0.0, 1.0 + step / 2, step), 6)
    runs_a, runs_b = runs_by_fold(sweep_a), runs_by_fold(sweep_b)
    common = sorted(set(runs_a) & set(runs_b))
    if not common:
        raise EnsembleError(f"{sweep_a} and {sweep_b} share no fold (protocols "
                            f"{sorted(runs_a)} vs {sorted(runs_b)})")
    folds = {label: ensemble_fold(runs_a[label], runs_b[label], weights) for label in common}
    summary = {"sweep_a": str(sweep_a), "sweep_b": str(sweep_b), "folds": folds,
               "missing": sorted(set(runs_a) ^ set(runs_b))}
    summary.update(mean_std(list(folds.values()), (*KEYS, "val_ua", "val_ua_a", "val_ua_b",
                                                  "test_ua_a", "test_ua_b")))
    return summary


def to_markdown(summary: dict) -> str:
    pct = lambda x: f"{100 * x:.1f}"  # noqa: E731
    first = next(iter(summary["folds"].values()))
    lines = [f"A: {summary['sweep_a']} ({first['protocol_a']})",
             f"B: {summary['sweep_b']} ({first['protocol_b']})", "",
             "| fold | weight of A | val UA A / B / mix | test UA A / B | test UA mix | WA "
             "| macro-F1 |",
             "|---|---|---|---|---|---|---|"]
    for label, f in summary["folds"].items():
        lines.append(f"| {label} | {f['weight_a']:.2f} | {pct(f['val_ua_a'])} / "
                     f"{pct(f['val_ua_b'])} / {pct(f['val_ua'])} | {pct(f['test_ua_a'])} / "
                     f"{pct(f['test_ua_b'])} | {pct(f['ua'])} | {pct(f['wa'])} | "
                     f"{pct(f['macro_f1'])} |")
    ms = lambda k: f"{pct(summary[k]['mean'])} ± {pct(summary[k]['std'])}"  # noqa: E731
    lines.append(f"| mean ± std ({len(summary['folds'])} folds) | | {ms('val_ua_a')} / "
                 f"{ms('val_ua_b')} / {ms('val_ua')} | {ms('test_ua_a')} / {ms('test_ua_b')} | "
                 f"**{ms('ua')}** | {ms('wa')} | {ms('macro_f1')} |")
    if summary["missing"]:
        lines += ["", f"Run in one sweep only (left out): {'; '.join(summary['missing'])}"]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sweep_a", type=Path)
    parser.add_argument("sweep_b", type=Path)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--step", type=float, default=0.05, help="grid step of the weight")
    args = parser.parse_args(argv)
    try:
        summary = ensemble(args.sweep_a, args.sweep_b, args.step)
    except EnsembleError as err:
        raise SystemExit(f"ser-ensemble: {err}") from None
    out = args.out or args.sweep_a / f"ensemble_with_{args.sweep_b.name}"
    out.mkdir(parents=True, exist_ok=True)
    (out / "ensemble.json").write_text(json.dumps(summary, indent=2))
    (out / "ensemble.md").write_text(to_markdown(summary))
    print(to_markdown(summary), end="")


if __name__ == "__main__":
    main()
