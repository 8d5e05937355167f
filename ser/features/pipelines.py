"""Input pipelines: how audio becomes the tensors a network sees, for every model family.

One object per input kind, built from config for training (`build_pipeline`) and from a
checkpoint's metadata alone for evaluation and serving (`pipeline_from_meta`). Training,
evaluation, `ser-predict`, `ser-serve` and ONNX export all call the same object, so a
clip's features, its test-time versions and its normalisation are made the same way
everywhere.

Every batch is a dict: `inputs` (tensors whose two leading dimensions are clip and
version: (clips, versions, ...)), `labels` (clips,), `index` (clips,) positions in the
stage's dataset, and optionally `keys` (content keys of the clip-version rows, for caches).
The network sees the rows flattened; a clip's probability is the mean over its versions.

- `VectorPipeline` (`kind` hand | utterance_stats | opensmile): a fixed-size vector per
  clip version (the seed's ZCR/RMS/MFCC frames of a crop, or statistics or openSMILE
  functionals of the whole clip), cached on
  disk, optionally standardised per speaker, then standardised with training statistics.
- `WaveformPipeline` (`kind` waveform): 16 kHz samples, cropped, padded per batch, with
  on-line augmentation of training clips.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from ser.data.audio import AudioConfig, AudioError, resample
from ser.data.clip import Clip
from ser.data.splits import Split, check_no_leak, check_rows_no_leak
from ser.features.augment import AugmentConfig, check_versions, make_versions
from ser.features.extract import (
    FEATURE_KINDS,
    WHOLE_CLIP_KINDS,
    FeatureSpec,
    FeatureTable,
    clip_vector,
    featurise,
    worker_context,
)
from ser.features.hand import HandFeatureConfig, hand_features
from ser.features.opensmile_functionals import OpenSmileConfig, OpenSmileMissingError
from ser.features.speaker_norm import (
    Moments,
    SpeakerNormConfig,
    moments,
    normalise_by_group,
    speaker_version_groups,
)
from ser.features.utterance import UtteranceStatsConfig
from ser.features.waveform import (
    LengthBucketSampler,
    WaveAugmentConfig,
    WaveformConfig,
    WaveformDataset,
    clip_samples,
    collate_waves,
    pad_waves,
)

log = logging.getLogger(__name__)

STD_FLOOR = 1e-8  # standardisation never divides by less
# seconds a whole-clip model reads as one clip (4x RAVDESS's longest); longer recordings
# are read in windows of this length, so memory stays bounded
WHOLE_CLIP_LIMIT = 20.0
SEED_FILL = 0.9  # share of the crop a seed-padded model needs (see VectorPipeline.windows)


class ShortAudioError(AudioError):
    """Less audio than the model needs; `code` is what the serving API answers."""

    code = "too_short"


@dataclass
class BuildContext:
    """How a datamodule wants stages built; `skipped` collects the files left out."""

    cache_dir: Path | None = None
    n_jobs: int = 2
    on_bad_file: str = "error"
    progress: bool = True
    fit: bool = True  # fit the pipeline's statistics on the training rows
    skipped: list[tuple[Path, str]] = field(default_factory=list)


@dataclass
class StageData:
    """One stage's dataset and, per item, its clip (index into the clips) and version."""

    dataset: Dataset
    clip_index: np.ndarray  # (items,)
    versions: list[str]  # per item, e.g. "original" or "original+speed0.9"
    labels: np.ndarray  # (items,) class indices


