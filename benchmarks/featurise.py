"""Seed's sequential librosa loop vs `ser.features.featurise`, on real RAVDESS clips.

    python benchmarks/featurise.py [--data-dir ../shared/data/ravdess] [--limit N] [--n-jobs 2]

(a) the seed's loop: per clip `librosa.load(duration=2.5, offset=0.6)`, then its
    extract_features on the original, noise, pitch and pitch+noise versions (one pitch
    shift, as the seed's notebook does);
(b) `featurise(...)` with the same four versions, a fresh (cold) cache directory.
Both run in this process after one untimed warm-up clip (librosa's numba kernels compile
on first use) and after the files were read once, so both see a warm OS page cache.
Noise rows differ by their random draws, so only original and pitch rows are compared.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import librosa
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ser.data.audio import AudioConfig  # noqa: E402
from ser.data.clip import Clip  # noqa: E402
from ser.features import AugmentConfig, FeatureSpec, HandFeatureConfig, featurise  # noqa: E402

VERSIONS = ["original", "noise", "pitch", "pitch_noise"]
N_SAMPLES = 55125  # 2.5 s at 22050 Hz
DIM = 2376


# -- the seed's code (its notebook's functions, with keyword arguments for librosa 0.11) ---


def seed_noise(data: np.ndarray) -> np.ndarray:
    noise_amp = 0.035 * np.random.uniform() * np.amax(data)
    return data + noise_amp * np.random.normal(size=data.shape[0])


def seed_pitch(data: np.ndarray, sr: int, pitch_factor: float = 0.7) -> np.ndarray:
    return librosa.effects.pitch_shift(data, sr=sr, n_steps=pitch_factor)


def seed_extract(data: np.ndarray, sr: int = 22050) -> np.ndarray:
    zcr = librosa.feature.zero_crossing_rate(data, frame_length=2048, hop_length=512)
    rms = librosa.feature.rms(y=data, frame_length=2048, hop_length=512)
    mfcc = librosa.feature.mfcc(y=data, sr=sr)
    return np.hstack((np.squeeze(zcr), np.squeeze(rms), np.ravel(mfcc.T)))


def seed_features(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """The seed's 4 rows of one clip, and the loaded waveform."""
    data, sr = librosa.load(path, duration=2.5, offset=0.6)
    pitched = seed_pitch(data, sr)
    rows = [data, seed_noise(data), pitched, seed_noise(pitched)]
    # short clips: the seed's NaN padding (filled with 0) at the end of each row
    return np.stack([librosa.util.fix_length(seed_extract(r, sr), size=DIM) for r in rows]), data


# -- the benchmark ------------------------------------------------------------------------


def find_clips(data_dir: Path, limit: int | None) -> list[Clip]:
    paths = sorted([*data_dir.glob("Actor_*/*.flac"), *data_dir.glob("Actor_*/*.wav")])
    if not paths:
        raise SystemExit(f"no RAVDESS files under {data_dir}")
    return [Clip(p, "ravdess", "ravdess:?", "?", "?") for p in paths[:limit]]


class Timer:
    """Wall time of a phase, and the CPU other processes burnt meanwhile (Linux).

    On a shared machine a busy neighbour slows either phase; `others` says by how much.
    """

    def __enter__(self) -> Timer:
        self.busy, self.own, self.start = _busy_cpu(), _own_cpu(), time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        self.seconds = time.perf_counter() - self.start
        busy = _busy_cpu()
        self.others = None if busy is None else busy - self.busy - (_own_cpu() - self.own)

    @classmethod
    def empty(cls) -> Timer:
        timer = cls()
        timer.seconds, timer.others = 0.0, 0.0
        return timer

    def __add__(self, other: Timer) -> Timer:
        total = Timer.empty()
        total.seconds = self.seconds + other.seconds
        known = self.others is not None and other.others is not None
        total.others = self.others + other.others if known else None
        return total

    def describe(self, n_clips: int) -> str:
        text = f"{self.seconds:7.2f} s ({self.seconds / n_clips * 1e3:.1f} ms/clip)"
        if self.others is not None:
            text += f"; other processes used {max(self.others, 0.0):.1f} CPU-s meanwhile"
        return text


