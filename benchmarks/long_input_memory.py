"""Peak memory of `ser-predict` on long recordings, against the same model on one clip.

    python benchmarks/long_input_memory.py CKPT [CKPT ...] [--minutes 30]

Writes (to a temporary folder) a recording of real RAVDESS speech (from SER_DATA_DIR,
else ../shared/data) repeated to `--minutes`: a 48 kHz stereo 16-bit WAV and a 16 kHz
mono FLAC. Each `ser-predict` runs in a fresh process that reports its own peak resident
set size (VmHWM, Linux) when done; the first run of each model predicts one 3.5 s clip, so
"over one clip" is what the recording's length costs beyond the model and its libraries.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

ROOT = Path(__file__).resolve().parents[1]
# VmHWM, not ru_maxrss: a forked child keeps its parent's ru_maxrss through exec
RUN = (
    "import re, sys\n"
    "from ser.serving.predict import main\n"
    "code = main(sys.argv[1:])\n"
    "hwm = re.search(r'VmHWM:\\s+(\\d+)', open('/proc/self/status').read()).group(1)\n"
    "print('PEAK_KB', hwm, file=sys.stderr)\n"
    "sys.exit(code)\n"
)


def speech(data_dir: Path, seconds: float) -> np.ndarray:
    """Actor 1's clips joined, repeated to `seconds`, at 16 kHz."""
    files = sorted((data_dir / "ravdess" / "Actor_01").glob("*.flac"))
    if not files:
        sys.exit(f"no RAVDESS clips under {data_dir}/ravdess/Actor_01")
    joined = np.concatenate([sf.read(f, dtype="float32")[0] for f in files])
    return np.tile(joined, int(np.ceil(seconds * 16000 / len(joined))))[: int(seconds * 16000)]


def peak_mb(ckpt: Path, audio: Path) -> float:
    out = subprocess.run([sys.executable, "-c", RUN, str(ckpt), str(audio), "--json"],
                         capture_output=True, text=True, cwd=ROOT, check=False)
    if out.returncode != 0:
        sys.exit(f"ser-predict failed on {audio}:\n{out.stderr[-2000:]}")
    line = next(x for x in out.stderr.splitlines() if x.startswith("PEAK_KB"))
    return int(line.split()[1]) / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoints", nargs="+", type=Path)
    parser.add_argument("--minutes", type=float, default=30.0)
    args = parser.parse_args()
    data_dir = Path(os.environ.get("SER_DATA_DIR", ROOT.parent / "shared" / "data"))
    wave = speech(data_dir, args.minutes * 60)
    with tempfile.TemporaryDirectory() as tmp:
        clip, mono16, stereo48 = (Path(tmp) / n for n in ("clip.wav", "long.flac", "long.wav"))
        sf.write(clip, wave[: int(3.5 * 16000)], 16000)
        sf.write(mono16, wave, 16000)
        wave48 = soxr.resample(wave, 16000, 48000).astype(np.float32)
        sf.write(stereo48, np.stack([wave48, 0.8 * wave48], axis=1), 48000, subtype="PCM_16")
        del wave48
        print(f"{args.minutes:g} min recordings: 48 kHz stereo WAV "
              f"{stereo48.stat().st_size / 1e6:.0f} MB, 16 kHz FLAC "
              f"{mono16.stat().st_size / 1e6:.0f} MB")
        for ckpt in args.checkpoints:
            base = peak_mb(ckpt, clip)
            print(f"{ckpt}: one 3.5 s clip {base:.0f} MB peak")
            for name, path in (("16 kHz mono FLAC", mono16), ("48 kHz stereo WAV", stereo48)):
                peak = peak_mb(ckpt, path)
                print(f"  {name}: {peak:.0f} MB peak, {peak - base:+.0f} MB over one clip "
                      f"({peak / base:.2f}x)")


if __name__ == "__main__":
    main()