class InputPipeline(ABC):
    """Audio in, network inputs out; the same object for training and serving."""

    kind: ClassVar[str]
    input_kind: ClassVar[str]  # "vector" or "waveform": what a network family consumes
    input_names: ClassVar[tuple[str, ...]]
    splits_rows: ClassVar[bool] = False  # the seed's random protocol splits augmented rows

    # --- training --------------------------------------------------------------------
    @abstractmethod
    def build(self, clips: Sequence[Clip], labels: np.ndarray, split: Split, stage: str,
              ctx: BuildContext) -> dict[str, StageData]:
        """Datasets of the stages `stage` needs ("fit": train/val/test, "test": test);
        extra test sets (e.g. "no_enrolment") may come beside them."""

    @abstractmethod
    def loader(self, data: StageData, batch_size: int, shuffle: bool, n_jobs: int,
               seed: int) -> DataLoader:
        """Batches in the pipelines' dict layout."""

    @abstractmethod
    def net_kwargs(self, class_names: Sequence[str]) -> dict[str, Any]:
        """What a network of a matching family is sized by (input dim, classes)."""

    def protocol(self) -> dict[str, Any]:
        """What the pipeline adds to a report's protocol (e.g. speaker normalisation)."""
        return {}

    # --- checkpoints -----------------------------------------------------------------
    @abstractmethod
    def meta(self) -> dict[str, Any]:
        """Settings and fitted statistics, plain JSON values; `kind` names the class."""

    @classmethod
    @abstractmethod
    def from_meta(cls, meta: dict[str, Any]) -> InputPipeline:
        """The pipeline a checkpoint describes."""

    # --- serving ---------------------------------------------------------------------
    @property
    @abstractmethod
    def audio(self) -> AudioConfig:
        """The crop (offset, window length, minimum length) and the model's rate."""

    @property
    def n_versions(self) -> int:
        """Versions per clip at test time (their probabilities are averaged)."""
        return 1

    def windows(self, n: int, sample_rate: int, hop: float | None = None
                ) -> list[tuple[int, int]]:
        """(start, end) of each window in samples at the recording's own rate.

        The first window is the crop training used for a clip (from `offset`, at most
        `duration` long), so a clip of the training corpus gets evaluation's prediction;
        a longer recording adds a window every `hop` s (default: one window length)
        while a whole window fits. Whole-clip models (`duration` None) read one window, or
        windows of `WHOLE_CLIP_LIMIT` s of a longer recording.
        """
        a = self.audio
        first = int(a.offset * sample_rate)
        if n - first < a.min_duration * sample_rate:
            raise ShortAudioError(
                f"only {max(n - first, 0) / sample_rate:.2f} s of audio after the model's "
                f"{a.offset:g} s offset, need at least {a.min_duration:g} s")
        window = a.duration
        if window is None:
            if n - first <= WHOLE_CLIP_LIMIT * sample_rate:
                return [(first, n)]
            window = WHOLE_CLIP_LIMIT  # a whole-clip model reads a long recording in parts
        hop = window if hop is None else hop
        if hop <= 0:
            raise ValueError(f"hop must be positive, got {hop}")
        length = int(window * sample_rate)
        starts = [first]
        while (nxt := int((a.offset + len(starts) * hop) * sample_rate)) + length <= n:
            starts.append(nxt)
        return [(s, min(s + length, n)) for s in starts]

    @abstractmethod
    def serve_inputs(self, mono: np.ndarray, sample_rate: int,
                     spans: Sequence[tuple[int, int]], enrolment: Any = None
                     ) -> dict[str, np.ndarray]:
        """Network inputs (windows, versions, ...) for windows of a mono recording."""

    def enrol(self, clips: Sequence[tuple[np.ndarray, int]]) -> Any:
        """A speaker's statistics from (mono, sample rate) clips of their voice."""
        raise ValueError("this model was not trained with speaker normalisation; "
                         "enrolment clips would not be used")

    @property
    def uses_enrolment(self) -> bool:
        return False

    def example_inputs(self) -> dict[str, torch.Tensor]:
        """Inputs of the right shapes for tracing an export (2 clips)."""
        raise NotImplementedError

    def dynamic_axes(self) -> dict[str, dict[int, str]]:
        """Input axes that vary at run time (beyond the clip axis)."""
        return {}


# --- feature vectors ---------------------------------------------------------------------


class _VectorDataset(Dataset):
    """(items, versions, D) float32 features with labels."""

    def __init__(self, features: np.ndarray, labels: np.ndarray) -> None:
        self.features = torch.from_numpy(np.ascontiguousarray(features, dtype=np.float32))
        self.labels = torch.from_numpy(labels)

    def __len__(self) -> int:
        return len(self.features)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor, int]:
        return self.features[i], self.labels[i], i


