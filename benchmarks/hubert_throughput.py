"""HuBERT fine-tune throughput: today's code path against the optimised one, same process.

    python benchmarks/hubert_throughput.py                        # GPU: distil + base, b 32 64
    python benchmarks/hubert_throughput.py --device cpu --small   # tiny sizes, a CPU smoke run

Random-init backbones built offline (`pretrained=false`): distilhubert-sized (2 layers,
hidden 768, HuBERT-base's conv encoder) and HuBERT-base (12 layers); the conv encoder is
frozen as in the recipe; dropouts 0.1, SpecAugment as configured, layerdrop off so every
step does the same work. Each row runs full fine-tune steps (forward, loss, backward,
AdamW step) on one random batch of `--seconds` clips, adding one speed option to the row
above it; `x today` is its clips/s over the first row's. The first row is the recipe as it
runs today (transformers' default sdpa attention, AdamW without fused, cuDNN autotuning
off as Lightning leaves it); `eager attention` is for reference only.

FLOPs of one step, from torch.utils.flop_counter forwards: the frozen conv encoder's
forward, plus three times the forward of everything else (the backward of a layer costs
twice its forward); on a cache hit the encoder's forward is not run, so not counted.
TFLOP/s is those FLOPs over the measured step time, and its share of `--peak-tflops`
(989: H100/H200 SXM dense bf16). Imports torch, transformers and ser.models only (no
hydra, lightning, librosa or soundfile), so it runs on a bare GPU machine.
"""

from __future__ import annotations

import argparse
import copy
import functools
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import transformers
from torch.nn import functional as F
from torch.utils.flop_counter import FlopCounterMode

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ser.models.backbone import POS_CONV_IMPLS, grouped_conv1d, load_backbone  # noqa: E402
from ser.models.hubert import FinetuneClassifier  # noqa: E402

SR = 16000
PEAK_BF16_DENSE_TFLOPS = 989.0  # H100 / H200 SXM
N_CLASSES = 8  # RAVDESS's emotions
MODELS = {"distil": "ntu-spml/distilhubert", "base": "facebook/hubert-base-ls960"}
RECIPE = {"hidden_dropout": 0.1, "attention_dropout": 0.1, "activation_dropout": 0.1,
          "layerdrop": 0.0}
SMALL = {"hidden_size": 64, "num_attention_heads": 4, "intermediate_size": 256,
         "conv_dim": (64,) * 7}  # same strides and kernels: same frames per second
TODAY = {"encoder_no_grad": False, "feature_cache_mb": 0.0, "pos_conv": "native",
         "fused_adamw": False, "cudnn_benchmark": False, "attn": "sdpa", "cached": False}


def rows(device: str, compile_: bool) -> list[tuple[str, dict[str, Any]]]:
    """(label, options) per row; each row adds to the last one (the kernels: alternatives)."""
    steps = [("today (sdpa)", {}),
             ("eager attention (reference)", {"attn": "eager"}),
             ("+ encoder no_grad", {"encoder_no_grad": True}),
             ("+ fused AdamW", {"fused_adamw": True})]
    if device == "cuda":
        steps.append(("+ cudnn.benchmark", {"cudnn_benchmark": True}))
    steps += [(f"+ pos_conv={impl}", {"pos_conv": impl}) for impl in POS_CONV_IMPLS[1:]]
    # with the kernel fastest alone (the pos conv profile printed above the table)
    steps.append(("+ encoder cache (hits)", {"pos_conv": "best", "feature_cache_mb": 4096.0,
                                             "cached": True}))
    if compile_:
        steps.append(("+ torch.compile encoder", {"compile_encoder": True}))
    out, opts = [], dict(TODAY)
    for label, change in steps:
        if label.startswith("eager"):
            out.append((label, {**TODAY, **change}))
            continue
        if not label.startswith("+ pos_conv="):
            opts = {**opts, **change}
            out.append((label, dict(opts)))
        else:  # the kernels are alternatives: each against the row before them
            out.append((label, {**opts, **change}))
    return out


