"""LightningDataModule for waveform models: 16 kHz clips, cropped, dynamically padded.

Same corpora, speaker-independent folds and leak guard as the hand-feature pipeline
(`make_split`, `check_no_leak`). Batches are dicts: `waves` (B, N) zero-padded to the
longest clip of the batch, `lengths` (B,) real samples (the attention mask), `labels`,
`index` (position in the stage's clip list) and `keys` (sha1 of a clip's samples, for the
hidden-state cache; None where augmentation or a random crop made the samples one-off).
A length-bucketing batch sampler keeps clips of similar length together, so batches carry
little padding; it also shards batches across DDP ranks.
"""

from __future__ import annotations

import hashlib
import inspect
import logging
import math
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import soundfile as sf
import soxr
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from ser.data.audio import AudioConfig, AudioError, load_audio
from ser.data.clip import Clip
from ser.data.corpora import load_corpora
from ser.data.datamodule import balanced_class_weights
from ser.data.download import ensure_ravdess
from ser.data.label_space import LabelSpace, keep_labelled
from ser.data.splits import Split, check_no_leak, make_split
from ser.features import dsp
from ser.features.augment import add_noise

log = logging.getLogger(__name__)

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


def collate_waves(items: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Zero-pad to the longest clip of the batch; `lengths` marks the real samples."""
    lengths = torch.tensor([len(it["wave"]) for it in items], dtype=torch.long)
    waves = torch.zeros(len(items), int(lengths.max()))
    for row, it in enumerate(items):
        waves[row, : len(it["wave"])] = it["wave"]
    return {
        "waves": waves,
        "lengths": lengths,
        "labels": torch.tensor([it["label"] for it in items], dtype=torch.long),
        "index": torch.tensor([it["index"] for it in items], dtype=torch.long),
        "keys": [it["key"] for it in items],
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


class WaveformDataModule(L.LightningDataModule):
    """Same arguments as the hand-feature FeatureDataModule, so `data=` configs serve both.

    `features` is a WaveformConfig dict, `augment` a WaveAugmentConfig dict (the `seed`
    key of a shared augment config roots nothing here: draws follow torch's seed).
    `n_jobs` is the number of DataLoader workers; `cache_dir` is unused (hidden states
    are cached by the model, which knows the backbone).
    """

    def __init__(
        self,
        data_dir: str | Path,
        corpora: Sequence[str] = ("ravdess",),
        split: dict | None = None,
        fold: int = 1,
        features: dict | None = None,
        augment: dict | None = None,
        batch_size: int = 8,
        cache_dir: str | Path | None = None,
        n_jobs: int = 2,
        on_bad_file: str = "error",
        download: bool | None = None,
        progress: bool = True,
        labels: dict | None = None,
        class_names: Sequence[str] | None = None,
        bucket_batches: int = 50,
        eval_batch_size: int | None = None,
        seed: int = 0,
        speaker_norm: dict | None = None,
    ) -> None:
        super().__init__()
        if (speaker_norm or {}).get("mode", "none") != "none":
            raise ValueError("speaker_norm applies to feature-vector models (features.kind "
                             "hand or utterance_stats), not to waveform models")
        if on_bad_file not in ("error", "skip"):
            raise ValueError(f"data.on_bad_file must be 'error' or 'skip', got {on_bad_file!r}")
        self.data_dir = Path(data_dir)
        self.corpora = list(corpora)
        self.split_cfg = dict(split or {"protocol": "speaker_independent"})
        self.fold = fold
        self.wave_cfg = _waveform_config(features or {})
        self.augment = _augment_config(augment or {})
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.n_jobs = n_jobs
        self.on_bad_file = on_bad_file
        self.download = download
        self.progress = progress
        self.bucket_batches = bucket_batches
        self.seed = seed
        self.label_space = LabelSpace.from_config(labels)
        self.test_corpora = list(self.split_cfg.get("test_corpora") or [])
        self.class_names: tuple[str, ...] = (
            tuple(class_names) if class_names
            else self.label_space.classes(self.corpora, self.test_corpora)
        )
        self.clips: list[Clip] = []
        self.split: Split | None = None
        self.indices: dict[str, list[int]] = {}
        self.lengths: dict[str, list[int]] = {}
        self.datasets: dict[str, WaveformDataset] = {}
        self.skipped: list[tuple[Path, str]] = []

    @property
    def n_classes(self) -> int:
        return len(self.class_names)

    def prepare_data(self) -> None:
        if "ravdess" in self.corpora + self.test_corpora:
            ensure_ravdess(self.data_dir, download=self.download, progress=self.progress)

    def setup(self, stage: str | None = None) -> None:
        if self.datasets:
            return
        self.clips = self._labelled(load_corpora(self.data_dir, self.corpora + self.test_corpora))
        self.split = make_split(self.clips, fold=self.fold, **_split_kwargs(self.split_cfg))
        check_no_leak(self.clips, self.split)  # no-op for the (labelled) leaky protocol
        stages = {"test": self.split.test} if stage == "test" else {
            "train": self.split.train, "val": self.split.val, "test": self.split.test}
        for name, idx in stages.items():
            self.indices[name], self.lengths[name] = self._measure(idx)
            clips = [self.clips[i] for i in self.indices[name]]
            labels = [self.class_names.index(c.emotion) for c in clips]
            self.datasets[name] = WaveformDataset(clips, labels, self.wave_cfg, self.augment,
                                                  train=name == "train")
        if "train" in self.datasets:
            self.class_weights = balanced_class_weights(
                np.asarray(self.datasets["train"].labels), self.n_classes)
        log.info("%s split%s: %s clips", self.split.protocol,
                 f" fold {self.split.fold}" if self.split.fold else " (LEAKY)",
                 {k: len(v) for k, v in self.datasets.items()})

    def _labelled(self, clips: list[Clip]) -> list[Clip]:
        """Clips with their label mapped into the run's classes; the others left out."""
        return keep_labelled(clips, self.label_space, self.class_names,
                             self.corpora + self.test_corpora)

    def _measure(self, indices: Sequence[int]) -> tuple[list[int], list[int]]:
        """Clip indices kept and their lengths in samples (headers only, no decoding)."""
        kept, lengths = [], []
        for i in indices:
            try:
                n = clip_samples(self.clips[i].path, self.wave_cfg)
            except AudioError as err:
                if self.on_bad_file == "error":
                    raise
                log.warning("skipped %s: %s", self.clips[i].path, err)
                self.skipped.append((self.clips[i].path, str(err)))
                continue
            kept.append(i)
            lengths.append(n)
        return kept, lengths

    def labels(self, stage: str) -> np.ndarray:
        return np.asarray(self.datasets[stage].labels, dtype=np.int64)

    def metadata(self) -> dict[str, Any]:
        """What a checkpoint needs to prepare new audio, and how it was trained."""
        return {
            "feature_type": "waveform",
            "features": asdict(self.wave_cfg),
            "augment": asdict(self.augment),
            "corpora": self.corpora,
            "labels": self.label_space.to_config(),
            "class_names": list(self.class_names),
            "split": {**self.split_cfg, "fold": self.split.fold,
                      "protocol": self.split.protocol, "leaky": self.split.leaky,
                      "tested_corpora": list(self.split.test_corpora),
                      "trained_corpora": self.corpora},
            "test_speakers": list(self.split.test_speakers),
        }

    def _loader(self, stage: str, shuffle: bool) -> DataLoader:
        size = self.batch_size if stage == "train" else self.eval_batch_size
        sampler = LengthBucketSampler(self.lengths[stage], size, shuffle=shuffle,
                                      seed=self.seed, bucket_batches=self.bucket_batches)
        return DataLoader(self.datasets[stage], batch_sampler=sampler,
                          collate_fn=collate_waves, num_workers=self.n_jobs,
                          persistent_workers=False, pin_memory=torch.cuda.is_available())

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)

    def test_rows(self) -> list[tuple[Clip, str]]:
        """(clip, version) per test clip in dataset order (the module reorders its outputs)."""
        return [(c, "original") for c in self.datasets["test"].clips]


def _waveform_config(features: dict) -> WaveformConfig:
    unknown = set(features) - {"audio", "train_crop"}
    if unknown:
        raise ValueError(
            f"waveform models take features.audio and features.train_crop, not {sorted(unknown)}"
            " (hand-feature settings? use features=waveform)")
    audio = AudioConfig(**{**asdict(WaveformConfig().audio), **features.get("audio", {})})
    return WaveformConfig(audio=audio, train_crop=features.get("train_crop", "start"))


def _augment_config(augment: dict) -> WaveAugmentConfig:
    augment = {k: v for k, v in augment.items() if k != "seed"}
    if "versions" in augment:
        raise ValueError("augment.versions is the hand-feature pipeline's; waveform models take "
                         "on-line augmentation (augment=waveform or waveform_none)")
    if "speed_range" in augment:
        augment["speed_range"] = tuple(augment["speed_range"])
    return WaveAugmentConfig(**augment)


def _split_kwargs(split_cfg: dict) -> dict:
    """make_split's arguments; augmented rows don't exist here, so never split rows."""
    return {**split_cfg, "rows_leak": False} if split_cfg.get("protocol") == "random" else split_cfg


def waveform_datamodule_for(
    model_meta: dict, data_cfg: Any | None, data_dir: str | Path
) -> WaveformDataModule:
    """A waveform checkpoint's test data: its own corpora/split/fold unless `data_cfg` says.

    Audio settings and classes always come from the checkpoint; nothing is augmented.
    (For evaluate.py: `datamodule_for` calls this when `feature_type` is "waveform".)
    """
    common = {"features": model_meta["features"], "augment": {},
              "labels": model_meta.get("labels"), "class_names": model_meta.get("class_names")}
    if data_cfg is None:
        # only what configures a split; the rest of the metadata describes the run
        known = set(inspect.signature(make_split).parameters) - {"clips", "fold"}
        split = {k: v for k, v in model_meta["split"].items() if k in known}
        return WaveformDataModule(data_dir=data_dir, corpora=model_meta["corpora"], split=split,
                                  fold=model_meta["split"].get("fold") or 1, **common)
    import hydra

    return hydra.utils.instantiate(data_cfg, _target_=f"{__name__}.WaveformDataModule", **common)