class EpochShuffle(Sampler[int]):
    """A permutation that depends on (seed, epoch) alone, so a resumed run shuffles its
    later epochs as the uninterrupted run did (Lightning calls `set_epoch`)."""

    def __init__(self, n: int, seed: int = 0) -> None:
        self.n, self.seed, self.epoch = n, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        return iter(np.random.default_rng([self.seed, self.epoch]).permutation(self.n).tolist())

    def __len__(self) -> int:
        return self.n


def collate_vectors(items: Sequence[tuple[torch.Tensor, torch.Tensor, int]]) -> dict[str, Any]:
    features, labels, index = zip(*items, strict=True)
    return {"inputs": {"features": torch.stack(features)}, "labels": torch.stack(labels),
            "index": torch.tensor(index, dtype=torch.long)}


class VectorPipeline(InputPipeline):
    """Fixed-size vectors of each clip version: hand features or utterance statistics.

    Training rows are `train_versions` of each training clip; validation and test clips
    are scored on `test_versions` (test-time augmentation). With `speaker_norm`, each
    (speaker, version)'s rows are standardised by their own statistics first (test
    speakers by their unlabelled test clips; "no_enrolment" scores the fallback to the
    training pool's statistics). Then every row is standardised with the training rows'
    mean and std, fit in `build` and carried in the checkpoint.
    """

    input_kind = "vector"
    input_names = ("features",)
    splits_rows = True

    def __init__(self, spec: FeatureSpec, train_versions: Sequence[str] = ("original",),
                 test_versions: Sequence[str] = ("original",),
                 speaker_norm: SpeakerNormConfig | None = None,
                 standardise: Moments | None = None, fallback: Moments | None = None) -> None:
        self.spec = spec
        self.train_versions = check_versions(train_versions)
        self.test_versions = check_versions(test_versions)
        if self.test_versions[0] != "original":
            raise ValueError(f"augment.test_versions must start with 'original', got "
                             f"{self.test_versions}")
        if spec.kind == "hand":
            spec.n_samples  # noqa: B018 - fails early without a fixed window length
        self.speaker_norm = speaker_norm or SpeakerNormConfig()
        self.standardise = standardise  # fit on the training rows
        self.fallback = fallback  # the training pool's statistics: no enrolment

    @property
    def kind(self) -> str:  # type: ignore[override]
        return self.spec.kind

    @property
    def audio(self) -> AudioConfig:
        return self.spec.audio

    @property
    def n_versions(self) -> int:
        return len(self.test_versions)

    def windows(self, n: int, sample_rate: int, hop: float | None = None
                ) -> list[tuple[int, int]]:
        """As for every pipeline; a model that pads short clips as the seed did judges only
        clips that fill most of its crop (the shortest RAVDESS clip fills 92%)."""
        spans = super().windows(n, sample_rate, hop)
        a, hand = self.spec.audio, self.spec.hand
        if self.spec.kind == "hand" and hand.short_clips == "seed":
            have, need = (spans[0][1] - spans[0][0]) / sample_rate, SEED_FILL * a.duration
            if have < need:
                raise ShortAudioError(
                    f"only {have:.2f} s of audio after the model's {a.offset:g} s offset: this "
                    f"model pads short clips as the seed did (features.hand.short_clips=seed) "
                    f"and judges clips with at least {need:.2f} s there")
        return spans

    @property
    def dim(self) -> int:
        return self.spec.dim

    def net_kwargs(self, class_names: Sequence[str]) -> dict[str, Any]:
        return {"n_features": self.dim, "n_classes": len(class_names)}

    def protocol(self) -> dict[str, Any]:
        return {"speaker_norm": self.speaker_norm.mode,
                "speaker_norm_test": self.speaker_norm.test}

    # --- training --------------------------------------------------------------------
    def build(self, clips: Sequence[Clip], labels: np.ndarray, split: Split, stage: str,
              ctx: BuildContext) -> dict[str, StageData]:
        def table(indices: Sequence[int], versions: Sequence[str]) -> FeatureTable:
            return self._featurise(clips, indices, versions, ctx)

        if split.rows_leak:
            tables = self._leaky_rows(split, table(range(len(clips)), self.train_versions))
        elif stage == "test":
            tables = {"test": table(split.test, self.test_versions)}
        else:
            tables = {"train": table(split.train, self.train_versions),
                      "val": table(split.val, self.test_versions),
                      "test": table(split.test, self.test_versions)}
            ids = {k: [clips[i].clip_id for i in t.clip_index] for k, t in tables.items()}
            check_rows_no_leak(ids["train"], ids["test"])
            check_rows_no_leak(ids["train"], ids["val"])
        if self.speaker_norm.enabled:
            tables = self._normalise_speakers(clips, tables, ctx.fit)
        if ctx.fit and "train" in tables:
            train = tables["train"].features
            self.standardise = Moments(train.mean(axis=0),
                                       np.maximum(train.std(axis=0), STD_FLOOR))
        if self.standardise is None:
            raise ValueError("the pipeline has no standardisation statistics: build the "
                             "training stage first, or load them from a checkpoint")
        grouped = len(self.test_versions) > 1 and not split.rows_leak
        return {name: self._stage(t, labels, grouped and name != "train")
                for name, t in tables.items()}

    def _featurise(self, clips: Sequence[Clip], indices: Sequence[int],
                   versions: Sequence[str], ctx: BuildContext) -> FeatureTable:
        indices = list(indices)
        table = featurise([clips[i] for i in indices], versions, self.spec,
                          cache_dir=ctx.cache_dir, n_jobs=ctx.n_jobs,
                          on_bad_file=ctx.on_bad_file, progress=ctx.progress)
        for path, reason in table.skipped:
            log.warning("skipped %s: %s", path, reason)
            ctx.skipped.append((path, reason))
        table.clip_index = np.asarray(indices, dtype=np.int64)[table.clip_index]
        return table

    def _leaky_rows(self, split: Split, table: FeatureTable) -> dict[str, FeatureTable]:
        """The seed's protocol: augment every clip, then split the rows at random."""
        rng = np.random.default_rng(split.seed)
        order = rng.permutation(len(table.features))
        n_test = int(round(split.test_fraction * len(order)))
        test = _take(table, np.sort(order[:n_test]))
        return {"train": _take(table, np.sort(order[n_test:])), "val": test, "test": test}

    def _normalise_speakers(self, clips: Sequence[Clip], raw: dict[str, FeatureTable],
                            fit: bool) -> dict[str, FeatureTable]:
        """Each (speaker, version)'s rows standardised with their own statistics.

        Test rows use their speaker's own clips (`test: speaker`) or the training pool's
        statistics (`test: global`); with `test: speaker` the global case is kept as the
        extra test set "no_enrolment", so both are measured in one run.
        """
        eps = self.speaker_norm.eps
        if fit and "train" in raw:
            self.fallback = moments(raw["train"].features, eps)

        def by_speaker(t: FeatureTable) -> FeatureTable:
            groups = speaker_version_groups([clips[i].speaker for i in t.clip_index],
                                            t.versions)
            return replace(t, features=normalise_by_group(t.features, groups, eps))

        tables = {stage: by_speaker(t) for stage, t in raw.items()}
        if "test" in raw and self.fallback is not None:
            test = raw["test"]
            fallback = replace(test, features=self.fallback.apply(test.features))
            tables["test" if self.speaker_norm.test == "global" else "no_enrolment"] = fallback
        return tables

    def _stage(self, table: FeatureTable, labels: np.ndarray, grouped: bool) -> StageData:
        features = self.standardise.apply(table.features)
        if grouped:  # (clips * versions, D) clip by clip -> (clips, versions, D)
            v = len(self.test_versions)
            features = features.reshape(-1, v, features.shape[-1])
            names = ["+".join(table.versions[i:i + v]) for i in range(0, len(table.versions), v)]
            index = table.clip_index[::v]
        else:
            features, names, index = features[:, None], list(table.versions), table.clip_index
        return StageData(_VectorDataset(features, labels[index]), index, names, labels[index])

    def loader(self, data: StageData, batch_size: int, shuffle: bool, n_jobs: int,
               seed: int) -> DataLoader:
        sampler = EpochShuffle(len(data.dataset), seed) if shuffle else None
        return DataLoader(data.dataset, batch_size=batch_size, sampler=sampler,
                          collate_fn=collate_vectors)

    # --- checkpoints -----------------------------------------------------------------
    def meta(self) -> dict[str, Any]:
        def plain(m: Moments | None) -> dict | None:
            return None if m is None else {"mean": m.mean.tolist(), "std": m.std.tolist()}

        return {"kind": self.kind, "features": asdict(self.spec),
                "train_versions": self.train_versions, "test_versions": self.test_versions,
                "speaker_norm": asdict(self.speaker_norm),
                "standardise": plain(self.standardise), "fallback": plain(self.fallback)}

    @classmethod
    def from_meta(cls, meta: dict[str, Any]) -> VectorPipeline:
        f = meta["features"]
        # checkpoints from before `short_clips` existed padded short clips as the seed did
        hand = HandFeatureConfig(**{"short_clips": "seed", **f["hand"]})
        spec = FeatureSpec(audio=AudioConfig(**f["audio"]), hand=hand,
                           augment=AugmentConfig(**f["augment"]), kind=f["kind"],
                           stats=UtteranceStatsConfig(**f["stats"]),
                           opensmile=OpenSmileConfig(**f.get("opensmile", {})))

        def moments_of(m: dict | None) -> Moments | None:
            if m is None:
                return None
            mean, std = (np.asarray(m[k], dtype=np.float32) for k in ("mean", "std"))
            if mean.shape != (spec.dim,) or std.shape != (spec.dim,) or (std <= 0).any():
                raise ValueError(f"statistics of {mean.shape} values for {spec.dim} features")
            return Moments(mean, std)

        pipeline = cls(spec, meta["train_versions"], meta["test_versions"],
                       SpeakerNormConfig(**meta["speaker_norm"]),
                       moments_of(meta["standardise"]), moments_of(meta.get("fallback")))
        if pipeline.standardise is None:
            raise ValueError("no standardisation statistics")
        if pipeline.speaker_norm.enabled and pipeline.fallback is None:
            raise ValueError("a speaker-normalised model without its fallback statistics")
        return pipeline

    # --- serving ---------------------------------------------------------------------
    def _rows(self, wave: np.ndarray) -> np.ndarray:
        """(versions, D) raw vectors of one window at the model's rate."""
        sr = self.spec.audio.sample_rate
        # versions made as in training: speed versions exactly; random ones draw from the
        # augment seed, as a recording has no file digest to seed them with
        rng = np.random.default_rng(self.spec.augment.seed)
        waves = make_versions(wave, sr, self.test_versions, self.spec.augment, rng)
        if self.spec.kind in WHOLE_CLIP_KINDS:
            return np.stack([clip_vector(waves[v], self.spec) for v in self.test_versions])
        n = self.spec.n_samples
        return np.concatenate([hand_features(waves[v][None, :n], sr, self.spec.hand, n)
                               for v in self.test_versions])

    def serve_inputs(self, mono: np.ndarray, sample_rate: int,
                     spans: Sequence[tuple[int, int]], enrolment: Any = None
                     ) -> dict[str, np.ndarray]:
        target = self.spec.audio.sample_rate
        rows = np.stack([self._rows(resample(mono[s:e], sample_rate, target))
                         for s, e in spans])  # (windows, versions, D)
        if self.speaker_norm.enabled:
            stats = enrolment or [self.fallback] * self.n_versions
            rows = np.stack([m.apply(rows[:, v]) for v, m in enumerate(stats)], axis=1)
        return {"features": self.standardise.apply(rows)}

    @property
    def uses_enrolment(self) -> bool:
        return self.speaker_norm.enabled

    def enrol(self, clips: Sequence[tuple[np.ndarray, int]]) -> list[Moments]:
        """Per test-time version, the mean and std of a speaker's clips (audio only)."""
        if not self.speaker_norm.enabled:
            return super().enrol(clips)
        target = self.spec.audio.sample_rate
        stacked = np.stack([self._rows(resample(m, sr, target)) for m, sr in clips])
        stats = [moments(stacked[:, v], self.speaker_norm.eps) for v in range(self.n_versions)]
        if any(np.median(m.std) <= 10 * self.speaker_norm.eps for m in stats):
            raise ValueError("the enrolment clips hardly differ from each other (their spread "
                             "is degenerate): enrol different recordings of the speaker")
        return stats

    def example_inputs(self) -> dict[str, torch.Tensor]:
        return {"features": torch.zeros(2, self.n_versions, self.dim)}