def _own_cpu() -> float:
    t = os.times()  # children: the pool's workers, counted once joined
    return t.user + t.system + t.children_user + t.children_system


def _busy_cpu() -> float | None:
    """CPU-seconds all processes have used since boot, from /proc/stat."""
    try:
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n")[0].split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + fields[4]  # idle + iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def run_seed(clips: list[Clip]) -> tuple[Timer, np.ndarray, np.ndarray]:
    np.random.seed(0)
    seed_features(clips[0].path)  # warm-up: numba compilation, mel basis import
    with Timer() as timer:
        rows = [seed_features(c.path) for c in clips]
    lengths = np.array([len(r[1]) for r in rows])
    return timer, np.stack([r[0] for r in rows]), lengths


def run_featurise(clips: list[Clip], n_jobs: int) -> tuple[Timer, np.ndarray]:
    spec = FeatureSpec(
        audio=AudioConfig(sample_rate=22050, offset=0.6, duration=2.5),
        hand=HandFeatureConfig(),
        augment=AugmentConfig(),
    )
    with tempfile.TemporaryDirectory(prefix="ser-feature-cache-") as cache:
        with Timer() as timer:
            table = featurise(
                clips, VERSIONS, spec, cache_dir=Path(cache), n_jobs=n_jobs, progress=False
            )
    assert table.n_computed == len(clips) * len(VERSIONS), table.n_computed
    return timer, table.features.reshape(len(clips), len(VERSIONS), -1)


def report_differences(seed: np.ndarray, ours: np.ndarray, full: np.ndarray) -> None:
    """Max |diff| per block (over full-length clips: a short clip's blocks shift) and in all."""
    blocks = {"zcr": slice(0, 108), "rms": slice(108, 216), "mfcc": slice(216, DIM)}
    print(
        f"max |seed - ours| (relative to the block's max |value|), {full.sum()} full-length clips:"
    )
    for v in ("original", "pitch"):
        i = VERSIONS.index(v)
        ref, diff = seed[:, i], np.abs(seed[:, i] - ours[:, i])
        parts = []
        for name, cols in blocks.items():
            worst = diff[full, cols].max()
            parts.append(f"{name} {worst:.3g} ({worst / np.abs(ref[full, cols]).max():.2g})")
        rel = diff.max() / np.abs(ref).max()
        print(f"  {v:8s} " + ", ".join(parts))
        print(f"  {'':8s} all {len(ref)} clips, whole row: {diff.max():.3g} ({rel:.2g})")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=ROOT.parent / "shared/data/ravdess")
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--n-jobs", type=int, default=2)
    parser.add_argument(
        "--interleave",
        type=int,
        default=1,
        metavar="K",
        help="alternate (a) and (b) over K blocks of clips, so a busy neighbour on a shared "
        "machine slows both alike (each block is its own cold featurise call)",
    )
    args = parser.parse_args(argv)

    clips = find_clips(args.data_dir, args.limit)
    for clip in clips:  # warm the OS page cache for both runs
        clip.path.read_bytes()
    print(f"{len(clips)} clips x {len(VERSIONS)} versions from {args.data_dir}")

    blocks = np.array_split(np.arange(len(clips)), max(1, args.interleave))
    seed_t, ours_t, seed, ours, lengths = Timer.empty(), Timer.empty(), [], [], []
    for block in blocks:
        part = [clips[i] for i in block]
        timer, rows, n = run_seed(part)
        seed_t, seed, lengths = seed_t + timer, [*seed, rows], [*lengths, n]
        timer, rows = run_featurise(part, args.n_jobs)
        ours_t, ours = ours_t + timer, [*ours, rows]
    print(f"(a) seed loop, sequential librosa: {seed_t.describe(len(clips))}")
    print(f"(b) featurise, cold cache, n_jobs={args.n_jobs}: {ours_t.describe(len(clips))}")
    print(f"speed-up: {seed_t.seconds / ours_t.seconds:.2f}x")
    lengths = np.concatenate(lengths)
    report_differences(np.concatenate(seed), np.concatenate(ours), lengths == N_SAMPLES)


if __name__ == "__main__":
    main()