def build_base(name: str, small: bool, device: str, attn: str = "sdpa"):
    """The backbone with a fresh head; the same seed, so the same weights for each `attn`."""
    config = {**RECIPE, **(SMALL if small else {})}
    torch.manual_seed(0)
    model, inputs = load_backbone(name, pretrained=False, head=True, config=config,
                                  attn_implementation=attn, num_labels=N_CLASSES)
    return model.to(device), inputs


def make_net(bases: dict, inputs, opts: dict[str, Any], device: str) -> FinetuneClassifier:
    model = copy.deepcopy(bases[opts["attn"]])
    net = FinetuneClassifier(
        model, inputs, encoder_no_grad=opts["encoder_no_grad"],
        feature_cache_mb=opts["feature_cache_mb"], pos_conv=opts["pos_conv"],
        compile_encoder=opts.get("compile_encoder", False),
    )
    return net.to(device).train()


def make_step(net: FinetuneClassifier, device: str, bf16: bool, fused: bool,
              cudnn_benchmark: bool) -> Callable[..., None]:
    params = [p for p in net.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=5e-5, fused=fused or None)

    def step(waves, lengths, labels, keys) -> None:
        torch.backends.cudnn.benchmark = cudnn_benchmark  # rows take turns: set it each step
        with torch.autocast(device, dtype=torch.bfloat16, enabled=bf16):
            logits = net(waves, lengths, keys)
        F.cross_entropy(logits.float(), labels).backward()
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


def step_flops(net: FinetuneClassifier, waves, lengths) -> tuple[int, int]:
    """(FLOPs of a step, of which the frozen encoder's forward): see the module doc."""
    total = forward_flops(net, waves, lengths)
    frozen = forward_flops(net.model.base_model.feature_extractor, waves)
    return frozen + 3 * (total - frozen), frozen


CLOCK = {"wall": time.perf_counter, "cpu": time.process_time}
clock = time.perf_counter  # main() sets it from --clock


