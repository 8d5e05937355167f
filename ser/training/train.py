"""train(cfg): build everything from the Hydra config, fit, test, and report."""

from __future__ import annotations

import json
import logging
import shlex
from pathlib import Path
from typing import Any

import hydra
import lightning as L
import torch
from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint
from omegaconf import DictConfig, OmegaConf, open_dict

from ser.data.splits import corpus_folds, fold_corpus
from ser.training.config_check import check_config
from ser.training.datamodule import SERDataModule
from ser.training.evaluate import (
    command_name,
    framed,
    serving_steps,
    shown,
    summary,
    test_and_report,
)
from ser.training.module import SERClassifier
from ser.training.schema import CheckpointError

log = logging.getLogger(__name__)


def _instantiate_list(cfg: DictConfig | None) -> list[Any]:
    """Instantiate every entry of a dict-of-configs group (callbacks, loggers)."""
    if not cfg:
        return []
    return [hydra.utils.instantiate(c) for c in cfg.values() if c and "_target_" in c]


def train(cfg: DictConfig) -> dict[str, float]:
    """Fit on the training split, select on validation, report on test; return metrics."""
    check_config(cfg)
    if cfg.get("ckpt_path"):
        _continue_in_its_run(cfg)
    if cfg.get("seed") is not None:
        L.seed_everything(cfg.seed, workers=True, verbose=False)
    torch.set_num_threads(cfg.get("num_threads") or torch.get_num_threads())
    datamodule: SERDataModule = hydra.utils.instantiate(cfg.data)
    datamodule.prepare_data()
    datamodule.setup("fit")
    model = build_model(cfg, datamodule)

    loggers = _instantiate_list(cfg.get("logger"))
    callbacks = _instantiate_list(cfg.get("callbacks"))
    if not loggers:  # nothing to write learning rates to: Lightning would refuse to start
        callbacks = [c for c in callbacks if not isinstance(c, LearningRateMonitor)]
    trainer = hydra.utils.instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False,
                                      precision=resolve_precision(cfg.trainer.get("precision")))
    trainer.fit(model, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path") or None,
                weights_only=True)
    if not _leave_distributed(trainer):
        return {}  # DDP ranks other than 0: rank 0 tests and reports

    ckpt_path = _best_checkpoint(trainer)
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}
    if ckpt_path:
        metrics.update(_best_val(trainer))
    out_dir = Path(cfg.paths.output_dir)
    report = None
    if cfg.get("test", True):
        report = test_and_report(_test_trainer(cfg, loggers), model, datamodule, out_dir,
                                  ckpt_path,
                                  checkpoint_label=ckpt_path)
        sets = {"test": report, **{k: v for k, v in report.items()
                                   if isinstance(v, dict) and "ua" in v}}
        for name, result in sets.items():
            metrics.update({f"{name}/{k}": result[k] for k in ("wa", "ua", "macro_f1")})
        _export(cfg, model, out_dir)
    Path(cfg.paths.output_dir, "train_metrics.json").write_text(json.dumps(metrics, indent=2))
    log.info("metrics: %s", json.dumps(metrics))
    print(end_of_run(cfg, datamodule, ckpt_path, metrics, report), flush=True)
    return metrics


def _continue_in_its_run(cfg: DictConfig) -> None:
    """`ckpt_path=<run>/checkpoints/last.ckpt`: the run goes on writing into <run>, so its
    best checkpoint, early stopping and report stay one history."""
    ckpt = Path(cfg.ckpt_path)
    if not ckpt.is_file():
        raise CheckpointError(f"{ckpt}: no such checkpoint file to continue from")
    run = ckpt.resolve().parent.parent
    with open_dict(cfg):
        cfg.paths.output_dir = str(run)
    log.info("continuing the run in %s from %s", run, ckpt.name)


def end_of_run(cfg: DictConfig, datamodule: SERDataModule, ckpt_path: str,
               metrics: dict[str, float], report: dict[str, Any] | None) -> str:
    """The summary a run ends with on stdout (summary() in ser/training/evaluate.py)."""
    steps = serving_steps(ckpt_path, datamodule.pipeline.uses_enrolment) if ckpt_path else {}
    out_dir = Path(cfg.paths.output_dir)
    if report is None:  # test=false (a search trial): validation only
        steps = {**({"test it": f"ser-evaluate ckpt_path={shown(ckpt_path)}"}
                    if ckpt_path else {}), **steps}
        best = metrics.get("val/ua_best", metrics.get("val/ua"))
        lines = [f"no test (test=false): best validation UA "
                 f"{'-' if best is None else f'{100 * best:.1f}'}"]
        lines += [f"model     {shown(ckpt_path)}"] if ckpt_path else []
        return framed(lines, steps)
    folds = _fold_count(datamodule)
    if folds:
        steps["all folds"] = all_folds_command(folds, *_run_overrides())
        steps["mean ± std"] = (f"ser-aggregate {shown(cfg.paths.log_dir)}/{cfg.task_name}"
                               f"/multiruns/<time>")
    return summary(report, out_dir, steps, checkpoint=ckpt_path or None)


