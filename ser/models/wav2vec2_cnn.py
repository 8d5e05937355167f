"""The seed's second model: a frozen wav2vec2 backbone, its hidden states cached, a CNN head.

Head as the seed's: Conv1d(hidden->128) -> max-pool -> dropout -> Conv1d(128->256) ->
average pool -> Linear(256->classes), with ReLU after each conv. Every step honours the
clip's real length (padding is zeroed before each conv, pooling windows that touch
padding are dropped), so padding a clip does not change its prediction.

Hidden states of one layer (or of all, for a learned weighted sum) are cached on disk per
clip under `cache_dir/<backbone, weights, layer, input settings>/<audio sha1>.npy`, so
later epochs and runs never run the backbone on a clip twice.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F
from transformers import PreTrainedModel

from ser.cache import ArrayCache
from ser.models.backbone import (
    InputSpec,
    frame_lengths,
    freeze,
    load_backbone,
    masked_mean,
    model_from_config,
    normalise,
    sample_mask,
    weights_digest,
)

log = logging.getLogger(__name__)

CACHE_FORMAT = 1  # bump whenever cached values change meaning


class CNNHead(nn.Module):
    """(hidden (B, T, H) or (B, L, T, H) with `n_layers`, frames (B,)) -> logits."""

    def __init__(
        self,
        hidden: int,
        n_classes: int,
        channels: Sequence[int] = (128, 256),
        kernel: int = 3,
        pool: int = 2,
        dropout: float = 0.1,
        n_layers: int | None = None,
    ) -> None:
        super().__init__()
        c1, c2 = channels
        # uniform at the start (softmax of zeros); only with a stack of all layers
        self.layer_weights = nn.Parameter(torch.zeros(n_layers)) if n_layers else None
        self.conv1 = nn.Conv1d(hidden, c1, kernel, padding=kernel // 2)
        self.pool = pool
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv1d(c1, c2, kernel, padding=kernel // 2)
        self.out = nn.Linear(c2, n_classes)

    def forward(self, hidden: torch.Tensor, frames: torch.Tensor) -> torch.Tensor:
        if self.layer_weights is not None:
            w = torch.softmax(self.layer_weights, dim=0).to(hidden.dtype)
            hidden = (hidden * w.view(1, -1, 1, 1)).sum(dim=1)
        mask = sample_mask(frames, hidden.shape[1])[:, None, :]  # (B, 1, T)
        x = hidden.transpose(1, 2) * mask  # zeros beyond the clip = the conv's own padding
        x = F.relu(self.conv1(x)) * mask
        # max_pool1d(x, pool) as a reshape (same values; exports with a dynamic length);
        # a window with any padding is dropped just below
        t = x.shape[-1] // self.pool
        x = x[..., : t * self.pool].unflatten(-1, (t, self.pool)).amax(dim=-1)
        pooled = frames // self.pool
        mask = sample_mask(pooled, x.shape[-1])[:, None, :]
        x = F.relu(self.conv2(self.dropout(x) * mask))
        return self.out(masked_mean(x.transpose(1, 2), mask[:, 0]))


class FrozenBackboneCNN(nn.Module):
    """(waves (B, N), lengths (B,), keys) -> logits; only the head is trained.

    `layer` indexes the backbone's hidden states (0: the projected conv features,
    -1: the last layer) or is "weighted" for a learned softmax-weighted sum of all.
    """

    kind = "wav2vec2_cnn"

    def __init__(
        self,
        backbone: PreTrainedModel,
        inputs: InputSpec,
        head: CNNHead,
        layer: int | str = -1,
        head_cfg: dict | None = None,
        cache_dir: str | Path | None = None,
        cache_dtype: str = "float16",
        source: dict | None = None,
    ) -> None:
        super().__init__()
        if layer != "weighted" and not isinstance(layer, int):
            raise ValueError(f"layer must be an int or 'weighted', got {layer!r}")
        freeze(backbone)
        self.backbone = backbone.eval()
        self.inputs = inputs
        self.head = head
        self.layer = layer
        self.head_cfg = dict(head_cfg or {})
        self.cache_dir = Path(cache_dir) if cache_dir else None
        self.cache_dtype = np.dtype(cache_dtype)
        self.source = dict(source or {})
        self._cache: ArrayCache | None = None

    def train(self, mode: bool = True) -> FrozenBackboneCNN:
        super().train(mode)
        self.backbone.eval()  # frozen: no dropout, and the cached values stay valid
        return self

    # --- backbone ----------------------------------------------------------------------
    def hidden_states(
        self, waves: torch.Tensor, lengths: torch.Tensor
    ) -> list[torch.Tensor]:
        """Per clip, the selected hidden states over its real frames: (T, H) or (L, T, H).

        Backbones that take no padding mask see each clip alone, at its own length, so a
        clip's value never depends on what it was batched with. Always float32.
        """
        device_type = waves.device.type
        with torch.no_grad(), torch.autocast(device_type, enabled=False):
            if self.inputs.attention_mask:
                return self._run(waves.float(), lengths)
            return [self._run(waves[i : i + 1, : int(n)].float(), lengths[i : i + 1])[0]
                    for i, n in enumerate(lengths)]

    def _run(self, waves: torch.Tensor, lengths: torch.Tensor) -> list[torch.Tensor]:
        x = normalise(waves, lengths) if self.inputs.do_normalize else waves
        mask = sample_mask(lengths, x.shape[1]).long() if self.inputs.attention_mask else None
        picked = self._picked(self.backbone(x, attention_mask=mask, output_hidden_states=True))
        frames = frame_lengths(self.backbone, lengths)
        return [picked[i, ..., : int(t), :] for i, t in enumerate(frames)]

    def _picked(self, out: Any) -> torch.Tensor:
        """The configured layer(s) of a backbone output: (B, T, H) or (B, L, T, H)."""
        if self.layer == "weighted":
            return torch.stack(out.hidden_states, dim=1)
        if self.layer == -1:  # after the final layer norm of pre-LN (large) models too
            return out.last_hidden_state
        return out.hidden_states[self.layer]

    def _traced_forward(self, waves: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """The graph an export records: the whole batch through the backbone at once, no
        cache. Serving scores windows of one length together, so no window sees another's
        padding; values pass through the cache dtype, as the head saw them in training."""
        x = normalise(waves, lengths) if self.inputs.do_normalize else waves
        mask = sample_mask(lengths, x.shape[1]).long() if self.inputs.attention_mask else None
        picked = self._picked(self.backbone(x.float(), attention_mask=mask,
                                            output_hidden_states=True))
        dtype = getattr(torch, self.cache_dtype.name)
        return self.head(picked.to(dtype).float(), frame_lengths(self.backbone, lengths))

    @property
    def cache(self) -> ArrayCache | None:
        """Created on first use: the key hashes the weights, which a checkpoint may set."""
        if self.cache_dir is not None and self._cache is None:
            identity = {
                "format": CACHE_FORMAT,
                "backbone": self.source.get("name_or_path"),
                "weights": weights_digest(self.backbone),
                "layer": self.layer,
                "inputs": asdict(self.inputs),
                "dtype": self.cache_dtype.name,
            }
            name = f"{self.source.get('name_or_path', 'backbone')}-layer{self.layer}"
            self._cache = ArrayCache(self.cache_dir, name, identity, dtype=self.cache_dtype)
        return self._cache

    def features(
        self, waves: torch.Tensor, lengths: torch.Tensor, keys: Sequence[str | None] | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Padded hidden states and their frame counts, from the cache where possible.

        Every value goes through the cache's dtype, so a cached and a fresh batch give the
        head exactly the same input.
        """
        keys = list(keys) if keys is not None else [None] * len(waves)
        cache = self.cache
        values: list[np.ndarray | None] = [
            cache.load(k) if cache is not None and k else None for k in keys
        ]
        missing = [i for i, v in enumerate(values) if v is None]
        if missing:
            fresh = self.hidden_states(waves[missing], lengths[missing])
            for i, h in zip(missing, fresh, strict=True):
                values[i] = h.cpu().numpy().astype(self.cache_dtype)
                if cache is not None and keys[i]:
                    cache.save(keys[i], values[i])
        return _pad_time(values, waves.device)

    def forward(
        self,
        waves: torch.Tensor,
        lengths: torch.Tensor,
        keys: Sequence[str | None] | None = None,
    ) -> torch.Tensor:
        if torch.compiler.is_compiling():  # export traces one tensor graph
            return self._traced_forward(waves, lengths)
        hidden, frames = self.features(waves, lengths, keys)
        return self.head(hidden, frames)

    # --- what a checkpoint needs ----------------------------------------------------------
    def meta(self) -> dict[str, Any]:
        return {
            "type": self.kind,
            "config": self.backbone.config.to_dict(),
            "inputs": asdict(self.inputs),
            "layer": self.layer,
            "head": self.head_cfg,
            "cache_dtype": self.cache_dtype.name,
            "source": self.source,
        }

    @classmethod
    def from_meta(cls, meta: dict[str, Any]) -> FrozenBackboneCNN:
        """The network with random weights and no cache, ready for a state dict."""
        backbone = model_from_config(meta["config"], head=False)
        head = _make_head(backbone, meta["layer"], meta["head"])
        return cls(backbone, InputSpec(**meta["inputs"]), head, meta["layer"], meta["head"],
                   cache_dtype=meta["cache_dtype"], source=meta.get("source"))


