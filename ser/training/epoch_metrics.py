"""Per-epoch metrics shared by every LightningModule: one confusion matrix per stage.

UA/WA/macro-F1 come from `metrics_from_confusion`, so logged, reported and aggregated
numbers agree; validation and test confusion matrices go to TensorBoard as images.
"""

from __future__ import annotations

import numpy as np
from torch import nn
from torchmetrics.classification import MulticlassConfusionMatrix

from ser.evaluation.metrics import metrics_from_confusion


class ConfusionMetricsMixin:
    """Mix into a LightningModule that has `class_names`; call `_init_confusion` in __init__."""

    def _init_confusion(self, n_classes: int) -> None:
        # keys avoid "train": nn.Module.train would be shadowed
        self.confusion = nn.ModuleDict(
            {f"cm_{stage}": MulticlassConfusionMatrix(n_classes)
             for stage in ("train", "val", "test")}
        )
        self.last_metrics: dict[str, dict] = {}

    def _epoch_end(self, stage: str) -> None:
        cm = self.confusion[f"cm_{stage}"].compute().cpu().numpy()
        self.confusion[f"cm_{stage}"].reset()
        metrics = metrics_from_confusion(cm, self.class_names)
        self.last_metrics[stage] = metrics
        for key in ("wa", "ua", "macro_f1"):
            self.log(f"{stage}/{key}", metrics[key], prog_bar=key == "ua" and stage == "val")
        if stage != "train":
            self._log_confusion_image(cm, stage)

    def _log_confusion_image(self, cm: np.ndarray, stage: str) -> None:
        from lightning.pytorch.loggers import TensorBoardLogger

        for logger in self.loggers:
            if isinstance(logger, TensorBoardLogger):
                from ser.evaluation.plots import confusion_figure

                fig = confusion_figure(cm, self.class_names, f"{stage} epoch {self.current_epoch}")
                logger.experiment.add_figure(f"{stage}/confusion", fig, self.current_epoch)

    def on_train_epoch_end(self) -> None:
        self._epoch_end("train")

    def on_validation_epoch_end(self) -> None:
        if self.trainer.sanity_checking:  # sanity batches must not count as an epoch
            self.confusion["cm_val"].reset()
        else:
            self._epoch_end("val")
