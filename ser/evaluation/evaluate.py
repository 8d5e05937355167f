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


# keys of a checkpoint's split metadata that configure a split (the rest describe it)
SPLIT_KEYS = ("protocol", "n_val_speakers", "seed", "test_fraction", "rows_leak",
              "test_corpus", "test_corpora", "val_fraction")


def datamodule_for(
    model_meta: dict, data_cfg: DictConfig | None, paths: DictConfig
) -> FeatureDataModule:
    """The checkpoint's own corpora/split/fold unless a data config overrides them.

    Features and classes always come from the checkpoint: the model only understands
    those. With another data config (a cross-corpus test: `data=ravdess
    split=cross_corpus split.test_corpora=[tess]`), clips whose label the model lacks
    are left out, so the metrics cover the labels both share.
    """
    if model_meta.get("feature_type") == "waveform":
        from ser.data.waveform import waveform_datamodule_for

        return waveform_datamodule_for(model_meta, data_cfg, paths.data_dir)
    features = {k: model_meta["features"][k] for k in ("audio", "hand")}
    no_augment = {**model_meta["features"]["augment"], "versions": ["original"]}
    classes = model_meta.get("class_names")
    if data_cfg is None:
        split = {k: v for k, v in model_meta["split"].items() if k in SPLIT_KEYS}
        return FeatureDataModule(
            data_dir=paths.data_dir, cache_dir=paths.cache_dir,
            corpora=model_meta["corpora"], split=split,
            fold=model_meta["split"].get("fold") or 1, features=features, augment=no_augment,
            labels=model_meta.get("labels"), class_names=classes,
        )
    return hydra.utils.instantiate(data_cfg, features=features, augment=no_augment,
                                   labels=model_meta.get("labels"), class_names=classes)


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
