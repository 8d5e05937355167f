"""Aggregate a multirun (one run per fold) into a mean ± std table.

`python -m ser.evaluation.aggregate outputs/train/multiruns/<time>` (or `ser-aggregate`)
reads every `*/metrics.json` below the folder and writes `summary.md`, `summary.json`
and `confusion.png` (the folds' confusion matrices summed) beside them. Per-class
recall is the mean over folds; a speaker-normalised sweep's no-enrolment scores get
their own row. Where every run left its `train_metrics.json`, the best validation UA of
each run (the score its checkpoint was selected on) is listed and averaged too: compare
recipes on that, not on the test scores.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import numpy as np

KEYS = ("ua", "wa", "macro_f1")


def collect(root: Path) -> list[dict]:
    """Every run's metrics.json below `root`, sorted by path."""
    files = sorted(Path(root).rglob("metrics.json"))
    if not files:
        raise FileNotFoundError(f"{root}: no metrics.json found below it")
    runs = []
    for f in files:
        data = json.loads(f.read_text())
        data["run_dir"] = str(f.parent)
        val = _val_ua(f.parent / "train_metrics.json")
        if val is not None:
            data["val_ua"] = val
        runs.append(data)
    return runs


def _val_ua(path: Path) -> float | None:
    """The best validation UA a run recorded (what its checkpoint was selected on)."""
    if not path.is_file():
        return None
    metrics = json.loads(path.read_text())
    best = metrics.get("val/ua_best", metrics.get("val/ua"))
    return None if best is None else float(best)


def summarise(runs: list[dict]) -> dict:
    """Mean and population std (as over folds) of UA, WA and macro-F1, plus per-run rows,
    per-class recall and the summed confusion matrix."""
    summary = {
        "n_runs": len(runs),
        "protocols": _protocols(runs),
        "runs": [
            {"run_dir": r["run_dir"], "fold": r.get("split", {}).get("fold"),
             **{k: r[k] for k in KEYS},
             **({"val_ua": r["val_ua"]} if "val_ua" in r else {})}
            for r in runs
        ],
        **mean_std(runs),
    }
    if all("val_ua" in r for r in runs):
        values = np.array([r["val_ua"] for r in runs], dtype=np.float64)
        summary["val_ua"] = {"mean": float(values.mean()), "std": float(values.std())}
    summary.update(_classes(runs))
    fallback = [r["no_enrolment"] for r in runs if "no_enrolment" in r]
    if len(fallback) == len(runs):
        summary["no_enrolment"] = {"protocols": _protocols(fallback), **mean_std(fallback)}
    return summary


def _protocols(runs: list[dict]) -> list[str]:
    """Distinct protocol labels, with fold numbers dropped (each run has its own)."""
    return sorted({re.sub(r"fold \d+", "each run's fold", r.get("protocol", "?")) for r in runs})


def mean_std(runs: list[dict], keys: tuple[str, ...] = KEYS) -> dict:
    """Mean and population std over runs (as over folds) of each of `keys`."""
    out = {}
    for k in keys:
        values = np.array([r[k] for r in runs], dtype=np.float64)
        out[k] = {"mean": float(values.mean()), "std": float(values.std())}
    return out


def _classes(runs: list[dict]) -> dict:
    """Mean per-class recall and the summed confusion, where every run has the same classes."""
    classes = [tuple(r.get("classes") or ()) for r in runs]
    if not classes[0] or len(set(classes)) != 1 or not all("confusion" in r for r in runs):
        return {}
    recall = {c: float(np.mean([r["per_class"][c]["recall"] for r in runs])) for c in classes[0]}
    confusion = np.sum([np.array(r["confusion"]) for r in runs], axis=0)
    return {"classes": list(classes[0]), "recall": recall, "confusion": confusion.tolist()}


def to_markdown(summary: dict) -> str:
    lines = [
        f"Protocol: {'; '.join(summary['protocols'])}",
        "",
        "| run | fold | UA | WA | macro-F1 |",
        "|---|---|---|---|---|",
    ]
    for r in summary["runs"]:
        lines.append(
            f"| {Path(r['run_dir']).name} | {r['fold']} | "
            + " | ".join(f"{100 * r[k]:.1f}" for k in KEYS) + " |"
        )
    mean = " | ".join(
        f"**{100 * summary[k]['mean']:.1f} ± {100 * summary[k]['std']:.1f}**" for k in KEYS
    )
    lines.append(f"| mean ± std ({summary['n_runs']} runs) | | {mean} |")
    if "val_ua" in summary:
        v = summary["val_ua"]
        per_run = ", ".join(f"{100 * r['val_ua']:.1f}" for r in summary["runs"])
        lines += ["", f"Validation UA (best epoch, selection score): **{100 * v['mean']:.1f} "
                      f"± {100 * v['std']:.1f}** ({per_run})"]
    if "no_enrolment" in summary:
        fb = summary["no_enrolment"]
        cells = " | ".join(f"{100 * fb[k]['mean']:.1f} ± {100 * fb[k]['std']:.1f}" for k in KEYS)
        lines += ["", f"Without enrolment: {'; '.join(fb['protocols'])}", "",
                  "| | UA | WA | macro-F1 |", "|---|---|---|---|",
                  f"| mean ± std ({summary['n_runs']} runs) | {cells} |"]
    if "recall" in summary:
        lines += ["", "| recall (mean over runs) | " + " | ".join(summary["recall"]) + " |",
                  "|---" * (len(summary["recall"]) + 1) + "|",
                  "| | " + " | ".join(f"{100 * v:.1f}" for v in summary["recall"].values())
                  + " |"]
    return "\n".join(lines) + "\n"


def aggregate(root: Path) -> dict:
    summary = summarise(collect(root))
    (Path(root) / "summary.json").write_text(json.dumps(summary, indent=2))
    (Path(root) / "summary.md").write_text(to_markdown(summary))
    if "confusion" in summary:
        from ser.evaluation.plots import save_confusion_png

        ua = summary["ua"]
        save_confusion_png(np.array(summary["confusion"]), summary["classes"],
                           Path(root) / "confusion.png",
                           title=f"sum of {summary['n_runs']} runs | UA {100 * ua['mean']:.1f} "
                                 f"± {100 * ua['std']:.1f}")
    return summary


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("multirun_dir", type=Path)
    args = parser.parse_args(argv)
    summary = aggregate(args.multirun_dir)
    print(to_markdown(summary), end="")


if __name__ == "__main__":
    main()
