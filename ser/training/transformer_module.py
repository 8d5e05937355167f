"""LightningModule for waveform models (frozen wav2vec2 + CNN head, HuBERT fine-tune).

Same metrics, names and report outputs as EmotionClassifier (`val/ua` and friends, one
confusion matrix per stage, `last_metrics`, `last_test_outputs`), so `train(cfg)` and the
reports treat both alike. The checkpoint's `ser_meta` holds `model_type: waveform` and
the network's full description (backbone config, input settings, head), so
`load_classifier` rebuilds it with neither the hub nor the original backbone folder.
Optimiser: the configured one over trainable parameters, linear warm-up for
`warmup_ratio` of all steps, then cosine decay to zero, stepped per optimiser step.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from torch import nn
from transformers import get_cosine_schedule_with_warmup

from ser.models.hubert import FinetuneClassifier
from ser.models.wav2vec2_cnn import FrozenBackboneCNN
from ser.training.epoch_metrics import ConfusionMetricsMixin

MODEL_TYPE = "waveform"
NETS: dict[str, type[nn.Module]] = {
    FinetuneClassifier.kind: FinetuneClassifier,
    FrozenBackboneCNN.kind: FrozenBackboneCNN,
}


def net_from_meta(meta: dict[str, Any]) -> nn.Module:
    """The network a checkpoint describes, with random weights."""
    kind = meta.get("type")
    if kind not in NETS:
        raise ValueError(f"unknown waveform network type {kind!r}; known: {sorted(NETS)}")
    return NETS[kind].from_meta(meta)


class WaveformClassifier(ConfusionMetricsMixin, L.LightningModule):
    def __init__(
        self,
        net: nn.Module,
        class_names: Sequence[str],
        optimizer: Callable[..., torch.optim.Optimizer],
        warmup_ratio: float = 0.1,
        monitor: str = "val/ua",
        class_weighted: bool = True,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(logger=False, ignore=["net"])
        self.net = net
        self.class_names = list(class_names)
        n = len(self.class_names)
        self.register_buffer("class_weights", torch.ones(n))
        self.ser_meta: dict = {}
        self._init_confusion(n)
        self._test_probs: list[torch.Tensor] = []
        self._test_index: list[torch.Tensor] = []
        self.last_test_outputs: np.ndarray | None = None  # (clips, classes), dataset order

    # --- data-dependent state ----------------------------------------------------------
    def attach_training_stats(self, class_weights: np.ndarray, meta: dict) -> None:
        if self.hparams.class_weighted:
            self.class_weights = torch.as_tensor(class_weights, dtype=torch.float32)
        self.ser_meta = dict(meta)

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["ser_meta"] = {**self.ser_meta, "model_type": MODEL_TYPE,
                                  "net": self.net.meta(), "class_names": self.class_names}

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self.ser_meta = checkpoint.get("ser_meta", {})

    def report_info(self) -> dict[str, Any]:
        """Beside the metrics: which backbone, and whether its weights were pretrained."""
        source = dict(getattr(self.net, "source", {}))
        if source and not source.get("pretrained", True):
            source["note"] = "RANDOM-INIT backbone: no pretrained weights were used"
        return {"backbone": source} if source else {}

    def export_pretrained(self, out_dir: str | Path) -> Path | None:
        """transformers' own format (fine-tuned models only); None for other networks."""
        export = getattr(self.net, "export_pretrained", None)
        return export(out_dir, self.class_names) if export else None

    # --- forward -----------------------------------------------------------------------
    def forward(
        self, waves: torch.Tensor, lengths: torch.Tensor, keys: Sequence[str | None] | None = None
    ) -> torch.Tensor:
        """Raw waveforms (B, N) zero-padded, real lengths (B,) in, logits out."""
        return self.net(waves, lengths, keys)

    def _step(self, batch: dict[str, Any], stage: str) -> tuple[torch.Tensor, torch.Tensor]:
        y = batch["labels"]
        logits = self(batch["waves"], batch["lengths"], batch.get("keys"))
        loss = nn.functional.cross_entropy(logits.float(), y, weight=self.class_weights)
        self.confusion[f"cm_{stage}"].update(logits.argmax(dim=-1), y)
        self.log(f"{stage}/loss", loss, on_step=False, on_epoch=True,
                 prog_bar=stage == "train", batch_size=len(y))
        return logits, loss

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        return self._step(batch, "train")[1]

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._step(batch, "val")

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        logits, _ = self._step(batch, "test")
        self._test_probs.append(logits.float().softmax(dim=-1).cpu())
        self._test_index.append(batch["index"].cpu())

    def on_test_epoch_start(self) -> None:
        self._test_probs, self._test_index = [], []

    def on_test_epoch_end(self) -> None:
        self._epoch_end("test")
        if not self._test_probs:
            self.last_test_outputs = None
            return
        probs, index = torch.cat(self._test_probs), torch.cat(self._test_index)
        # batches come sorted by length: put the rows back in the dataset's order
        out = torch.empty_like(probs)
        out[index] = probs
        self.last_test_outputs = out.numpy()

    # --- optimisation ------------------------------------------------------------------
    def configure_optimizers(self) -> Any:
        params = [p for p in self.parameters() if p.requires_grad]
        optimizer = self.hparams.optimizer(params=params)
        total = max(int(self.trainer.estimated_stepping_batches), 1)
        warmup = int(round(self.hparams.warmup_ratio * total))
        scheduler = get_cosine_schedule_with_warmup(optimizer, warmup, total)
        return {"optimizer": optimizer,
                "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


def load_waveform_classifier(path: str | Path, meta: dict, map_location: str = "cpu"
                             ) -> WaveformClassifier:
    """Rebuild from the checkpoint alone (called by ser.training.checkpoint.load_classifier)."""
    net = net_from_meta(meta["net"])
    model = WaveformClassifier.load_from_checkpoint(
        path, map_location=map_location, net=net, weights_only=False
    )
    model.eval()
    return model
