"""Serving latency for one 3.5 s clip: features + model (the README figure), and end to end.

    python benchmarks/serve_latency.py CKPT [--clip FILE] [--repeats 200] [--threads 1]
    python benchmarks/serve_latency.py --random-distilhubert [--repeats 50]

`--random-distilhubert` serves a distilhubert-sized HuBERT classifier with random weights
(the architecture is known offline; no training), written to a temporary checkpoint.

Stages, each timed `--repeats` times (taking turns) after 10 untimed warm-up calls:
  features+model   the decoded 3.5 s waveform -> probabilities (window crop, resampling,
                   hand features, network): what one prediction costs the server's CPU
  + decode wav     the same from the bytes of a 16-bit WAV file
  + decode webm    the same from webm/opus bytes, as Chrome's MediaRecorder sends them
and features+model again on onnxruntime (the checkpoint exported to a temporary file).
It prints the median and the 95th percentile of wall-clock time, and the median CPU time
of the calling thread: on a machine busy with other work the CPU time is what an idle
core would take, the wall clock is what this run saw. The clip is a real RAVDESS file
(from SER_DATA_DIR, else ../shared/data) cut or padded to 3.5 s, or a generated tone.
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import soundfile as sf

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ser.serving.predict import Predictor  # noqa: E402

SECONDS = 3.5
DEFAULT_CLIP = "ravdess/Actor_01/03-01-05-02-01-01-01.flac"  # angry, strong, actor 1


def load_clip(path: Path | None) -> tuple[np.ndarray, int, str]:
    """A mono 3.5 s clip: the given file, the default RAVDESS clip, or a generated tone."""
    data_dir = Path(os.environ.get("SER_DATA_DIR", ROOT.parent / "shared" / "data"))
    path = path or (data_dir / DEFAULT_CLIP)
    if path.is_file():
        audio, sr = sf.read(path, dtype="float32", always_2d=True)
        audio = audio.mean(axis=1)
        name = path.name
    else:
        sr, name = 16000, "generated tone"
        t = np.arange(int(SECONDS * sr)) / sr
        audio = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    n = int(SECONDS * sr)
    return np.pad(audio[:n], (0, max(0, n - len(audio)))), sr, name


def webm_bytes(audio: np.ndarray, sr: int) -> bytes:
    import av
    import soxr

    wave = soxr.resample(audio, sr, 48000).astype(np.float32)[None]
    buffer = io.BytesIO()
    with av.open(buffer, "w", format="webm", options={"live": "1"}) as out:
        stream = out.add_stream("libopus", rate=48000, layout="mono")
        frame = av.AudioFrame.from_ndarray(wave, format="fltp", layout="mono")
        frame.sample_rate = 48000
        for packet in [*stream.encode(frame), *stream.encode(None)]:
            out.mux(packet)
    return buffer.getvalue()


def measure(stages: dict[str, Callable[[], object]], repeats: int) -> dict[str, tuple]:
    """Per stage: (median wall ms, p95 wall ms, median thread-CPU ms).

    The stages take turns, one call each per round, so a busy spell on a shared machine
    hits them all alike rather than whichever stage ran then.
    """
    for fn in stages.values():
        for _ in range(10):
            fn()
    wall: dict[str, list[float]] = {label: [] for label in stages}
    cpu: dict[str, list[float]] = {label: [] for label in stages}
    for _ in range(repeats):
        for label, fn in stages.items():
            w0, c0 = time.perf_counter(), time.thread_time()
            fn()
            cpu[label].append(1e3 * (time.thread_time() - c0))
            wall[label].append(1e3 * (time.perf_counter() - w0))
    return {label: (float(np.median(wall[label])), float(np.percentile(wall[label], 95)),
                    float(np.median(cpu[label]))) for label in stages}


def random_distilhubert(folder: Path) -> Path:
    """A checkpoint of a HuBERT classifier of distilhubert's size, random weights."""
    from ser.data.labels import EMOTIONS
    from ser.features.pipelines import WaveformPipeline
    from ser.models.hubert import build_finetune_classifier
    from ser.training.checkpoint import save_classifier
    from ser.training.module import SERClassifier

    net = build_finetune_classifier(EMOTIONS, {"name_or_path": "ntu-spml/distilhubert",
                                               "pretrained": False})
    model = SERClassifier(net, EMOTIONS)
    model.attach("hubert", WaveformPipeline(), {"note": "random-init latency benchmark"})
    return save_classifier(model.eval(), folder / "distilhubert-random.ckpt")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("ckpt", type=Path, nargs="?", default=None)
    parser.add_argument("--random-distilhubert", action="store_true",
                        help="serve a random-init distilhubert-sized classifier instead")
    parser.add_argument("--clip", type=Path, default=None)
    parser.add_argument("--repeats", type=int, default=200)
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    args = parser.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    audio, sr, name = load_clip(args.clip)
    wav = io.BytesIO()
    sf.write(wav, audio, sr, format="WAV", subtype="PCM_16")
    webm = webm_bytes(audio, sr)
    with tempfile.TemporaryDirectory() as tmp:
        from ser.serving.onnx_export import export_onnx, load_onnx

        ckpt = random_distilhubert(Path(tmp)) if args.random_distilhubert else args.ckpt
        if ckpt is None:
            parser.error("give a checkpoint, or --random-distilhubert")
        predictor = Predictor.load(ckpt)
        classify, _ = load_onnx(export_onnx(ckpt, Path(tmp) / "model.onnx"), args.threads)
        onnx = Predictor(classify, predictor.class_names, predictor.pipeline, predictor.info)
        stages = {
            "features+model (torch)": lambda: predictor.predict_waveform(audio, sr),
            "features+model (onnxruntime)": lambda: onnx.predict_waveform(audio, sr),
            "decode wav + features+model": lambda: predictor.predict(wav.getvalue()),
            "decode webm/opus + features+model": lambda: predictor.predict(webm),
        }
        print(f"model: {predictor.name}")
        print(
            f"clip: {name}, {SECONDS} s at {sr} Hz; torch threads {args.threads}; "
            f"{args.repeats} runs each; top: {predictor.predict_waveform(audio, sr).top}"
        )
        print(f"{'stage':36s} {'median':>9s} {'p95':>9s} {'cpu median':>11s}")
        for label, (med, p95, cpu) in measure(stages, args.repeats).items():
            print(f"{label:36s} {med:7.1f}ms {p95:7.1f}ms {cpu:9.1f}ms")


if __name__ == "__main__":
    main()