def all_folds_command(n_folds: int, overrides: list[str], config_dirs: list[str]) -> str:
    """The run again on every fold of its protocol, as one sweep (`-m`)."""
    kept = [o for o in overrides if not o.startswith(("data.fold=", "+data.fold="))]
    words = [*(f"--config-dir={d}" for d in config_dirs), "-m", *kept,
             f"data.fold={','.join(str(i) for i in range(1, n_folds + 1))}"]
    return " ".join([command_name("train.py", "ser-train"), *map(shlex.quote, words)])


def _fold_count(datamodule: SERDataModule) -> int:
    """Folds of a speaker-independent run's protocol; 0 for other protocols and inside a
    sweep (which already chose its folds)."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    split = datamodule.split
    if split is None or split.protocol != "speaker_independent":
        return 0
    if HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN:
        return 0
    corpus = fold_corpus(datamodule.clips, datamodule.split_cfg.get("test_corpus"))
    return len(corpus_folds(datamodule.clips, corpus))


def _run_overrides() -> tuple[list[str], list[str]]:
    """The command line's overrides and --config-dir folders (none outside a Hydra run)."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return [], []
    hc = HydraConfig.get()
    dirs = [s.path.removeprefix("file://") for s in hc.runtime.config_sources
            if s.provider == "command-line"]
    searchpath = [o for o in hc.overrides.hydra if o.startswith("hydra.searchpath=")]
    return [*searchpath, *hc.overrides.task], dirs


def build_model(cfg: DictConfig, datamodule: SERDataModule) -> SERClassifier:
    """The family's network, sized by the input pipeline, in the LightningModule."""
    names = list(datamodule.class_names)
    net_cfg = OmegaConf.to_container(cfg.model.net, resolve=True)
    # called directly, not through instantiate, so errors (an unreachable backbone)
    # reach the user as they were raised
    build = hydra.utils.get_object(net_cfg.pop("_target_"))
    net = build(**net_cfg, **datamodule.pipeline.net_kwargs(names))
    model = hydra.utils.instantiate(cfg.model.module, net=net, class_names=names)
    model.attach(cfg.model.family, datamodule.pipeline, datamodule.metadata(),
                 datamodule.class_weights)
    return model


def _leave_distributed(trainer: L.Trainer) -> bool:
    """After a DDP fit: close the process group; True on the rank that goes on to test.

    Testing then runs on one device in one process, so every test clip is scored once
    and the report sees all predictions (a DDP test would shard and pad them).
    """
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()
    return trainer.global_rank == 0


def resolve_precision(precision: str | int | None) -> str | int | None:
    """`bf16-auto`: bf16 mixed precision where the hardware has it, else the next best.

    GPUs with bf16 (Ampere and later): bf16-mixed; older GPUs: 16-mixed (fp16 with loss
    scaling, as the seed's fp16); CPUs with AVX512-BF16/AMX: bf16-mixed; others: 32-true.
    Any other value passes through unchanged.
    """
    if precision != "bf16-auto":
        return precision
    if torch.cuda.is_available():
        return "bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed"
    return "bf16-mixed" if torch.ops.mkldnn._is_mkldnn_bf16_supported() else "32-true"


def _test_trainer(cfg: DictConfig, loggers: list) -> L.Trainer:
    """One device, one process, float32: every test clip is scored once, in the precision
    the model is served in, so the report's probabilities are the served model's."""
    t = cfg.trainer
    # no checkpoint callback: nothing is saved, and Lightning's default one would warn
    # that its folder differs from the one in the checkpoint it restores
    return L.Trainer(accelerator=t.get("accelerator", "auto"), devices=1, precision="32-true",
                     logger=loggers or False, enable_model_summary=False,
                     enable_checkpointing=False,
                     enable_progress_bar=t.get("enable_progress_bar", True),
                     limit_test_batches=1 if t.get("fast_dev_run") else
                     t.get("limit_test_batches", 1.0),
                     default_root_dir=t.get("default_root_dir"))


def _export(cfg: DictConfig, model: L.LightningModule, out_dir: Path) -> None:
    """The tested (best) weights in transformers' format, where the model has one."""
    if cfg.get("export", True) and hasattr(model, "export_pretrained"):
        path = model.export_pretrained(out_dir / "hf_model")
        if path is not None:
            log.info("exported transformers model to %s", path)


def _best_checkpoint(trainer: L.Trainer) -> str:
    cb = trainer.checkpoint_callback
    return cb.best_model_path if isinstance(cb, ModelCheckpoint) and cb.best_model_path else ""


def _best_val(trainer: L.Trainer) -> dict[str, float]:
    cb = trainer.checkpoint_callback
    if cb.best_model_score is None:
        return {}
    return {f"{cb.monitor}_best": float(cb.best_model_score)}