def interleaved(fns: dict[str, Callable[[], None]], device: str, steps: int, warmup: int,
                repeats: int, deadline: float = float("inf")) -> tuple[dict, dict]:
    """Seconds per call of each fn, and its extra GPU memory (GiB) while stepping.

    Blocks of steps/repeats calls, taken in turn (ABCABC...), the fastest block counts:
    load from other processes on the machine then hits every fn alike. A fn that raises
    in its warm-up (say, torch.compile without a compiler) is reported and left out.
    """
    for name, fn in list(fns.items()):
        try:
            for _ in range(warmup):
                fn()
        except Exception as err:  # one row failing must not end the run
            print(f"| {name} | failed: {type(err).__name__}: {str(err)[:300]} |", flush=True)
            fns = {k: v for k, v in fns.items() if k != name}
    sync(device)
    block = max(steps // repeats, 1)
    best: dict[str, float] = dict.fromkeys(fns, float("inf"))
    mem = dict.fromkeys(fns, 0.0)
    for rep in range(repeats):
        for name, fn in fns.items():
            if device == "cuda" and rep == 0:
                torch.cuda.reset_peak_memory_stats()
                before = torch.cuda.memory_allocated()
            t = clock()
            for _ in range(block):
                fn()
            sync(device)
            best[name] = min(best[name], (clock() - t) / block)
            if device == "cuda" and rep == 0:
                mem[name] = (torch.cuda.max_memory_allocated() - before) / 2**30
        if time.perf_counter() > deadline:
            break
    return best, mem


def pos_conv_profile(net: FinetuneClassifier, batch: int, frames: int, device: str,
                     bf16: bool, repeats: int) -> dict[str, float]:
    """ms of the positional conv's forward + backward alone, per kernel."""
    conv = net.model.base_model.encoder.pos_conv_embed.conv
    x = torch.randn(batch, frames, conv.in_channels, device=device, requires_grad=True)

    def once(impl: str) -> None:
        with torch.autocast(device, dtype=torch.bfloat16, enabled=bf16):
            y = grouped_conv1d(x.transpose(1, 2), conv, impl)
        y.float().square().mean().backward()

    fns = {impl: functools.partial(once, impl) for impl in POS_CONV_IMPLS}
    sec, _ = interleaved(fns, device, 5 * repeats, 3, repeats)
    return {impl: 1000 * t for impl, t in sec.items()}


def encoder_ms(net: FinetuneClassifier, waves, device: str, bf16: bool, repeats: int) -> float:
    encoder = net.model.base_model.feature_extractor

    def once() -> None:
        with torch.no_grad(), torch.autocast(device, dtype=torch.bfloat16, enabled=bf16):
            encoder(waves)
    return 1000 * interleaved({"encoder": once}, device, 5 * repeats, 3, repeats)[0]["encoder"]


def run_model(args: argparse.Namespace, which: str, batch: int, deadline: float) -> list[dict]:
    device, bf16 = args.device, args.precision == "bf16"
    bases = {}
    bases["sdpa"], inputs = build_base(MODELS[which], args.small, device)
    bases["eager"], _ = build_base(MODELS[which], args.small, device, "eager")
    base = bases["sdpa"]
    n = round(args.seconds * SR)
    gen = torch.Generator(device="cpu").manual_seed(0)
    waves = (0.1 * torch.randn(batch, n, generator=gen)).to(device)
    lengths = torch.full((batch,), n, dtype=torch.long, device=device)
    labels = torch.randint(N_CLASSES, (batch,), generator=gen).to(device)
    keys = [f"clip{i}" for i in range(batch)]
    today = make_net(bases, inputs, TODAY, device)
    flops, frozen = step_flops(today, waves, lengths)
    frames = int(today.model.base_model._get_feat_extract_output_lengths(torch.tensor(n)))
    profile = pos_conv_profile(today, batch, frames, device, bf16, args.repeats)
    enc = encoder_ms(today, waves, device, bf16, args.repeats)
    del today
    print(f"\n## {which}: {sum(p.numel() for p in base.parameters()) / 1e6:.1f}M params, "
          f"batch {batch}, {frames} frames; frozen conv encoder fwd {enc:.2f} ms; "
          "pos conv fwd+bwd " + ", ".join(f"{k} {v:.2f} ms" for k, v in profile.items()),
          flush=True)
    # compiling takes a minute or two per model: only at the largest batch
    compile_ = batch == max(args.batch_size) and (
        args.compile == "on" or (args.compile == "auto" and device == "cuda"))
    plan = rows(device, compile_)
    best_pos = min(profile, key=profile.get)
    steps = {}
    for label, opts in plan:
        if opts["pos_conv"] == "best":
            opts["pos_conv"] = best_pos
        net = make_net(bases, inputs, opts, device)
        steps[label] = functools.partial(
            make_step(net, device, bf16, opts["fused_adamw"], opts["cudnn_benchmark"]),
            waves, lengths, labels, keys if opts["cached"] else None)
    sec, mem = interleaved(steps, device, args.steps, args.warmup, args.repeats, deadline)
    print("| row | step ms | clips/s | x today | GFLOP/clip | TFLOP/s | of peak | step GiB |")
    print("|---|---|---|---|---|---|---|---|")
    results, ref = [], sec[plan[0][0]]
    for label, opts in plan:
        if label not in sec:
            continue
        executed = flops - frozen if opts["cached"] else flops
        t = sec[label]
        r = {"model": which, "batch": batch, "row": label, "options": opts, "step_ms": 1000 * t,
             "clips_per_s": batch / t, "x_today": ref / t, "gflop_per_clip": executed / batch / 1e9,
             "tflops": executed / t / 1e12, "mem_gib": mem[label],
             "pos_conv_ms": profile, "encoder_fwd_ms": enc}
        r["peak_fraction"] = r["tflops"] / args.peak_tflops
        results.append(r)
        print(f"| {label} | {r['step_ms']:.1f} | {r['clips_per_s']:.1f} | "
              f"{r['x_today']:.2f} | {r['gflop_per_clip']:.3g} | {r['tflops']:.3g} | "
              f"{100 * r['peak_fraction']:.3g}% | {r['mem_gib']:.2f} |", flush=True)
    return results


def matmul_peak(device: str, n: int = 8192, reps: int = 10) -> float:
    """Measured bf16 TFLOP/s of an n^3 matrix product on this device (what is reachable)."""
    a = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    b = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    sec, _ = interleaved({"mm": lambda: a @ b}, device, reps, 3, 1)
    return 2 * n**3 / sec["mm"] / 1e12


def parse(argv: list[str] | None) -> argparse.Namespace:
    cuda = torch.cuda.is_available()
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda" if cuda else "cpu", choices=["cuda", "cpu"])
    p.add_argument("--small", action="store_true",
                   help="hidden 64, conv channels 64: a CPU-sized smoke run of the same code")
    p.add_argument("--models", nargs="+", default=["distil", "base"], choices=list(MODELS))
    p.add_argument("--batch-size", type=int, nargs="+", default=None,
                   help="one table per size (default: 32 64 on GPU, 4 on CPU)")
    p.add_argument("--steps", type=int, default=None, help="timed steps per row")
    p.add_argument("--repeats", type=int, default=None,
                   help="blocks the timed steps are cut into, rows taking turns")
    p.add_argument("--warmup", type=int, default=None, help="untimed steps before timing")
    p.add_argument("--seconds", type=float, default=None, help="clip length (4.5: the seed's)")
    p.add_argument("--precision", default="bf16", choices=["bf16", "fp32"])
    p.add_argument("--compile", default="auto", choices=["auto", "on", "off"],
                   help="add a torch.compile row at the largest batch (auto: on CUDA only)")
    p.add_argument("--peak-tflops", type=float, default=PEAK_BF16_DENSE_TFLOPS)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--clock", choices=list(CLOCK), default=None,
                   help="wall time, or this process's CPU time (default on CPU: a shared "
                        "machine's load then barely counts; use with --threads 1)")
    p.add_argument("--max-seconds", type=float, default=480.0,
                   help="skip the remaining rows once this much time has passed")
    p.add_argument("--json", type=Path, default=None, help="write all rows here")
    p.add_argument("--no-matmul-peak", action="store_true",
                   help="skip measuring an 8192^3 bf16 matmul for reference")
    args = p.parse_args(argv)
    gpu = args.device == "cuda"
    args.batch_size = args.batch_size or ([32, 64] if gpu else [4])
    args.steps = args.steps or (30 if gpu else 10)
    args.repeats = args.repeats or (3 if gpu else 5)
    args.clock = args.clock or ("wall" if gpu else "cpu")
    args.warmup = args.warmup or (5 if gpu else 1)
    args.seconds = args.seconds or (4.5 if gpu or not args.small else 1.0)
    return args


