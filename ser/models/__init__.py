"""Model architectures (plain nn.Modules; training lives in ser.training).

`FAMILIES` names every model family a checkpoint may hold: its network class and the
kind of input it consumes ("vector" or "waveform", see ser.features.pipelines). A
checkpoint's network is rebuilt only through this table (`net_from_meta`), never from
a class path written in the file. Classes are imported on first use: the transformer
families pull in transformers.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any

from torch import nn


@dataclass(frozen=True)
class Family:
    net: str  # "module:Class", with meta() and from_meta(meta)
    input_kind: str

    def net_class(self) -> type[nn.Module]:
        module, name = self.net.split(":")
        return getattr(importlib.import_module(module), name)


FAMILIES: dict[str, Family] = {
    "cnn": Family("ser.models.cnn1d:SeedCNN", "vector"),
    "stats_linear": Family("ser.models.stats_linear:StatsLinearEnsemble", "vector"),
    # one frozen-encoder network, three families (encoder x head, see ser.models.frozen)
    "wav2vec2_cnn": Family("ser.models.frozen:FrozenBackbone", "waveform"),
    "ssl_frozen": Family("ser.models.frozen:FrozenBackbone", "waveform"),
    "whisper_frozen": Family("ser.models.frozen:FrozenBackbone", "waveform"),
    "hubert": Family("ser.models.hubert:FinetuneClassifier", "waveform"),
    "logmel_cnn": Family("ser.models.logmel_cnn:LogMelCNN", "waveform"),
}


def family(name: str) -> Family:
    if name not in FAMILIES:
        raise ValueError(f"unknown model family {name!r}; known: {sorted(FAMILIES)}")
    return FAMILIES[name]


def net_from_meta(family_name: str, meta: dict[str, Any]) -> nn.Module:
    """The network a checkpoint describes, with random weights (its state dict follows)."""
    return family(family_name).net_class().from_meta(meta)
