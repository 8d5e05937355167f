"""evaluate(cfg): score a checkpoint on the test speakers of its fold (or another data config)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import hydra
import lightning as L
from omegaconf import DictConfig, OmegaConf

from ser.data.datamodule import FeatureDataModule
from ser.evaluation.report import fallback_label, write_report
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
    features = {k: v for k, v in model_meta["features"].items() if k != "augment"}
    no_augment = {**model_meta["features"]["augment"], "versions": ["original"],
                  "test_versions": model_meta.get("test_versions", ["original"])}
    from_ckpt = {"features": features, "augment": no_augment, "labels": model_meta.get("labels"),
                 "class_names": model_meta.get("class_names"),
                 "speaker_norm": model_meta.get("speaker_norm")}
    if data_cfg is None:
        split = {k: v for k, v in model_meta["split"].items() if k in SPLIT_KEYS}
        return FeatureDataModule(
            data_dir=paths.data_dir, cache_dir=paths.cache_dir,
            corpora=model_meta["corpora"], split=split,
            fold=model_meta["split"].get("fold") or 1, **from_ckpt,
        )
    return hydra.utils.instantiate(data_cfg, **from_ckpt)


def score_extra_test_sets(trainer: L.Trainer, model: L.LightningModule,
                          datamodule: L.LightningDataModule, ckpt_path: str | None,
                          protocol: dict) -> dict[str, dict]:
    """The datamodule's further test sets (a speaker-normalised model without enrolment),
    scored with the same weights; each entry says its own protocol."""
    results = {}
    for name, loader in getattr(datamodule, "extra_test_sets", dict)().items():
        trainer.test(model, dataloaders=loader, ckpt_path=ckpt_path or None, verbose=False,
                     weights_only=False)
        results[name] = {**model.last_metrics["test"], "protocol": fallback_label(protocol)}
    return results


def evaluate(cfg: DictConfig) -> dict:
    model = load_classifier(cfg.ckpt_path)
    meta = model.ser_meta
    data_cfg = cfg.get("data")
    datamodule = datamodule_for(meta, data_cfg, cfg.paths)
    datamodule.prepare_data()
    datamodule.setup("test")
    trainer = L.Trainer(accelerator="auto", devices=1, logger=False, enable_progress_bar=False)
    trainer.test(model, datamodule=datamodule, verbose=False)
    test, outputs = model.last_metrics["test"], model.last_test_outputs
    out_dir = Path(cfg.paths.output_dir)
    protocol = datamodule.metadata()["split"]
    extra = score_extra_test_sets(trainer, model, datamodule, None, protocol)
    payload = write_report(out_dir, test, datamodule.test_rows(), outputs, protocol=protocol,
                           checkpoint=cfg.ckpt_path, extra=extra)
    log.info("%s", json.dumps({k: payload[k] for k in ("wa", "ua", "macro_f1", "protocol")}))
    log.info("report written to %s", out_dir)
    if data_cfg is not None:
        (out_dir / "data_config.yaml").write_text(OmegaConf.to_yaml(data_cfg))
    return payload
