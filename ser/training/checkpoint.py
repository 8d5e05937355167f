"""Loading self-contained checkpoints: network config, weights, statistics, labels."""

from __future__ import annotations

from pathlib import Path

import hydra
import torch

from ser.training.module import EmotionClassifier


def load_classifier(ckpt_path: str | Path, map_location: str = "cpu") -> EmotionClassifier:
    """Rebuild a trained classifier from its checkpoint alone (no config files needed)."""
    path = Path(ckpt_path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    ckpt = torch.load(path, map_location=map_location, weights_only=False)
    meta = ckpt.get("ser_meta")
    if not meta or "net" not in meta:
        raise ValueError(f"{path}: not a ser checkpoint (no 'ser_meta' with a network config)")
    net = hydra.utils.instantiate(meta["net"])
    # our own checkpoints carry config objects (partials, ListConfigs) beside the tensors
    model = EmotionClassifier.load_from_checkpoint(
        path, map_location=map_location, net=net, weights_only=False
    )
    model.eval()
    return model
