"""train(cfg): build everything from the Hydra config, fit, test, and report."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import hydra
import lightning as L
import torch
from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint
from omegaconf import DictConfig, OmegaConf

from ser.evaluation.report import write_report

log = logging.getLogger(__name__)


def _instantiate_list(cfg: DictConfig | None) -> list[Any]:
    """Instantiate every entry of a dict-of-configs group (callbacks, loggers)."""
    if not cfg:
        return []
    return [hydra.utils.instantiate(c) for c in cfg.values() if c and "_target_" in c]


def train(cfg: DictConfig) -> dict[str, float]:
    """Fit on the training split, select on validation, report on test; return metrics."""
    if cfg.get("seed") is not None:
        L.seed_everything(cfg.seed, workers=True)
    torch.set_num_threads(cfg.get("num_threads") or torch.get_num_threads())
    datamodule = hydra.utils.instantiate(cfg.data)
    datamodule.prepare_data()
    datamodule.setup("fit")

    net_cfg = OmegaConf.to_container(cfg.model.net, resolve=True)
    net_cfg["n_classes"] = datamodule.n_classes
    net = hydra.utils.instantiate(net_cfg)
    model = hydra.utils.instantiate(
        cfg.model.module, net=net, class_names=list(datamodule.class_names),
        n_features=datamodule.n_features,
    )
    model.attach_training_stats(
        datamodule.mean, datamodule.std, datamodule.class_weights,
        {**datamodule.metadata(), "net": net_cfg},
    )

    loggers = _instantiate_list(cfg.get("logger"))
    callbacks = _instantiate_list(cfg.get("callbacks"))
    if not loggers:  # nothing to write learning rates to: Lightning would refuse to start
        callbacks = [c for c in callbacks if not isinstance(c, LearningRateMonitor)]
    trainer = hydra.utils.instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)
    trainer.fit(model, datamodule=datamodule)

    ckpt_path = _best_checkpoint(trainer)
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}
    if ckpt_path:
        metrics.update(_best_val(trainer))
    if cfg.get("test", True):
        trainer.test(model, datamodule=datamodule, ckpt_path=ckpt_path or None, verbose=False,
                     weights_only=False)  # our own checkpoint, written just above
        test = model.last_metrics["test"]
        out_dir = Path(cfg.paths.output_dir)
        write_report(
            out_dir, test, datamodule.test_rows(), model.last_test_outputs,
            protocol=datamodule.metadata()["split"], checkpoint=ckpt_path,
        )
        metrics.update({f"test/{k}": test[k] for k in ("wa", "ua", "macro_f1")})
    Path(cfg.paths.output_dir, "train_metrics.json").write_text(json.dumps(metrics, indent=2))
    log.info("metrics: %s", json.dumps(metrics))
    return metrics


def _best_checkpoint(trainer: L.Trainer) -> str:
    cb = trainer.checkpoint_callback
    return cb.best_model_path if isinstance(cb, ModelCheckpoint) and cb.best_model_path else ""


def _best_val(trainer: L.Trainer) -> dict[str, float]:
    cb = trainer.checkpoint_callback
    if cb.best_model_score is None:
        return {}
    return {f"{cb.monitor}_best": float(cb.best_model_score)}
