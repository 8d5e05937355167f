"""Loading self-contained checkpoints: network config, weights, statistics, labels."""

from __future__ import annotations

from pathlib import Path

import hydra
import lightning as L
import torch

from ser.training.module import EmotionClassifier


def load_classifier(ckpt_path: str | Path, map_location: str = "cpu") -> L.LightningModule:
    """Rebuild a trained classifier from its checkpoint alone (no config files needed).

    `ser_meta["model_type"]` picks the module: "waveform" for the backbone models
    (WaveformClassifier), absent or "features" for the hand-feature EmotionClassifier.
    """
    path = Path(ckpt_path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    ckpt = torch.load(path, map_location=map_location, weights_only=False)
    meta = ckpt.get("ser_meta")
    if not meta or "net" not in meta:
        raise ValueError(f"{path}: not a ser checkpoint (no 'ser_meta' with a network config)")
    model_type = meta.get("model_type", "features")
    if model_type == "waveform":
        from ser.training.transformer_module import load_waveform_classifier

        return load_waveform_classifier(path, meta, map_location)
    if model_type != "features":
        raise ValueError(f"{path}: unknown model_type {model_type!r}")
    net = hydra.utils.instantiate(meta["net"])
    # our own checkpoints carry config objects (partials, ListConfigs) beside the tensors
    model = EmotionClassifier.load_from_checkpoint(
        path, map_location=map_location, net=net, weights_only=False
    )
    model.eval()
    return model
