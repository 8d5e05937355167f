"""Testing a model and writing its report: after training, and for `evaluate.py`.

`evaluate(cfg)` scores a checkpoint on the test speakers of its fold (or of another data
config); `test_and_report` is the one path both it and `train(cfg)` take from a tested
model to metrics.json, confusion.png and predictions.csv (and, after training,
val_predictions.csv: the same checkpoint on the validation actors).
"""

from __future__ import annotations

import json
import logging
import sys
import textwrap
import warnings
from pathlib import Path
from typing import Any

import hydra
import lightning as L
from omegaconf import DictConfig, OmegaConf

from ser.evaluation.report import (
    fallback_label,
    protocol_label,
    write_predictions,
    write_report,
)
from ser.training.checkpoint import load_classifier
from ser.training.datamodule import SERDataModule
from ser.training.module import SERClassifier, in_dataset_order

log = logging.getLogger(__name__)

# keys of a run's split metadata that configure a split (the rest describe it)
SPLIT_KEYS = ("protocol", "n_val_speakers", "seed", "test_fraction", "rows_leak",
              "test_corpus", "test_corpora", "val_fraction")


def datamodule_for(model: SERClassifier, data_cfg: DictConfig | None,
                   paths: DictConfig) -> SERDataModule:
    """The checkpoint's own corpora/split/fold unless a data config overrides them.

    The input pipeline and the classes always come from the checkpoint: the model only
    understands those. With another data config (a cross-corpus test: `data=cross_corpus`),
    clips whose label the model lacks are left out, so the metrics cover the labels both
    share.
    """
    info = model.training_info
    from_ckpt = {"pipeline": model.pipeline, "class_names": model.class_names,
                 "labels": info.get("labels")}
    if data_cfg is None:
        split = {k: v for k, v in info["split"].items() if k in SPLIT_KEYS}
        return SERDataModule(data_dir=paths.data_dir, cache_dir=paths.cache_dir,
                             corpora=info["corpora"], split=split,
                             fold=info["split"].get("fold") or 1, **from_ckpt)
    return hydra.utils.instantiate(data_cfg, features=None, augment=None, speaker_norm=None,
                                   **from_ckpt)


def test_and_report(trainer: L.Trainer, model: SERClassifier, datamodule: SERDataModule,
                    out_dir: Path, ckpt_path: str | None = None,
                    checkpoint_label: str = "") -> dict[str, Any]:
    """Test (and each extra test set), write the report; returns what metrics.json holds
    (the test set's metrics, and each extra test set's under its name)."""
    data = datamodule.metadata()
    protocol = data["split"]
    main = _test(trainer, model, datamodule.test_dataloader(), ckpt_path)
    extra = {}
    for name, loader in datamodule.extra_test_sets().items():
        scored = _test(trainer, model, loader, ckpt_path)
        extra[name] = {**scored["metrics"], "protocol": fallback_label(protocol)}
    rows = datamodule.test_rows()
    scored_rows = [rows[i] for i in main["index"]]
    info = {"data": data, **model.report_info(), **extra}
    if len(scored_rows) < len(rows):
        info["partial"] = (f"PARTIAL test: {len(scored_rows)} of {len(rows)} test items "
                           f"scored (limit_test_batches or fast_dev_run)")
        log.warning("%s", info["partial"])
    report = write_report(out_dir, main["metrics"], scored_rows, main["probs"],
                          protocol=protocol, checkpoint=checkpoint_label, extra=info)
    if "val" in datamodule.stages and "partial" not in info:
        _write_val_predictions(trainer, model, datamodule, out_dir, ckpt_path, protocol)
    return report


