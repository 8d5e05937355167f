"""Training-step time of the seed CNN: a plain PyTorch port vs ser's SeedCNN, in one run.

    python benchmarks/cnn_step.py [--steps 30] [--threads 2]

(a) plain: Conv1d blocks as the Keras model reads (conv, BN, ReLU, max-pool, dropout),
    float32 — what a direct port does;
(b) ser: `ser.models.cnn1d.SeedCNN` (2D channels-last convolutions, max-pool before
    ReLU, PCG64 dropout masks) under bf16 autocast, as `trainer.precision=bf16-mixed`.
Both train on the same random batches of 32 x 2376 features with Adam; the median step
time of each and their ratio are printed.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ser.models.cnn1d import SeedCNN  # noqa: E402


def plain_cnn(n_classes: int = 8) -> nn.Module:
    def block(c_in: int, c_out: int, k: int, pool: int, p: float) -> nn.Sequential:
        return nn.Sequential(
            nn.Conv1d(c_in, c_out, k, padding=k // 2), nn.BatchNorm1d(c_out), nn.ReLU(),
            nn.MaxPool1d(pool, 2, pool // 2), nn.Dropout(p),
        )

    return nn.Sequential(
        block(1, 128, 5, 5, 0.4), block(128, 64, 5, 5, 0.3), block(64, 32, 3, 3, 0.3),
        nn.AdaptiveAvgPool1d(1), nn.Flatten(),
        nn.Linear(32, 32), nn.BatchNorm1d(32), nn.Dropout(0.5), nn.Linear(32, n_classes),
    )


def step_times(model: nn.Module, bf16: bool, steps: int, unsqueeze: bool) -> list[float]:
    torch.manual_seed(0)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    x = torch.randn(32, 2376)
    x = x[:, None, :] if unsqueeze else x
    y = torch.randint(0, 8, (32,))
    times = []
    for i in range(steps + 3):
        t0 = time.perf_counter()
        opt.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = nn.functional.cross_entropy(model(x).float(), y)
        loss.backward()
        opt.step()
        if i >= 3:  # warm-up: oneDNN primitive creation
            times.append(time.perf_counter() - t0)
    return times


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    plain = statistics.median(step_times(plain_cnn().train(), False, args.steps, True))
    ours = statistics.median(step_times(SeedCNN().train(), True, args.steps, False))
    print(f"threads={args.threads} batch=32 features=2376 steps={args.steps}")
    print(f"plain Conv1d fp32        : {1000 * plain:7.1f} ms/step")
    print(f"ser SeedCNN bf16 autocast: {1000 * ours:7.1f} ms/step")
    print(f"speed-up                 : {plain / ours:7.2f}x")


if __name__ == "__main__":
    main()
