"""One LightningModule for every model family.

It owns the step, the class-weighted loss, the metrics (one confusion matrix per stage),
the test outputs, the optimiser and scheduler set-up and the checkpoint metadata
(`ser.training.schema`); families differ only in the network and the optimiser and
scheduler their config names.

Inputs come in the pipelines' layout (ser.features.pipelines): tensors whose leading
dimensions are (clips, versions). The network sees the rows flattened; a clip's output is
the log of its versions' mean probability (its logits when it has one version).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from torch import nn

from ser.features.pipelines import InputPipeline
from ser.training.epoch_metrics import ConfusionMetricsMixin
from ser.training.schema import CheckpointMeta

SCHEDULER_INTERVALS = ("epoch", "step")


def warmup_cosine(optimizer: torch.optim.Optimizer, total_steps: int,
                  warmup_ratio: float = 0.1) -> torch.optim.lr_scheduler.LambdaLR:
    """transformers' linear warm-up over `warmup_ratio` of the steps, then cosine decay."""
    from transformers import get_cosine_schedule_with_warmup  # heavy: only when used

    return get_cosine_schedule_with_warmup(optimizer, int(round(warmup_ratio * total_steps)),
                                           total_steps)


def in_dataset_order(index: Sequence[torch.Tensor],
                     probs: Sequence[torch.Tensor]) -> tuple[np.ndarray, np.ndarray]:
    """Batches' (rows, probabilities) back in the dataset's order (batches may come
    sorted by length)."""
    rows = torch.cat(list(index))
    order = torch.argsort(rows)
    return rows[order].numpy(), torch.cat(list(probs))[order].numpy()