def main(argv: list[str] | None = None) -> list[dict]:
    global clock
    args = parse(argv)
    clock = CLOCK[args.clock]
    t0 = time.perf_counter()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device == "cuda":
        where = torch.cuda.get_device_name()
    else:
        where = f"cpu ({torch.get_num_threads()} threads)"
    print(f"device: {where}, torch {torch.__version__}, transformers {transformers.__version__}")
    print(f"{'small' if args.small else 'full-size'} random-init models, {args.seconds} s "
          f"clips, {args.precision}, conv encoder frozen; {args.clock} clock; peak for the "
          f"fraction: {args.peak_tflops:g} TFLOP/s", flush=True)
    results = []
    for which in args.models:
        for batch in args.batch_size:
            if time.perf_counter() - t0 > args.max_seconds:
                print(f"\n## {which}, batch {batch}: skipped, past --max-seconds")
                continue
            results += run_model(args, which, batch, t0 + args.max_seconds)
    if args.device == "cuda" and not args.no_matmul_peak:
        print(f"\nreference: 8192^3 bf16 matmul on this GPU: {matmul_peak('cuda'):.0f} TFLOP/s")
    print(f"total {time.perf_counter() - t0:.0f} s")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1, default=str))
    return results


if __name__ == "__main__":
    main()
