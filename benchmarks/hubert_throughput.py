"""HuBERT fine-tune throughput: clips/s and the share of the GPU's bf16 peak it reaches.

    python benchmarks/hubert_throughput.py                       # GPU, bf16, batch 8 and 32
    python benchmarks/hubert_throughput.py --device cpu --steps 2  # smoke test

Builds a distilhubert-sized model with random weights (`pretrained=false`: 2 transformer
layers, hidden 768, 12 heads, FFN 3072, HuBERT-base's conv feature encoder, frozen as in
the recipe) through the project's own builder and LightningModule, and runs full
fine-tune steps (forward, loss, backward, AdamW step) on random 4.5 s 16 kHz batches.
FLOPs of one step: the forward counted by torch.utils.flop_counter (matmuls, convolutions,
attention), plus twice the forward of the trained layers for the backward (`step_flops`).
Achieved TFLOP/s is that times steps per second; its share of `--peak-tflops` (989: H100
SXM dense bf16) is printed beside it, and a measured 8192^3 bf16 matmul for reference.
Layerdrop is off so every step does the same work. Needs no hydra (runs on a bare
machine with torch and transformers).
"""

from __future__ import annotations

import argparse
import functools
import sys
import time
from pathlib import Path

import torch
from torch.nn import functional as F
from torch.utils.flop_counter import FlopCounterMode

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ser.training.transformer_module import WaveformClassifier  # noqa: E402

from ser.data.labels import EMOTIONS  # noqa: E402
from ser.models.hubert import build_finetune_classifier  # noqa: E402

SR = 16000
H100_SXM_BF16_DENSE_TFLOPS = 989.0


def build(device: str, train_feature_encoder: bool) -> WaveformClassifier:
    net = build_finetune_classifier(
        EMOTIONS,
        {
            "name_or_path": "ntu-spml/distilhubert",
            "pretrained": False,
            "config": {
                "hidden_dropout": 0.1,
                "attention_dropout": 0.1,
                "activation_dropout": 0.1,
                "layerdrop": 0.0,
            },
        },
        freeze_feature_encoder=not train_feature_encoder,
    )
    optimizer = functools.partial(torch.optim.AdamW, lr=5e-5)
    return WaveformClassifier(net, EMOTIONS, optimizer).to(device).train()


def make_step(module: WaveformClassifier, device: str, bf16: bool):
    params = [p for p in module.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=5e-5, fused=device == "cuda")

    def step(waves: torch.Tensor, lengths: torch.Tensor, labels: torch.Tensor) -> None:
        with torch.autocast(device, dtype=torch.bfloat16, enabled=bf16):
            logits = module(waves, lengths)
        loss = F.cross_entropy(logits.float(), labels)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return step


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def forward_flops(fn, *args) -> int:
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        fn(*args)
    return counter.get_total_flops()


def step_flops(
    module: WaveformClassifier,
    waves: torch.Tensor,
    lengths: torch.Tensor,
    train_feature_encoder: bool,
) -> int:
    """FLOPs of one training step: forward, plus twice the forward of what is trained.

    Forwards are counted by flop_counter (matmuls, convolutions, attention); the backward
    of a layer costs twice its forward (input and weight gradients). The frozen conv
    feature encoder runs forward only. (flop_counter's own backward count overstates
    grouped convolutions such as HuBERT's positional conv, so it is not used.)
    """
    total = forward_flops(module, waves, lengths)
    if train_feature_encoder:
        return 3 * total
    frozen = forward_flops(module.net.model.base_model.feature_extractor, waves)
    return frozen + 3 * (total - frozen)


def matmul_peak(device: str, n: int = 8192, reps: int = 10) -> float:
    """Measured bf16 TFLOP/s of an n^3 matrix product on this device (what is reachable)."""
    a = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    b = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    sync(device)
    t = time.perf_counter()
    for _ in range(reps):
        a @ b
    sync(device)
    return 2 * n**3 * reps / (time.perf_counter() - t) / 1e12


