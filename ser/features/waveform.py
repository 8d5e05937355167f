"""Waveform inputs for backbone models: 16 kHz clips, cropped, dynamically padded.

The parts the waveform input pipeline (ser.features.pipelines) is made of: the crop and
augmentation settings, on-line augmentation, a dataset of one stage's clips, the collate
that pads a batch, and a length-bucketing batch sampler that keeps clips of similar
length together (little padding) and shards batches across DDP ranks.

Batch inputs are `waves` (B, 1, N) zero-padded to the longest clip of the batch and
`lengths` (B, 1) real samples (the attention mask); `keys` holds the sha1 of each clip's
samples for the hidden-state cache (None where augmentation or a random crop made the
samples one-off).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
import soxr
import torch
from torch.utils.data import Dataset, Sampler

from ser.data.audio import AudioConfig, AudioError, load_audio
from ser.data.clip import Clip
from ser.features import dsp
from ser.features.augment import add_noise

CROPS = ("start", "random")


@dataclass(frozen=True)
class WaveformConfig:
    """How a file becomes the waveform a backbone sees (the `features` group).

    `audio.duration` is the crop: at most that many seconds (the seed cut HuBERT inputs
    at 4.5 s); None keeps whole clips. `train_crop="random"` takes a random window of
    that length from each training clip, every epoch; evaluation always uses the start.
    """

    audio: AudioConfig = field(default_factory=lambda: AudioConfig(16000, 0.0, 4.5, 0.5))
    train_crop: str = "start"

    def __post_init__(self) -> None:
        if self.train_crop not in CROPS:
            raise ValueError(f"train_crop must be one of {CROPS}, got {self.train_crop!r}")

    @property
    def max_samples(self) -> int | None:
        a = self.audio
        return None if a.duration is None else round(a.duration * a.sample_rate)


@dataclass(frozen=True)
class WaveAugmentConfig:
    """On-line waveform augmentation of training clips (the `augment` group).

    Each is applied with its probability, with fresh draws every epoch: noise as the
    seed's (`amplitude * U(0,1) * max|x|` times N(0,1)), a pitch shift of a uniform
    number of semitones in +-pitch_steps, a speed change by a factor in speed_range.
    """

    noise_prob: float = 0.0
    noise_amplitude: float = 0.035
    pitch_prob: float = 0.0
    pitch_steps: float = 0.7
    speed_prob: float = 0.0
    speed_range: tuple[float, float] = (0.9, 1.1)

    def __post_init__(self) -> None:  # a config or a checkpoint's JSON gives a list
        object.__setattr__(self, "speed_range", tuple(self.speed_range))

    @property
    def active(self) -> bool:
        return max(self.noise_prob, self.pitch_prob, self.speed_prob) > 0


def augment_wave(
    wave: np.ndarray, sr: int, cfg: WaveAugmentConfig, rng: np.random.Generator
) -> np.ndarray:
    """One random draw of the configured augmentations (speed, then pitch, then noise)."""
    if cfg.speed_prob and rng.uniform() < cfg.speed_prob:
        factor = rng.uniform(*cfg.speed_range)
        wave = soxr.resample(wave, sr * factor, sr).astype(np.float32)  # faster: shorter
    if cfg.pitch_prob and rng.uniform() < cfg.pitch_prob:
        steps = rng.uniform(-cfg.pitch_steps, cfg.pitch_steps)
        wave = dsp.pitch_shift(wave[None], sr, steps)[0]
    if cfg.noise_prob and rng.uniform() < cfg.noise_prob:
        wave = add_noise(wave, cfg.noise_amplitude, rng)
    return wave


def audio_key(wave: np.ndarray) -> str:
    """Content key of a waveform's samples (what the hidden-state cache is keyed by)."""
    return hashlib.sha1(np.ascontiguousarray(wave, dtype=np.float32).tobytes()).hexdigest()


def clip_samples(path: Path, cfg: WaveformConfig) -> int:
    """Samples the clip will have after offset, crop and resampling, from its header."""
    a = cfg.audio
    try:
        info = sf.info(str(path))
    except (sf.LibsndfileError, RuntimeError, OSError) as err:
        raise AudioError(f"{path}: cannot read audio ({err})") from None
    seconds = max(info.frames / info.samplerate - a.offset, 0.0)
    if seconds < a.min_duration:
        raise AudioError(f"{path}: only {seconds:.2f} s of audio after offset {a.offset} s, "
                         f"need at least {a.min_duration} s")
    if a.duration is not None:
        seconds = min(seconds, a.duration)
    return int(seconds * a.sample_rate)


