"""The seed's 1D CNN on stacked hand features, in torch.

Keras original: three Conv1D blocks (128/64/32 filters, kernels 5/5/3, 'same'
padding) each with BatchNorm, ReLU, MaxPool(pool, stride 2, 'same') and Dropout,
then GlobalAveragePooling, Dense(32) + BN + Dropout(0.5), Dense(n_classes).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


class ConvBlock(nn.Module):
    """Conv -> BN -> ReLU -> MaxPool -> Dropout.

    With `pool_first` the max-pool runs before the ReLU: the same function (ReLU is
    monotonic, so it commutes with max) on half as many elements, which is faster.
    """

    def __init__(
        self, c_in: int, c_out: int, kernel: int, pool: int, dropout: float, pool_first: bool
    ) -> None:
        super().__init__()
        self.conv = nn.Conv1d(c_in, c_out, kernel, padding="same")
        self.bn = nn.BatchNorm1d(c_out, eps=1e-3, momentum=0.01)  # Keras BN defaults
        # Keras 'same' pooling pads with -inf so every input position is covered.
        self.pool = nn.MaxPool1d(pool, stride=2, padding=pool // 2)
        self.dropout = nn.Dropout(dropout)
        self.pool_first = pool_first

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.bn(self.conv(x))
        x = torch.relu(self.pool(x)) if self.pool_first else self.pool(torch.relu(x))
        return self.dropout(x)


class SeedCNN(nn.Module):
    """Input (batch, n_features) or (batch, 1, n_features); output logits."""

    def __init__(
        self,
        n_classes: int = 8,
        channels: Sequence[int] = (128, 64, 32),
        kernels: Sequence[int] = (5, 5, 3),
        pools: Sequence[int] = (5, 5, 3),
        dropouts: Sequence[float] = (0.4, 0.3, 0.3),
        dense: int = 32,
        dense_dropout: float = 0.5,
        pool_first: bool = True,
    ) -> None:
        super().__init__()
        if not len(channels) == len(kernels) == len(pools) == len(dropouts):
            raise ValueError("channels, kernels, pools and dropouts need one entry per block")
        c_in = [1, *channels[:-1]]
        self.blocks = nn.Sequential(
            *(ConvBlock(i, o, k, p, d, pool_first)
              for i, o, k, p, d in zip(c_in, channels, kernels, pools, dropouts))
        )
        self.head = nn.Sequential(
            nn.Linear(channels[-1], dense),
            nn.BatchNorm1d(dense, eps=1e-3, momentum=0.01),
            nn.Dropout(dense_dropout),
            nn.Linear(dense, n_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 2:
            x = x.unsqueeze(1)
        return self.head(self.blocks(x).mean(dim=-1))


def keras_parameter_count(model: nn.Module) -> int:
    """Parameters as Keras counts them: BatchNorm's moving mean and variance included."""
    n = sum(p.numel() for p in model.parameters())
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            n += m.running_mean.numel() + m.running_var.numel()
    return n