class SERClassifier(ConfusionMetricsMixin, L.LightningModule):
    """A network and how it is trained; `attach` gives it what the data decided."""

    def __init__(
        self,
        net: nn.Module,
        class_names: Sequence[str],
        optimizer: Callable[..., torch.optim.Optimizer] | None = None,
        scheduler: Callable[..., Any] | None = None,
        scheduler_interval: str = "epoch",
        monitor: str = "val/ua",
        l2: float = 0.0,
        l2_params: Sequence[str] = (),
        class_weighted: bool = True,
    ) -> None:
        super().__init__()
        if scheduler_interval not in SCHEDULER_INTERVALS:
            raise ValueError(f"model.module.scheduler_interval must be one of "
                             f"{SCHEDULER_INTERVALS}, got {scheduler_interval!r}")
        self.net = net
        self.class_names = list(class_names)
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.scheduler_interval = scheduler_interval
        self.monitor = monitor
        self.l2 = l2
        self.l2_params = list(l2_params)
        self.class_weighted = class_weighted
        self.register_buffer("class_weights", torch.ones(len(self.class_names)))
        self._init_confusion(len(self.class_names))
        self.family: str | None = None
        self.pipeline: InputPipeline | None = None
        self.training_info: dict[str, Any] = {}
        self._test_probs: list[torch.Tensor] = []
        self._test_index: list[torch.Tensor] = []
        self.last_test_index: np.ndarray | None = None  # dataset rows scored, sorted
        self.last_test_outputs: np.ndarray | None = None  # (rows, classes) probabilities

    # --- data-dependent state, set once the training split is known -----------------------
    def attach(self, family: str, pipeline: InputPipeline, training_info: dict[str, Any],
               class_weights: np.ndarray | None = None) -> None:
        self.family, self.pipeline, self.training_info = family, pipeline, dict(training_info)
        if self.class_weighted and class_weights is not None:
            self.class_weights = torch.as_tensor(class_weights, dtype=torch.float32)

    def checkpoint_meta(self) -> CheckpointMeta:
        if self.family is None or self.pipeline is None:
            raise RuntimeError("attach(family, pipeline, ...) before saving a checkpoint")
        return CheckpointMeta(family=self.family, pipeline=self.pipeline.meta(),
                              net=self.net.meta(), class_names=self.class_names,
                              training={**self.training_info, **self.report_info()})

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["ser_meta"] = self.checkpoint_meta().to_dict()

    def report_info(self) -> dict[str, Any]:
        """Beside the metrics: which backbone, and whether its weights were pretrained."""
        source = dict(getattr(self.net, "source", {}) or {})
        if source and not source.get("pretrained", True):
            source["note"] = "RANDOM-INIT backbone: no pretrained weights were used"
        return {"backbone": source} if source else {}

    def export_pretrained(self, out_dir: str | Path) -> Path | None:
        """transformers' own format (fine-tuned models only); None for other networks."""
        export = getattr(self.net, "export_pretrained", None)
        return export(out_dir, self.class_names) if export else None

    def on_fit_start(self) -> None:
        """Nets with a closed-form part (LDA) fit it once, on the training rows."""
        if not getattr(self.net, "needs_closed_form_fit", False):
            return
        xs, ys = [], []
        for batch in self.trainer.datamodule.train_dataloader():
            xs.append(batch["inputs"]["features"].flatten(0, 1))
            ys.append(batch["labels"])
        self.net.fit_closed_form(torch.cat(xs).to(self.device), torch.cat(ys))

    # --- forward -------------------------------------------------------------------------
    def forward(self, inputs: dict[str, torch.Tensor],
                keys: Sequence[str | None] | None = None) -> torch.Tensor:
        """(clips, versions, ...) inputs -> (clips, classes) logits, or the log of the
        versions' mean probability when there are several."""
        b, v = next(iter(inputs.values())).shape[:2]
        args = [x.flatten(0, 1) for x in inputs.values()]
        logits = self.net(*args) if keys is None else self.net(*args, keys)
        if v == 1:
            return logits
        probs = logits.float().softmax(dim=-1).reshape(b, v, -1).mean(dim=1)
        return probs.clamp_min(1e-12).log()

    def _step(self, batch: dict[str, Any], stage: str) -> tuple[torch.Tensor, torch.Tensor]:
        """Logs the loss, accumulates the confusion matrix; (logits, loss)."""
        y = batch["labels"]
        logits = self(batch["inputs"], batch.get("keys"))
        loss = nn.functional.cross_entropy(logits.float(), y, weight=self.class_weights)
        self.confusion[f"cm_{stage}"].update(logits.argmax(dim=-1), y)
        self.log(f"{stage}/loss", loss, on_step=False, on_epoch=True,
                 prog_bar=stage == "train", batch_size=len(y))
        return logits, loss

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        return self._step(batch, "train")[1] + self._l2_penalty()

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._step(batch, "val")

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        logits, _ = self._step(batch, "test")
        self._test_probs.append(logits.float().softmax(dim=-1).cpu())
        self._test_index.append(batch["index"].cpu())

    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, torch.Tensor]:
        """(dataset rows, probabilities) of a batch: scoring that logs and counts nothing."""
        probs = self(batch["inputs"], batch.get("keys")).float().softmax(dim=-1)
        return {"index": batch["index"].cpu(), "probs": probs.cpu()}

    def on_test_epoch_start(self) -> None:
        self._test_probs, self._test_index = [], []

    def on_test_epoch_end(self) -> None:
        self._epoch_end("test")
        if not self._test_probs:
            self.last_test_index = self.last_test_outputs = None
            return
        self.last_test_index, self.last_test_outputs = in_dataset_order(self._test_index,
                                                                        self._test_probs)

    # --- regularisation and optimisation -------------------------------------------------
    def _l2_penalty(self) -> torch.Tensor:
        """Keras-style kernel_regularizer: l2 * sum(w^2) on the named weights only
        (names or glob patterns such as `layers.*.weight`)."""
        if not self.l2 or not self.l2_params:
            return torch.zeros((), device=self.device)
        return self.l2 * sum(p.pow(2).sum() for p in self._l2_weights())

    def _l2_weights(self) -> list[torch.Tensor]:
        params = dict(self.net.named_parameters())
        chosen = [p for name, p in params.items()
                  if any(fnmatchcase(name, pattern) for pattern in self.l2_params)]
        if not chosen:
            raise ValueError(f"l2_params {self.l2_params} match none of the network's "
                             f"parameters {list(params)}")
        return chosen

    def configure_optimizers(self) -> Any:
        if self.optimizer_factory is None:
            raise RuntimeError("a model loaded for inference has no optimiser")
        optimizer = self.optimizer_factory(params=[p for p in self.parameters()
                                                   if p.requires_grad])
        if self.scheduler_factory is None:
            return optimizer
        if self.scheduler_interval == "step":
            total = max(int(self.trainer.estimated_stepping_batches), 1)
            scheduler = self.scheduler_factory(optimizer=optimizer, total_steps=total)
            return {"optimizer": optimizer,
                    "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
        scheduler = self.scheduler_factory(optimizer=optimizer)
        return {"optimizer": optimizer,
                "lr_scheduler": {"scheduler": scheduler, "monitor": self.monitor}}
