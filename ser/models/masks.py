"""Padding masks shared by the waveform networks (no heavy imports: the log-mel CNN
uses them without pulling in transformers)."""

from __future__ import annotations

import torch


def sample_mask(lengths: torch.Tensor, size: int) -> torch.Tensor:
    """(B, size) bool: True on each row's first `lengths[b]` positions."""
    return torch.arange(size, device=lengths.device)[None, :] < lengths[:, None]


def masked_mean(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over time of (B, T, H) where `mask` (B, T) is True."""
    m = mask.to(hidden.dtype)[..., None]
    return (hidden * m).sum(1) / m.sum(1).clamp(min=1.0)
