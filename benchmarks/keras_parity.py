"""Torch baseline vs its Keras twin, fold by fold, on the same rows.

    SER_DATA_DIR=../shared/data python benchmarks/keras_parity.py \
        [--experiment baseline_ravdess_noaug] [--folds 1 2 3 4 5 6] \
        [--torch fp32 bf16] [--keras torch keras] [--out outputs/keras_parity]

For every fold the experiment's config is composed (as `train.py experiment=... data.fold=k`
would), the torch model is trained with the project's `train(cfg)` (trainer=fp32 or the
default bf16-mixed), and the Keras twin with `fit_keras` on a datamodule built from the
same `cfg.data` (ser.training.keras_fit) — the same rows: the torch checkpoint's training
mean (its pipeline metadata), class weights and test speakers are checked against the
Keras datamodule's. The Keras recipe is read from the same config (epochs, batch, LR,
scheduler and early-stopping patience, L2, network).
`--keras torch` is the twin with torch's initialisers, loss averaging and Adam epsilon;
`--keras keras` the same run with Keras's defaults (glorot/zeros, class_weight averaging,
eps 1e-7), as the twin trained before.

One process, one thread (torch intra/inter-op 1, TF intra/inter-op 1) unless --threads.
Every finished run is appended to <out>/results.jsonl; a rerun with the same --out skips
runs already there (--fresh starts over), and the table is printed from that file:
per-fold val UA (best epoch) / test UA, epochs run, wall seconds, then mean ± std (sample
std over folds) and the mean per-fold difference of each Keras recipe from each torch one.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path


def _limit_threads(n: int) -> None:
    """Before torch or TensorFlow start their pools."""
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                "TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS"):
        os.environ[var] = str(n)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--experiment", default="baseline_ravdess_noaug")
    p.add_argument("--folds", type=int, nargs="+", default=[1, 2, 3, 4, 5, 6])
    p.add_argument("--torch", nargs="*", default=["fp32"], choices=["fp32", "bf16"],
                   help="torch precisions to train (fp32: trainer=fp32; bf16: bf16-mixed)")
    p.add_argument("--keras", nargs="*", default=["torch"], choices=["torch", "keras"],
                   help="Keras recipes: 'torch' (matched) or 'keras' (Keras's defaults)")
    p.add_argument("--out", default="outputs/keras_parity")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--fresh", action="store_true", help="ignore results already in --out")
    p.add_argument("--table-only", action="store_true", help="print the table, train nothing")
    p.add_argument("overrides", nargs="*", help="extra Hydra overrides for both frameworks")
    return p.parse_args(argv)


ARGS = parse_args() if __name__ == "__main__" else None
if ARGS is not None:
    _limit_threads(ARGS.threads)

import json  # noqa: E402
import logging  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ser.config import CONF_DIR, register_resolvers  # noqa: E402

log = logging.getLogger("keras_parity")

KERAS_RECIPES = {
    "torch": {"init": "torch", "loss": "torch", "epsilon": 1e-8},
    "keras": {"init": "keras", "loss": "keras", "epsilon": 1e-7},
}


def setup_threads(n: int) -> None:
    import tensorflow as tf
    import torch

    torch.set_num_threads(n)
    torch.set_num_interop_threads(n)
    tf.config.threading.set_intra_op_parallelism_threads(n)
    tf.config.threading.set_inter_op_parallelism_threads(n)


def compose(experiment: str, fold: int, out_dir: Path, threads: int, extra: list[str],
            precision: str = "fp32"):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from omegaconf import open_dict

    overrides = [f"experiment={experiment}", f"data.fold={fold}", f"num_threads={threads}",
                 "logger=csv", "trainer.enable_progress_bar=false", "data.progress=false",
                 "data.n_jobs=1", *(["trainer=fp32"] if precision == "fp32" else []), *extra]
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = hydra_compose("train", overrides=overrides, return_hydra_config=True)
    with open_dict(cfg):
        cfg.paths.output_dir = str(out_dir)
        cfg.hydra = None
    return cfg


def run_torch(cfg, out_dir: Path) -> dict:
    from ser.training.train import train

    t0 = time.perf_counter()
    metrics = train(cfg)
    wall = time.perf_counter() - t0
    history = torch_history(out_dir)
    return {"val_ua": metrics["val/ua_best"], "test_ua": metrics["test/ua"],
            "test_wa": metrics["test/wa"], "epochs": len(history), "wall_s": wall,
            "history": history, "checkpoint": str(out_dir / "checkpoints" / "best.ckpt")}


def torch_history(out_dir: Path) -> list[dict]:
    """Per-epoch val UA and learning rate from the CSV logger."""
    import csv

    files = sorted(out_dir.glob("csv/version_*/metrics.csv"))
    if not files:
        return []
    val_ua: dict[int, float] = {}
    lrs: list[float] = []  # LearningRateMonitor: one row per epoch, at its start, no epoch
    with files[-1].open() as f:
        for row in csv.DictReader(f):
            if row.get("val/ua") and row.get("epoch"):
                val_ua[int(float(row["epoch"]))] = float(row["val/ua"])
            lr_key = next((k for k in row if k.startswith("lr-") and row[k]), None)
            if lr_key:
                lrs.append(float(row[lr_key]))
    return [{"val_ua": val_ua[e], **({"lr": lrs[e]} if e < len(lrs) else {})}
            for e in sorted(val_ua)]


def check_same_rows(dm, checkpoint: str) -> None:
    """The torch run's training statistics and test speakers are the Keras datamodule's."""
    import torch

    ckpt = torch.load(checkpoint, map_location="cpu", weights_only=True)
    meta = ckpt["ser_meta"]
    np.testing.assert_allclose(np.asarray(meta["pipeline"]["standardise"]["mean"]),
                               dm.pipeline.standardise.mean, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(ckpt["state_dict"]["class_weights"].numpy(), dm.class_weights,
                               rtol=1e-5)
    assert list(meta["training"]["test_speakers"]) == list(dm.split.test_speakers)


def run_keras(cfg, dm, recipe: str) -> dict:
    from omegaconf import OmegaConf

    from ser.training.keras_fit import fit_keras

    net = OmegaConf.to_container(cfg.model.net, resolve=True)
    for key in ("_target_", "pool_first"):  # pool_first: same function, torch speed-up only
        net.pop(key, None)
    module = cfg.model.module
    t0 = time.perf_counter()
    result = fit_keras(
        dm, epochs=cfg.trainer.max_epochs, batch_size=cfg.data.batch_size,
        lr=module.optimizer.lr, patience=cfg.callbacks.early_stopping.patience,
        lr_patience=module.scheduler.patience, min_lr=module.scheduler.min_lr,
        seed=cfg.seed, net={**net, "l2": module.l2}, **KERAS_RECIPES[recipe],
    )
    wall = time.perf_counter() - t0
    return {"val_ua": result["val/ua_best"], "test_ua": result["test"]["ua"],
            "test_wa": result["test"]["wa"], "epochs": result["epochs"], "wall_s": wall,
            "history": result["history"]}


def load_results(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def run_all(args: argparse.Namespace) -> None:
    import hydra

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results_path = out / "results.jsonl"
    if args.fresh and results_path.exists():
        results_path.unlink()
    done = {(r["experiment"], r["fold"], r["system"]) for r in load_results(results_path)}
    setup_threads(args.threads)

    def record(entry: dict) -> None:
        with results_path.open("a") as f:
            f.write(json.dumps(entry) + "\n")
        print(f"{entry['experiment']} fold {entry['fold']} {entry['system']:>13}: "
              f"val UA {100 * entry['val_ua']:5.1f}  test UA {100 * entry['test_ua']:5.1f}  "
              f"epochs {entry['epochs']:2d}  wall {entry['wall_s']:6.1f} s", flush=True)

    for fold in args.folds:
        base = {"experiment": args.experiment, "fold": fold}
        checkpoint = None
        for precision in args.torch:
            system = f"torch-{precision}"
            run_dir = out / args.experiment / f"fold{fold}" / system
            if (args.experiment, fold, system) in done:
                checkpoint = str(run_dir / "checkpoints" / "best.ckpt")
                continue
            cfg = compose(args.experiment, fold, run_dir, args.threads, args.overrides,
                          precision)
            entry = run_torch(cfg, run_dir)
            checkpoint = entry["checkpoint"]
            record({**base, "system": system, **entry})
        todo = [r for r in args.keras if (args.experiment, fold, f"keras-{r}") not in done]
        if not todo:
            continue
        cfg = compose(args.experiment, fold, out / "unused", args.threads, args.overrides)
        t0 = time.perf_counter()
        dm = hydra.utils.instantiate(cfg.data)
        dm.prepare_data()
        dm.setup("fit")
        setup_s = time.perf_counter() - t0
        if checkpoint and Path(checkpoint).exists():
            check_same_rows(dm, checkpoint)
        for recipe in todo:
            entry = run_keras(cfg, dm, recipe)
            record({**base, "system": f"keras-{recipe}", "datamodule_setup_s": setup_s,
                    "same_rows_checked": bool(checkpoint), **entry})


def table(rows: list[dict], experiment: str, folds: list[int]) -> str:
    rows = [r for r in rows if r["experiment"] == experiment and r["fold"] in folds]
    systems = sorted({r["system"] for r in rows}, key=lambda s: (not s.startswith("torch"), s))
    cell = {(r["fold"], r["system"]): r for r in rows}
    folds = [f for f in folds if any((f, s) in cell for s in systems)]
    head = f"{'fold':>4} | " + " | ".join(f"{s:^30}" for s in systems)
    sub = f"{'':>4} | " + " | ".join(f"{'val UA':>9}{'test UA':>8}{'ep':>4}{'wall s':>9}"
                                       for _ in systems)
    lines = [f"{experiment}: UA in %, val = best validation epoch", head, sub,
             "-" * len(head)]
    for f in folds:
        parts = []
        for s in systems:
            r = cell.get((f, s))
            parts.append(f"{100 * r['val_ua']:9.1f}{100 * r['test_ua']:8.1f}{r['epochs']:4d}"
                         f"{r['wall_s']:9.1f}" if r else f"{'-':>30}")
        lines.append(f"{f:>4} | " + " | ".join(parts))
    lines.append("-" * len(head))

    def stats(s: str, key: str) -> tuple[float, float, int]:
        v = np.array([100 * cell[(f, s)][key] for f in folds if (f, s) in cell])
        return (v.mean(), v.std(ddof=1) if len(v) > 1 else float("nan"), len(v))

    for s in systems:
        (vm, vs, n), (tm, ts, _) = stats(s, "val_ua"), stats(s, "test_ua")
        wall = np.mean([cell[(f, s)]["wall_s"] for f in folds if (f, s) in cell])
        lines.append(f"{s:>13}: val UA {vm:5.1f} ± {vs:4.1f}   test UA {tm:5.1f} ± {ts:4.1f}"
                     f"   (n={n} folds, mean wall {wall:.0f} s)")
    pairs = [(a, b) for a in systems for b in systems
             if b.startswith("torch") and (a.startswith("keras") or a > b)]
    for a, b in pairs:  # each Keras recipe minus each torch run; torch fp32 minus bf16
        both = [f for f in folds if (f, a) in cell and (f, b) in cell]
        for key in ("test_ua", "val_ua"):
            d = np.array([100 * (cell[(f, a)][key] - cell[(f, b)][key]) for f in both])
            if len(d):
                sd = d.std(ddof=1) if len(d) > 1 else float("nan")
                lines.append(f"{a} - {b} {key}: mean {d.mean():+5.1f} ± {sd:4.1f} "
                             f"(per-fold: {' '.join(f'{x:+.1f}' for x in d)})")
    return "\n".join(lines)


def main(args: argparse.Namespace) -> None:
    logging.basicConfig(level=logging.WARNING)
    for name in ("lightning", "lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.ERROR)
    register_resolvers()
    if not args.table_only:
        run_all(args)
    print()
    print(table(load_results(Path(args.out) / "results.jsonl"), args.experiment, args.folds))


if __name__ == "__main__":
    main(ARGS)