def _take(table: FeatureTable, rows: np.ndarray) -> FeatureTable:
    """The given rows of a feature table, as a new table."""
    return FeatureTable(features=table.features[rows], clip_index=table.clip_index[rows],
                        versions=[table.versions[i] for i in rows], skipped=list(table.skipped))


# --- waveforms ---------------------------------------------------------------------------


class WaveformPipeline(InputPipeline):
    """16 kHz waveforms cut at `audio.duration`, padded per batch, lengths as a mask.

    Training clips may be randomly cropped and augmented on-line (fresh draws every
    epoch); evaluation always reads the crop from the start. Batches come from a
    length-bucketing sampler (`bucket_batches` batches per length-sorted pool).
    """

    kind = "waveform"
    input_kind = "waveform"
    input_names = ("waves", "lengths")

    def __init__(self, cfg: WaveformConfig | None = None,
                 augment: WaveAugmentConfig | None = None, bucket_batches: int = 50) -> None:
        self.cfg = cfg or WaveformConfig()
        self.augment = augment or WaveAugmentConfig()
        self.bucket_batches = bucket_batches

    @property
    def audio(self) -> AudioConfig:
        return self.cfg.audio

    def net_kwargs(self, class_names: Sequence[str]) -> dict[str, Any]:
        return {"class_names": list(class_names)}

    def build(self, clips: Sequence[Clip], labels: np.ndarray, split: Split, stage: str,
              ctx: BuildContext) -> dict[str, StageData]:
        check_no_leak(clips, split)  # each clip is one row: clip-level is enough
        stages = {"test": split.test} if stage == "test" else {
            "train": split.train, "val": split.val, "test": split.test}
        return {name: self._stage(clips, labels, idx, name == "train", ctx)
                for name, idx in stages.items()}

    def _stage(self, clips: Sequence[Clip], labels: np.ndarray, indices: Sequence[int],
               train: bool, ctx: BuildContext) -> StageData:
        """The stage's clips that can be read, with their lengths from the headers."""
        kept, lengths = [], []
        for i in indices:
            try:
                lengths.append(clip_samples(clips[i].path, self.cfg))
            except AudioError as err:
                if ctx.on_bad_file == "error":
                    raise
                log.warning("skipped %s: %s", clips[i].path, err)
                ctx.skipped.append((clips[i].path, str(err)))
                continue
            kept.append(i)
        index = np.asarray(kept, dtype=np.int64)
        dataset = WaveformDataset([clips[i] for i in kept], labels[index].tolist(), self.cfg,
                                  self.augment, train=train)
        dataset.lengths = lengths
        return StageData(dataset, index, ["original"] * len(kept), labels[index])

    def loader(self, data: StageData, batch_size: int, shuffle: bool, n_jobs: int,
               seed: int) -> DataLoader:
        sampler = LengthBucketSampler(data.dataset.lengths, batch_size, shuffle=shuffle,
                                      seed=seed, bucket_batches=self.bucket_batches)
        return DataLoader(data.dataset, batch_sampler=sampler, collate_fn=collate_waves,
                          num_workers=n_jobs, persistent_workers=False,
                          multiprocessing_context=worker_context() if n_jobs else None,
                          pin_memory=torch.cuda.is_available())

    def meta(self) -> dict[str, Any]:
        return {"kind": self.kind, "features": asdict(self.cfg), "augment": asdict(self.augment),
                "bucket_batches": self.bucket_batches}

    @classmethod
    def from_meta(cls, meta: dict[str, Any]) -> WaveformPipeline:
        f = meta["features"]
        cfg = WaveformConfig(audio=AudioConfig(**f["audio"]), train_crop=f["train_crop"])
        augment = WaveAugmentConfig(**(meta.get("augment") or {}))
        return cls(cfg, augment, int(meta.get("bucket_batches", 50)))

    def serve_inputs(self, mono: np.ndarray, sample_rate: int,
                     spans: Sequence[tuple[int, int]], enrolment: Any = None
                     ) -> dict[str, np.ndarray]:
        target = self.cfg.audio.sample_rate
        waves, lengths = pad_waves([resample(mono[s:e], sample_rate, target) for s, e in spans])
        return {"waves": waves.numpy(), "lengths": lengths.numpy()}

    def example_inputs(self) -> dict[str, torch.Tensor]:
        n = self.cfg.max_samples or 4 * self.cfg.audio.sample_rate
        return {"waves": 0.1 * torch.randn(2, 1, n),
                "lengths": torch.tensor([[n], [n - n // 4]], dtype=torch.long)}

    def dynamic_axes(self) -> dict[str, dict[int, str]]:
        return {"waves": {2: "samples"}}


# --- building ----------------------------------------------------------------------------

PIPELINES: dict[str, type[InputPipeline]] = {
    **{kind: VectorPipeline for kind in FEATURE_KINDS},
    WaveformPipeline.kind: WaveformPipeline,
}
INPUT_KINDS = {kind: cls.input_kind for kind, cls in PIPELINES.items()}
# the augment group's `kind` each input kind takes
AUGMENT_KINDS = {"vector": "versions", "waveform": "online"}


def build_pipeline(features: dict, augment: dict | None = None,
                   speaker_norm: dict | None = None) -> InputPipeline:
    """The pipeline of a run's `features`, `augment` and `speaker_norm` configs."""
    features, augment = dict(features), dict(augment or {})
    kind = features.pop("kind", "hand")
    if kind not in PIPELINES:
        raise ValueError(f"features.kind must be one of {sorted(PIPELINES)}, got {kind!r}")
    augment_kind = augment.pop("kind", None)
    wanted = AUGMENT_KINDS[PIPELINES[kind].input_kind]
    if augment_kind not in (None, wanted):
        raise ValueError(f"features.kind {kind!r} takes augment.kind {wanted!r}, "
                         f"got {augment_kind!r}")
    norm = SpeakerNormConfig(**(speaker_norm or {}))
    if kind == WaveformPipeline.kind:
        if norm.enabled:
            raise ValueError("speaker_norm applies to feature-vector models (features=seed_hand, "
                             "utterance_stats or opensmile), not to waveform models")
        return _waveform_pipeline(features, augment)
    train_versions = augment.pop("versions", ["original"])
    test_versions = augment.pop("test_versions", ["original"])
    spec = FeatureSpec(audio=AudioConfig(**features.get("audio", {})),
                       hand=HandFeatureConfig(**features.get("hand", {})),
                       augment=AugmentConfig(**augment), kind=kind,
                       stats=UtteranceStatsConfig(**features.get("stats", {})),
                       opensmile=OpenSmileConfig(**features.get("opensmile", {})))
    return VectorPipeline(spec, train_versions, test_versions, norm)


def _waveform_pipeline(features: dict, augment: dict) -> WaveformPipeline:
    unknown = set(features) - {"audio", "train_crop", "bucket_batches"}
    if unknown:
        raise ValueError(f"waveform models take features.audio, train_crop and bucket_batches, "
                         f"not {sorted(unknown)}")
    audio = AudioConfig(**{**asdict(WaveformConfig().audio), **features.get("audio", {})})
    cfg = WaveformConfig(audio=audio, train_crop=features.get("train_crop", "start"))
    augment = {k: v for k, v in augment.items() if k != "seed"}
    return WaveformPipeline(cfg, WaveAugmentConfig(**augment),
                            int(features.get("bucket_batches", 50)))


def pipeline_from_meta(meta: dict[str, Any]) -> InputPipeline:
    """The pipeline a checkpoint's metadata describes (ValueError if it can't be built)."""
    kind = meta.get("kind") if isinstance(meta, dict) else None
    if kind not in PIPELINES:
        raise ValueError(f"unknown input pipeline {kind!r}; known: {sorted(PIPELINES)}")
    try:
        return PIPELINES[kind].from_meta(meta)
    except (KeyError, TypeError, ValueError, OpenSmileMissingError) as err:
        raise ValueError(f"input pipeline {kind!r}: {err}") from None
