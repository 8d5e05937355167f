"""The seed's 1D CNN on stacked hand features, in torch.

Keras original: three Conv1D blocks (128/64/32 filters, kernels 5/5/3, 'same'
padding) each with BatchNorm, ReLU, MaxPool(pool, stride 2, 'same') and Dropout,
then GlobalAveragePooling, Dense(32) + BN + Dropout(0.5), Dense(n_classes).

The 1D convolutions run as 2D ones over a (channels, 1, length) image in
channels-last memory: the same arithmetic, but CPU max-pooling is about 4x faster in
that layout, and it dominated the step time (see README, "Training speed").
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F


class FastDropout(nn.Module):
    """Dropout whose CPU mask comes from numpy's PCG64 random bytes.

    torch's CPU generator (MT19937) made dropout masks the largest single cost of a
    training step here; 16 random bits per element from PCG64 are about 5x cheaper.
    The drop probability is rounded to a multiple of 1/65536 (0.4 -> 0.399994) and
    kept values are scaled by 1/(1-p), as nn.Dropout does. Other devices use
    F.dropout. The generator is seeded from torch's, so `seed_everything` fixes it.
    """

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = p
        self._threshold = int(round(p * 65536))
        self._rng: np.random.Generator | None = None

    def reset_rng(self) -> None:
        """Draw the generator's seed from torch's again on next use (after a reseed)."""
        self._rng = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0:
            return x
        if x.device.type != "cpu":
            return F.dropout(x, self.p, training=True)
        if self._rng is None:
            self._rng = np.random.default_rng(int(torch.randint(2**62, (1,)).item()))
        bits = np.frombuffer(self._rng.bytes(2 * x.numel()), dtype=np.uint16)
        # i.i.d. bits, so laying them out with x's strides (channels-last) is as random
        # and keeps the multiply on contiguous memory
        keep = torch.from_numpy(bits >= self._threshold).as_strided(x.shape, x.stride())
        return x * (keep.to(x.dtype) * (1.0 / (1.0 - self.p)))


class ConvBlock(nn.Module):
    """Conv -> BN -> ReLU -> MaxPool -> Dropout.

    With `pool_first` the max-pool runs before the ReLU: the same function (ReLU is
    monotonic, so it commutes with max) on half as many elements.
    """

    def __init__(
        self, c_in: int, c_out: int, kernel: int, pool: int, dropout: float, pool_first: bool
    ) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, (1, kernel), padding=(0, kernel // 2))
        self.bn = nn.BatchNorm2d(c_out, eps=1e-3, momentum=0.01)  # Keras BN defaults
        self.pool = pool
        self.dropout = FastDropout(dropout)
        self.pool_first = pool_first

    def _max_pool(self, x: torch.Tensor) -> torch.Tensor:
        # 'same' pooling: -inf padding so every position is covered, length ceil(L/2)
        return F.max_pool2d(x, (1, self.pool), (1, 2), (0, self.pool // 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.bn(self.conv(x))
        x = torch.relu(self._max_pool(x)) if self.pool_first else self._max_pool(torch.relu(x))
        return self.dropout(x)


class SeedCNN(nn.Module):
    """Input (batch, n_features) or (batch, 1, n_features); output logits.

    The blocks end in a global mean, so any `n_features` works; it is kept in `meta()`
    only to say what the network was trained on.
    """


    def __init__(
        self,
        n_classes: int = 8,
        n_features: int | None = None,
        channels: Sequence[int] = (128, 64, 32),
        kernels: Sequence[int] = (5, 5, 3),
        pools: Sequence[int] = (5, 5, 3),
        dropouts: Sequence[float] = (0.4, 0.3, 0.3),
        dense: int = 32,
        dense_dropout: float = 0.5,
        pool_first: bool = True,
    ) -> None:
        super().__init__()
        self.init_args = {"n_classes": n_classes, "n_features": n_features,
                          "channels": list(channels), "kernels": list(kernels),
                          "pools": list(pools), "dropouts": list(dropouts), "dense": dense,
                          "dense_dropout": dense_dropout, "pool_first": pool_first}
        if not len(channels) == len(kernels) == len(pools) == len(dropouts):
            raise ValueError("channels, kernels, pools and dropouts need one entry per block")
        c_in = [1, *channels[:-1]]
        self.blocks = nn.Sequential(
            *(ConvBlock(i, o, k, p, d, pool_first)
              for i, o, k, p, d in zip(c_in, channels, kernels, pools, dropouts, strict=True))
        )
        self.head = nn.Sequential(
            nn.Linear(channels[-1], dense),
            nn.BatchNorm1d(dense, eps=1e-3, momentum=0.01),
            nn.Dropout(dense_dropout),
            nn.Linear(dense, n_classes),
        )
        self.to(memory_format=torch.channels_last)  # conv weights in the activations' layout

    def meta(self) -> dict:
        return dict(self.init_args)

    @classmethod
    def from_meta(cls, meta: dict) -> SeedCNN:
        return cls(**meta)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.reshape(x.shape[0], 1, 1, x.shape[-1]).contiguous(memory_format=torch.channels_last)
        return self.head(self.blocks(x).mean(dim=(2, 3)))


def keras_parameter_count(model: nn.Module) -> int:
    """Parameters as Keras counts them: BatchNorm's moving mean and variance included."""
    n = sum(p.numel() for p in model.parameters())
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            n += m.running_mean.numel() + m.running_var.numel()
    return n
