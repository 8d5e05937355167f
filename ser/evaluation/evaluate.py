"""evaluate(cfg): score a checkpoint on the test speakers of its fold (or another data config)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import hydra
import lightning as L
from omegaconf import DictConfig, OmegaConf

from ser.data.datamodule import FeatureDataModule
from ser.evaluation.report import write_report
from ser.training.checkpoint import load_classifier

log = logging.getLogger(__name__)


def datamodule_for(
    model_meta: dict, data_cfg: DictConfig | None, paths: DictConfig
) -> FeatureDataModule:
    """The checkpoint's own corpora/split/fold unless a data config overrides them.

    Features always come from the checkpoint: the model only understands those.
    """
    features = {k: model_meta["features"][k] for k in ("audio", "hand")}
    no_augment = {**model_meta["features"]["augment"], "versions": ["original"]}
    if data_cfg is None:
        split = {k: v for k, v in model_meta["split"].items() if k not in ("fold", "leaky")}
        return FeatureDataModule(
            data_dir=paths.data_dir, cache_dir=paths.cache_dir,
            corpora=model_meta["corpora"], split=split,
            fold=model_meta["split"].get("fold") or 1, features=features, augment=no_augment,
        )
    return hydra.utils.instantiate(data_cfg, features=features, augment=no_augment)


def evaluate(cfg: DictConfig) -> dict:
    model = load_classifier(cfg.ckpt_path)
    meta = model.ser_meta
    data_cfg = cfg.get("data")
    datamodule = datamodule_for(meta, data_cfg, cfg.paths)
    datamodule.prepare_data()
    datamodule.setup("test")
    trainer = L.Trainer(accelerator="auto", devices=1, logger=False, enable_progress_bar=False)
    trainer.test(model, datamodule=datamodule, verbose=False)
    out_dir = Path(cfg.paths.output_dir)
    payload = write_report(
        out_dir, model.last_metrics["test"], datamodule.test_rows(), model.last_test_outputs,
        protocol=datamodule.metadata()["split"], checkpoint=cfg.ckpt_path,
    )
    log.info("%s", json.dumps({k: payload[k] for k in ("wa", "ua", "macro_f1", "protocol")}))
    log.info("report written to %s", out_dir)
    if data_cfg is not None:
        (out_dir / "data_config.yaml").write_text(OmegaConf.to_yaml(data_cfg))
    return payload