def _pad_time(values: list[np.ndarray], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack (..., T_i, H) arrays into (B, ..., T_max, H) float32, zeros after each T_i."""
    frames = torch.tensor([v.shape[-2] for v in values], dtype=torch.long)
    shape = (len(values), *values[0].shape[:-2], int(frames.max()), values[0].shape[-1])
    out = torch.zeros(shape, dtype=torch.float32)
    for i, v in enumerate(values):
        out[i, ..., : v.shape[-2], :] = torch.from_numpy(v.astype(np.float32))
    return out.to(device), frames.to(device)


def _make_head(backbone: PreTrainedModel, layer: int | str, head_cfg: dict) -> CNNHead:
    n_layers = backbone.config.num_hidden_layers + 1 if layer == "weighted" else None
    return CNNHead(backbone.config.hidden_size, n_layers=n_layers, **head_cfg)


def build_wav2vec2_cnn(
    class_names: Sequence[str],
    backbone: dict[str, Any],
    layer: int | str = -1,
    channels: Sequence[int] = (128, 256),
    kernel: int = 3,
    pool: int = 2,
    dropout: float = 0.1,
    cache_dir: str | Path | None = None,
    cache_dtype: str = "float16",
) -> FrozenBackboneCNN:
    """The Hydra entry point (`model.net`): load and freeze the backbone, build the head."""
    name, pretrained = str(backbone["name_or_path"]), bool(backbone.get("pretrained", True))
    model, inputs = load_backbone(name, pretrained, head=False, config=backbone.get("config"))
    head_cfg = {"n_classes": len(class_names), "channels": list(channels), "kernel": kernel,
                "pool": pool, "dropout": dropout}
    head = _make_head(model, layer, head_cfg)
    source = {"name_or_path": name, "pretrained": pretrained}
    return FrozenBackboneCNN(model, inputs, head, layer, head_cfg, cache_dir, cache_dtype, source)