def _write_val_predictions(trainer: L.Trainer, model: SERClassifier,
                           datamodule: SERDataModule, out_dir: Path, ckpt_path: str | None,
                           protocol: dict[str, Any]) -> None:
    """The selected checkpoint's probabilities on the validation actors, beside the test's
    (`val_predictions.csv`): what a later choice (an ensemble's weights) may be made on."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", ".*weights_only.*")
        batches = trainer.predict(model, dataloaders=datamodule.val_dataloader(),
                                  ckpt_path=ckpt_path or None, weights_only=True)
    index, probs = in_dataset_order([b["index"] for b in batches], [b["probs"] for b in batches])
    rows = datamodule.test_rows("val")
    write_predictions(out_dir / "val_predictions.csv", [rows[i] for i in index], probs,
                      model.class_names, f"validation actors of: {protocol_label(protocol)}")


def _test(trainer: L.Trainer, model: SERClassifier, loader: Any,
          ckpt_path: str | None) -> dict[str, Any]:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", ".*weights_only.*")
        trainer.test(model, dataloaders=loader, ckpt_path=ckpt_path or None, verbose=False,
                     weights_only=True)
    return {"metrics": model.last_metrics["test"], "index": model.last_test_index,
            "probs": model.last_test_outputs}


def shown(path: str | Path) -> str:
    """A path as the user can type it: relative when under the working directory."""
    path = Path(path).absolute()
    return str(path.relative_to(Path.cwd())) if path.is_relative_to(Path.cwd()) else str(path)


def summary(report: dict[str, Any], out_dir: Path, next_steps: dict[str, str],
            checkpoint: str | None = None) -> str:
    """The block a run ends with on the terminal: the test metrics against chance, the
    protocol, recall per class, where the files are, and what to run next."""
    present = [c for c, m in report["per_class"].items() if m["support"]]
    chance = 100 / max(len(present), 1)
    lines = [f"test   UA {100 * report['ua']:.1f}   WA {100 * report['wa']:.1f}   macro-F1 "
             f"{100 * report['macro_f1']:.1f}   (chance {chance:.1f}: {len(present)} classes)",
             f"protocol  {report['protocol']}{_tested(report.get('data') or {})}"]
    lines += [f"          {report['partial']}"] if report.get("partial") else []
    lines += [f"{name:<9} UA {100 * extra['ua']:.1f}   WA {100 * extra['wa']:.1f}   macro-F1 "
              f"{100 * extra['macro_f1']:.1f}   ({extra['protocol']})"
              for name, extra in report.items() if isinstance(extra, dict) and "ua" in extra]
    recall = "  ".join(f"{c} {100 * report['per_class'][c]['recall']:.1f}" for c in present)
    lines += textwrap.wrap(recall, 88, initial_indent="recall    ", subsequent_indent=" " * 10)
    if checkpoint:
        lines.append(f"model     {shown(checkpoint)}")
    lines += [f"report    {shown(out_dir / 'metrics.json')} (and predictions.csv beside it)",
              f"confusion {shown(out_dir / 'confusion.png')}"]
    return framed(lines, next_steps)


def _tested(data: dict[str, Any]) -> str:
    """`: 4 test speakers, 240 clips` from a report's data section."""
    speakers, clips = data.get("test_speakers"), data.get("test_clips_per_class")
    if not speakers or not clips:
        return ""
    return f": {len(speakers)} test speakers, {sum(clips.values())} clips"


def framed(lines: list[str], next_steps: dict[str, str]) -> str:
    """Summary lines, then the next commands, between two rules."""
    width = max(len(k) for k in next_steps) if next_steps else 0
    steps = [f"  {what:<{width}}  {command}" for what, command in next_steps.items()]
    rule = "-" * 88
    return "\n".join([rule, *lines, *(["next"] if steps else []), *steps, rule])


def serving_steps(checkpoint: str, enrolment: bool) -> dict[str, str]:
    """How to serve a checkpoint and predict a file with it."""
    ckpt = shown(checkpoint)
    enrol = " --enrol SAME_SPEAKER_CLIPS..." if enrolment else ""
    return {"serve it": f"ser-serve {ckpt}", "predict a file": f"ser-predict {ckpt} FILE{enrol}"}


def command_name(script: str, command: str) -> str:
    """How this process was started, to repeat it: `python train.py` or `ser-train`."""
    return f"python {script}" if Path(sys.argv[0]).name == script else command


def evaluate(cfg: DictConfig) -> dict:
    model = load_classifier(cfg.ckpt_path)
    data_cfg = cfg.get("data")
    datamodule = datamodule_for(model, data_cfg, cfg.paths)
    datamodule.prepare_data()
    datamodule.setup("test")
    trainer = L.Trainer(accelerator="auto", devices=1, logger=False, enable_progress_bar=False,
                        enable_model_summary=False)
    out_dir = Path(cfg.paths.output_dir)
    report = test_and_report(trainer, model, datamodule, out_dir,
                             checkpoint_label=str(cfg.ckpt_path))
    log.info("%s", json.dumps({k: report[k] for k in ("wa", "ua", "macro_f1", "protocol")}))
    log.info("report written to %s", out_dir)
    if data_cfg is not None:
        (out_dir / "data_config.yaml").write_text(OmegaConf.to_yaml(data_cfg))
    steps = serving_steps(str(cfg.ckpt_path), model.pipeline.uses_enrolment)
    print(summary(report, out_dir, steps, checkpoint=str(cfg.ckpt_path)), flush=True)
    return report

