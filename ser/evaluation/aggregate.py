"""Aggregate a multirun (one run per fold) into a mean ± std table.

`python -m ser.evaluation.aggregate outputs/train/multiruns/<time>` (or `ser-aggregate`)
reads every `*/metrics.json` below the folder and writes `summary.md` and
`summary.json` beside them.
"""

from __future__ import annotations

import argparse
import json
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
        runs.append(data)
    return runs


def summarise(runs: list[dict]) -> dict:
    """Mean and population std (as over folds) of UA, WA and macro-F1, plus per-run rows."""
    protocols = sorted({r.get("protocol", "?") for r in runs})
    summary = {
        "n_runs": len(runs),
        "protocols": protocols,
        "runs": [
            {"run_dir": r["run_dir"], "fold": r.get("split", {}).get("fold"),
             **{k: r[k] for k in KEYS}}
            for r in runs
        ],
    }
    for k in KEYS:
        values = np.array([r[k] for r in runs], dtype=np.float64)
        summary[k] = {"mean": float(values.mean()), "std": float(values.std())}
    return summary


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
    return "\n".join(lines) + "\n"


def aggregate(root: Path) -> dict:
    summary = summarise(collect(root))
    (Path(root) / "summary.json").write_text(json.dumps(summary, indent=2))
    (Path(root) / "summary.md").write_text(to_markdown(summary))
    return summary


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("multirun_dir", type=Path)
    args = parser.parse_args(argv)
    summary = aggregate(args.multirun_dir)
    print(to_markdown(summary), end="")


if __name__ == "__main__":
    main()