class WaveformDataset(Dataset):
    """Clips of one stage; training ones may be randomly cropped and augmented."""

    def __init__(
        self,
        clips: Sequence[Clip],
        labels: Sequence[int],
        cfg: WaveformConfig,
        augment: WaveAugmentConfig | None = None,
        train: bool = False,
    ) -> None:
        self.clips = list(clips)
        self.labels = list(labels)
        self.cfg = cfg
        self.augment = augment if train and augment and augment.active else None
        self.random_crop = train and cfg.train_crop == "random" and cfg.max_samples is not None
        self._rng: np.random.Generator | None = None

    def __len__(self) -> int:
        return len(self.clips)

    @property
    def rng(self) -> np.random.Generator:
        # seeded from torch's generator: per DataLoader worker and epoch, and fixed by
        # seed_everything(workers=True)
        if self._rng is None:
            self._rng = np.random.default_rng(int(torch.randint(2**62, (1,)).item()))
        return self._rng

    def load(self, i: int) -> np.ndarray:
        a = self.cfg.audio
        if not self.random_crop:
            return load_audio(self.clips[i].path, a)
        whole = load_audio(self.clips[i].path, AudioConfig(a.sample_rate, a.offset, None,
                                                           a.min_duration))
        n = self.cfg.max_samples
        start = int(self.rng.integers(0, len(whole) - n + 1)) if len(whole) > n else 0
        return whole[start : start + n]

    def __getitem__(self, i: int) -> dict[str, Any]:
        wave = self.load(i)
        one_off = self.random_crop
        if self.augment is not None:
            wave = augment_wave(wave, self.cfg.audio.sample_rate, self.augment, self.rng)
            one_off = True
        return {
            "wave": torch.from_numpy(np.ascontiguousarray(wave, dtype=np.float32)),
            "label": self.labels[i],
            "index": i,
            "key": None if one_off else audio_key(wave),
        }


def pad_waves(waves: Sequence[np.ndarray | torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, 1, N) zero-padded to the longest, and (B, 1) real lengths."""
    lengths = torch.tensor([len(w) for w in waves], dtype=torch.long)
    out = torch.zeros(len(waves), 1, int(lengths.max()))
    for row, wave in enumerate(waves):
        out[row, 0, : len(wave)] = torch.as_tensor(wave)
    return out, lengths[:, None]


def collate_waves(items: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """A batch in the pipelines' layout: inputs with a (clip, version) leading pair."""
    waves, lengths = pad_waves([it["wave"] for it in items])
    return {
        "inputs": {"waves": waves, "lengths": lengths},
        "keys": [it["key"] for it in items],
        "labels": torch.tensor([it["label"] for it in items], dtype=torch.long),
        "index": torch.tensor([it["index"] for it in items], dtype=torch.long),
    }


class LengthBucketSampler(Sampler[list[int]]):
    """Batches of clips of similar length; shuffled buckets for training, and DDP-aware.

    Training: each epoch, a seeded permutation is cut into pools of `bucket_batches`
    batches, each pool is sorted by length and cut into batches, and the batch order is
    shuffled. Evaluation: all clips sorted by length. Under DDP each rank takes every
    world-th batch; training pads with repeated batches so every rank steps equally
    often, evaluation doesn't (each clip is scored once, counts stay exact).
    """

    def __init__(
        self,
        lengths: Sequence[int],
        batch_size: int,
        shuffle: bool = False,
        seed: int = 0,
        bucket_batches: int = 50,
        num_replicas: int | None = None,
        rank: int | None = None,
    ) -> None:
        if batch_size < 1 or bucket_batches < 1:
            raise ValueError(f"batch_size and bucket_batches must be >= 1, got {batch_size}, "
                             f"{bucket_batches}")
        self.lengths = np.asarray(lengths)
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.bucket_batches = bucket_batches
        self.num_replicas = num_replicas
        self.rank = rank
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _world(self) -> tuple[int, int]:
        if self.num_replicas is not None:
            return self.num_replicas, self.rank or 0
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            return torch.distributed.get_world_size(), torch.distributed.get_rank()
        return 1, 0

    def all_batches(self) -> list[list[int]]:
        """Every rank's batches, in order."""
        n, size = len(self.lengths), self.batch_size
        if not self.shuffle:
            order = np.argsort(self.lengths, kind="stable")
            return [order[i : i + size].tolist() for i in range(0, n, size)]
        rng = np.random.default_rng([self.seed, self.epoch])
        order = rng.permutation(n)
        pool = size * self.bucket_batches
        batches = []
        for start in range(0, n, pool):
            chunk = order[start : start + pool]
            chunk = chunk[np.argsort(self.lengths[chunk], kind="stable")]
            batches += [chunk[i : i + size].tolist() for i in range(0, len(chunk), size)]
        return [batches[i] for i in rng.permutation(len(batches))]

    def __iter__(self) -> Iterator[list[int]]:
        batches = self.all_batches()
        world, rank = self._world()
        if world > 1 and self.shuffle:
            per_rank = math.ceil(len(batches) / world)
            batches = (batches * world)[: per_rank * world]
        return iter(batches[rank::world])

    def __len__(self) -> int:
        world, rank = self._world()
        n = len(self.all_batches())  # cheap: index arithmetic only
        if world == 1:
            return n
        return math.ceil(n / world) if self.shuffle else len(range(rank, n, world))


def padding_fraction(batches: Sequence[Sequence[int]], lengths: Sequence[int]) -> float:
    """Share of a batch tensor's samples that are padding, over all batches."""
    lengths = np.asarray(lengths)
    real = sum(int(lengths[b].sum()) for b in batches)
    total = sum(int(lengths[b].max()) * len(b) for b in batches)
    return 1.0 - real / total if total else 0.0
