"""LightningModule for emotion classifiers on fixed-size feature vectors.

Holds everything inference needs beside the weights: class names, the
standardisation statistics fit on the training split (as buffers), and a
`ser_meta` dict (feature config, network config, split protocol) that is written
into every checkpoint.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from fnmatch import fnmatchcase
from typing import Any

import lightning as L
import numpy as np
import torch
from torch import nn

from ser.training.epoch_metrics import ConfusionMetricsMixin


class EmotionClassifier(ConfusionMetricsMixin, L.LightningModule):
    def __init__(
        self,
        net: nn.Module,
        class_names: Sequence[str],
        optimizer: Callable[..., torch.optim.Optimizer],
        scheduler: Callable[..., Any] | None = None,
        monitor: str = "val/ua",
        l2: float = 0.0,
        l2_params: Sequence[str] = (),
        n_features: int = 1,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(logger=False, ignore=["net"])
        self.net = net
        self.class_names = list(class_names)
        n = len(self.class_names)
        self.register_buffer("class_weights", torch.ones(n))
        self.register_buffer("feature_mean", torch.zeros(n_features))
        self.register_buffer("feature_std", torch.ones(n_features))
        self.ser_meta: dict = {}
        self._init_confusion(n)
        self._test_probs: list[torch.Tensor] = []
        self.last_test_outputs: np.ndarray | None = None  # (rows, classes) probabilities

    # --- data-dependent state, set once the training split is known -------------
    def attach_training_stats(
        self, mean: np.ndarray, std: np.ndarray, class_weights: np.ndarray, meta: dict
    ) -> None:
        self.feature_mean = torch.as_tensor(mean, dtype=torch.float32)
        self.feature_std = torch.as_tensor(std, dtype=torch.float32)
        self.class_weights = torch.as_tensor(class_weights, dtype=torch.float32)
        self.ser_meta = dict(meta)

    def on_fit_start(self) -> None:
        """Nets with a closed-form part (LDA) fit it once, on the standardised training rows."""
        if not getattr(self.net, "needs_closed_form_fit", False):
            return
        xs, ys = zip(*self.trainer.datamodule.train_dataloader(), strict=True)
        x = (torch.cat(xs).to(self.device) - self.feature_mean) / self.feature_std
        self.net.fit_closed_form(x, torch.cat(ys))

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["ser_meta"] = {**self.ser_meta, "class_names": self.class_names}

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self.ser_meta = checkpoint.get("ser_meta", {})

    # --- forward ---------------------------------------------------------------
    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """Raw (unstandardised) features in, logits out.

        (B, V, D) input holds V versions of each clip (test-time augmentation): the
        output is then the log of their mean probability.
        """
        x = (features - self.feature_mean) / self.feature_std
        if x.dim() != 3:
            return self.net(x)
        b, v, d = x.shape
        probs = self.net(x.reshape(b * v, d)).float().softmax(dim=-1).reshape(b, v, -1)
        return probs.mean(dim=1).clamp_min(1e-12).log()

    def _step(self, batch: tuple[torch.Tensor, torch.Tensor], stage: str) -> torch.Tensor:
        """Logs the loss, accumulates the confusion matrix, returns the logits."""
        x, y = batch
        logits = self(x)
        self._loss = nn.functional.cross_entropy(logits.float(), y, weight=self.class_weights)
        self.confusion[f"cm_{stage}"].update(logits.argmax(dim=-1), y)
        self.log(f"{stage}/loss", self._loss, on_step=False, on_epoch=True,
                 prog_bar=stage == "train", batch_size=len(y))
        return logits

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        self._step(batch, "train")
        return self._loss + self._l2_penalty()

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self._step(batch, "val")

    def test_step(self, batch: Any, batch_idx: int) -> None:
        logits = self._step(batch, "test")
        self._test_probs.append(logits.float().softmax(dim=-1).cpu())

    def on_test_epoch_start(self) -> None:
        self._test_probs = []

    def _l2_penalty(self) -> torch.Tensor:
        """Keras-style kernel_regularizer: l2 * sum(w^2) on the named weights only
        (names or glob patterns such as `layers.*.weight`)."""
        if not self.hparams.l2 or not self.hparams.l2_params:
            return torch.zeros((), device=self.device)
        return self.hparams.l2 * sum(p.pow(2).sum() for p in self._l2_weights())

    def _l2_weights(self) -> list[torch.Tensor]:
        params = dict(self.net.named_parameters())
        chosen = [p for name, p in params.items()
                  if any(fnmatchcase(name, pattern) for pattern in self.hparams.l2_params)]
        if not chosen:
            raise ValueError(f"l2_params {list(self.hparams.l2_params)} match none of the "
                             f"network's parameters {list(params)}")
        return chosen

    def on_test_epoch_end(self) -> None:
        self._epoch_end("test")
        self.last_test_outputs = torch.cat(self._test_probs).numpy() if self._test_probs else None

    # --- optimisation ----------------------------------------------------------
    def configure_optimizers(self) -> Any:
        optimizer = self.hparams.optimizer(params=self.parameters())
        if self.hparams.scheduler is None:
            return optimizer
        scheduler = self.hparams.scheduler(optimizer=optimizer)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "monitor": self.hparams.monitor},
        }