def run(args: argparse.Namespace, batch_size: int) -> dict:
    device, bf16 = args.device, args.precision == "bf16"
    module = build(device, args.train_feature_encoder)
    step = make_step(module, device, bf16)
    n = round(args.seconds * SR)
    gen = torch.Generator(device="cpu").manual_seed(0)
    waves = (0.1 * torch.randn(batch_size, n, generator=gen)).to(device)
    lengths = torch.full((batch_size,), n, dtype=torch.long, device=device)
    labels = torch.randint(len(EMOTIONS), (batch_size,), generator=gen).to(device)
    batch = (waves, lengths, labels)
    flops = step_flops(module, waves, lengths, args.train_feature_encoder)
    for _ in range(args.warmup):
        step(*batch)
    sync(device)
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    t = time.perf_counter()
    for _ in range(args.steps):
        step(*batch)
    sync(device)
    elapsed = time.perf_counter() - t
    tflops = flops * args.steps / elapsed / 1e12
    return {
        "batch": batch_size,
        "step_ms": 1000 * elapsed / args.steps,
        "clips_per_s": batch_size * args.steps / elapsed,
        "gflop_per_clip": flops / batch_size / 1e9,
        "tflops": tflops,
        "peak_fraction": tflops / args.peak_tflops,
        "mem_gib": torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else 0.0,
    }


def parse(argv: list[str] | None) -> argparse.Namespace:
    cuda = torch.cuda.is_available()
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda" if cuda else "cpu", choices=["cuda", "cpu"])
    p.add_argument(
        "--batch-size",
        type=int,
        nargs="+",
        default=None,
        help="one run per size (default: 8 32 on GPU, 2 on CPU)",
    )
    p.add_argument("--steps", type=int, default=20, help="timed steps per run")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps before timing")
    p.add_argument("--seconds", type=float, default=4.5, help="clip length (the seed's cut)")
    p.add_argument("--precision", default="bf16", choices=["bf16", "fp32"])
    p.add_argument(
        "--train-feature-encoder",
        action="store_true",
        help="train the conv feature encoder too (frozen in the recipe)",
    )
    p.add_argument("--peak-tflops", type=float, default=H100_SXM_BF16_DENSE_TFLOPS)
    p.add_argument(
        "--no-matmul-peak",
        action="store_true",
        help="skip measuring an 8192^3 bf16 matmul for reference",
    )
    args = p.parse_args(argv)
    args.batch_size = args.batch_size or ([8, 32] if args.device == "cuda" else [2])
    return args


def main(argv: list[str] | None = None) -> list[dict]:
    args = parse(argv)
    if args.device == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed shapes: pick the fastest conv kernels
        torch.backends.cuda.matmul.allow_tf32 = True
        print(f"device: {torch.cuda.get_device_name()}, torch {torch.__version__}")
    else:
        print(f"device: cpu ({torch.get_num_threads()} threads), torch {torch.__version__}")
    print(
        f"distilhubert-sized, random init, {args.seconds} s clips, {args.precision}, "
        f"feature encoder {'trained' if args.train_feature_encoder else 'frozen'}; "
        f"peak for the fraction: {args.peak_tflops:g} TFLOP/s"
    )
    results = [run(args, b) for b in args.batch_size]
    print("| batch | step ms | clips/s | GFLOP/clip (fwd+bwd) | TFLOP/s | of peak | GPU mem GiB |")
    print("|---|---|---|---|---|---|---|")
    for r in results:
        print(
            f"| {r['batch']} | {r['step_ms']:.1f} | {r['clips_per_s']:.1f} | "
            f"{r['gflop_per_clip']:.1f} | {r['tflops']:.1f} | {100 * r['peak_fraction']:.1f}% | "
            f"{r['mem_gib']:.1f} |"
        )
    if args.device == "cuda" and not args.no_matmul_peak:
        print(f"reference: 8192^3 bf16 matmul on this GPU: {matmul_peak('cuda'):.0f} TFLOP/s")
    return results


if __name__ == "__main__":
    main()
