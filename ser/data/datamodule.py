"""LightningDataModule for fixed-size feature vectors: the seed's hand features or
utterance statistics of whole clips (`features.kind`).

Scans the corpora, maps their labels into the run's classes (`labels`: merge/drop),
splits by protocol, featurises (augmented versions on training clips only, cached on
disk), optionally normalises each speaker with its own clips (`speaker_norm`), and fits
standardisation and class weights on the training rows alone, so both follow the
corpus mixture.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from omegaconf import DictConfig, ListConfig, OmegaConf
from torch.utils.data import DataLoader, TensorDataset

from ser.data.audio import AudioConfig
from ser.data.clip import Clip
from ser.data.corpora import load_corpora
from ser.data.download import ensure_ravdess
from ser.data.label_space import LabelSpace, keep_labelled
from ser.data.splits import Split, check_rows_no_leak, make_split
from ser.features.augment import AugmentConfig
from ser.features.extract import FeatureSpec, FeatureTable, featurise
from ser.features.hand import HandFeatureConfig
from ser.features.speaker_norm import (
    Moments,
    SpeakerNormConfig,
    moments,
    normalise_by_group,
    speaker_version_groups,
)
from ser.features.utterance import UtteranceStatsConfig

log = logging.getLogger(__name__)


def balanced_class_weights(labels: np.ndarray, n_classes: int) -> np.ndarray:
    """sklearn's 'balanced': n_samples / (n_classes_present * count); 0 for absent classes."""
    counts = np.bincount(labels, minlength=n_classes).astype(np.float64)
    present = counts > 0
    weights = np.zeros(n_classes)
    weights[present] = len(labels) / (present.sum() * counts[present])
    return weights


def _plain(cfg: Any) -> Any:
    """A config node (DictConfig, ListConfig or plain) as plain dicts and lists."""
    if isinstance(cfg, DictConfig | ListConfig):
        return OmegaConf.to_container(cfg, resolve=True)
    return dict(cfg) if isinstance(cfg, dict) else cfg


def _take(table: FeatureTable, rows: np.ndarray) -> FeatureTable:
    """The given rows of a feature table, as a new table."""
    return FeatureTable(
        features=table.features[rows],
        clip_index=table.clip_index[rows],
        versions=[table.versions[i] for i in rows],
        skipped=list(table.skipped),
    )


def _versions_stacked(table: FeatureTable, n_versions: int) -> FeatureTable:
    """(clips * versions, D) rows, clip by clip, as (clips, versions, D)."""
    features = table.features.reshape(-1, n_versions, table.features.shape[-1])
    names = ["+".join(table.versions[i:i + n_versions])
             for i in range(0, len(table.versions), n_versions)]
    return replace(table, features=features, clip_index=table.clip_index[::n_versions],
                   versions=names)


class FeatureDataModule(L.LightningDataModule):
    def __init__(
        self,
        data_dir: str | Path,
        corpora: Sequence[str] = ("ravdess",),
        split: dict | None = None,
        fold: int = 1,
        features: dict | None = None,
        augment: dict | None = None,
        batch_size: int = 32,
        cache_dir: str | Path | None = None,
        n_jobs: int = 2,
        on_bad_file: str = "error",
        download: bool | None = None,
        progress: bool = True,
        labels: dict | None = None,
        class_names: Sequence[str] | None = None,
        speaker_norm: dict | None = None,
    ) -> None:
        """`labels` merges/drops labels ({merge: {calm: neutral}, drop: [surprised]});
        `class_names` fixes the classes instead (a checkpoint's, for evaluation);
        `speaker_norm` ({mode: speaker, test: speaker|global}) standardises each speaker's
        features with that speaker's own clips (see ser.features.speaker_norm).
        `augment.versions` are the training rows' versions; more than one
        `augment.test_versions` scores validation and test clips on several versions each
        (test-time augmentation: rows become (clips, versions, features))."""
        super().__init__()
        if on_bad_file not in ("error", "skip"):
            raise ValueError(f"data.on_bad_file must be 'error' or 'skip', got {on_bad_file!r}")
        self.data_dir = Path(data_dir)
        self.corpora = list(corpora)
        # plain containers: the split config goes into JSON reports and checkpoints
        self.split_cfg = _plain(split) or {"protocol": "speaker_independent"}
        self.fold = fold
        features = dict(features or {})
        augment = dict(augment or {})
        self.train_versions = list(augment.pop("versions", ["original"]))
        self.test_versions = list(augment.pop("test_versions", ["original"]))
        if not self.test_versions or self.test_versions[0] != "original":
            raise ValueError(f"augment.test_versions must start with 'original', got "
                             f"{self.test_versions}")
        self.spec = FeatureSpec(
            audio=AudioConfig(**features.get("audio", {})),
            hand=HandFeatureConfig(**features.get("hand", {})),
            augment=AugmentConfig(**augment),
            kind=features.get("kind", "hand"),
            stats=UtteranceStatsConfig(**features.get("stats", {})),
        )
        norm = dict(_plain(speaker_norm) or {})
        fallback = (norm.pop("global_mean", None), norm.pop("global_std", None))
        self.speaker_norm = SpeakerNormConfig(**norm)
        # pooled training statistics, the no-enrolment fallback (a checkpoint brings its own)
        self.global_moments = (Moments(np.asarray(fallback[0]), np.asarray(fallback[1]))
                               if fallback[0] is not None else None)
        self.batch_size = batch_size
        self.cache_dir = Path(cache_dir) if cache_dir else None
        self.n_jobs = n_jobs
        self.on_bad_file = on_bad_file
        self.download = download
        self.progress = progress
        self.label_space = LabelSpace.from_config(labels)
        self.test_corpora = list(self.split_cfg.get("test_corpora") or [])
        if set(self.test_corpora) & set(self.corpora):
            raise ValueError(f"test corpora {self.test_corpora} are also training corpora")
        self.class_names: tuple[str, ...] = (
            tuple(class_names) if class_names
            else self.label_space.classes(self.corpora, self.test_corpora)
        )
        self.clips: list[Clip] = []
        self.split: Split | None = None
        self.tables: dict[str, FeatureTable] = {}
        self.datasets: dict[str, TensorDataset] = {}

    @property
    def n_classes(self) -> int:
        return len(self.class_names)

    def prepare_data(self) -> None:
        if "ravdess" in self.corpora + self.test_corpora:
            ensure_ravdess(self.data_dir, download=self.download, progress=self.progress)

    def setup(self, stage: str | None = None) -> None:
        """Featurise what `stage` needs: everything for fit, the test split for test."""
        if self.datasets:
            return
        self.clips = self._labelled(load_corpora(self.data_dir, self.corpora + self.test_corpora))
        self.split = make_split(self.clips, fold=self.fold, **self.split_cfg)
        if self.split.rows_leak:
            self._setup_leaky_rows()
        elif stage == "test":
            self.tables = {"test": self._featurise(self.split.test, self.test_versions)}
        else:
            self._setup_by_clip()
        if self.speaker_norm.enabled:
            self._normalise_speakers()
        if "train" in self.tables:
            self._fit_training_stats()
        if len(self.test_versions) > 1 and not self.split.rows_leak:
            self.tables = {k: t if k == "train" else _versions_stacked(t, len(self.test_versions))
                           for k, t in self.tables.items()}
        self.datasets = {
            stage: TensorDataset(torch.from_numpy(t.features), torch.from_numpy(self.labels(stage)))
            for stage, t in self.tables.items()
        }
        log.info(
            "%s split%s%s: %s rows", self.split.protocol,
            f" fold {self.split.fold}" if self.split.fold else "",
            " (LEAKY)" if self.split.leaky else "",
            {k: len(v) for k, v in self.datasets.items()},
        )

    def _labelled(self, clips: list[Clip]) -> list[Clip]:
        """Clips with their label mapped into the run's classes; the others left out."""
        return keep_labelled(clips, self.label_space, self.class_names,
                             self.corpora + self.test_corpora)

    def _featurise(self, indices: Sequence[int], versions: Sequence[str]) -> FeatureTable:
        table = featurise(
            [self.clips[i] for i in indices], versions, self.spec,
            cache_dir=self.cache_dir, n_jobs=self.n_jobs,
            on_bad_file=self.on_bad_file, progress=self.progress,
        )
        for path, reason in table.skipped:
            log.warning("skipped %s: %s", path, reason)
        # map back to indices into self.clips
        table.clip_index = np.asarray(indices, dtype=np.int64)[table.clip_index]
        return table

    def _setup_by_clip(self) -> None:
        split = self.split
        self.tables = {
            "train": self._featurise(split.train, self.train_versions),
            "val": self._featurise(split.val, self.test_versions),
            "test": self._featurise(split.test, self.test_versions),
        }
        ids = {k: [self.clips[i].clip_id for i in t.clip_index] for k, t in self.tables.items()}
        check_rows_no_leak(ids["train"], ids["test"])
        check_rows_no_leak(ids["train"], ids["val"])

    def _setup_leaky_rows(self) -> None:
        """The seed's protocol: augment every clip, then split the rows at random."""
        every = list(range(len(self.clips)))
        table = self._featurise(every, self.train_versions)
        rng = np.random.default_rng(self.split_cfg.get("seed", 0))
        order = rng.permutation(len(table.features))
        n_test = int(round(self.split_cfg.get("test_fraction", 0.2) * len(order)))
        test_rows, train_rows = np.sort(order[:n_test]), np.sort(order[n_test:])
        test = _take(table, test_rows)
        self.tables = {"train": _take(table, train_rows), "val": test, "test": test}

    def _normalise_speakers(self) -> None:
        """Each (speaker, version)'s rows standardised with their own statistics.

        Test rows use their speaker's own clips (`test: speaker`) or the training pool's
        statistics (`test: global`); with `test: speaker` the global case is kept as the
        extra test set "no_enrolment", so both are measured in one run.
        """
        raw = self.tables
        if "train" in raw:
            self.global_moments = moments(raw["train"].features, self.speaker_norm.eps)
        tables = {stage: self._by_speaker(t) for stage, t in raw.items()}
        if "test" in raw and self.global_moments is not None:
            test = raw["test"]
            fallback = replace(test, features=self.global_moments.apply(test.features))
            if self.speaker_norm.test == "global":
                tables["test"] = fallback
            else:
                tables["no_enrolment"] = fallback
        self.tables = tables

    def _by_speaker(self, table: FeatureTable) -> FeatureTable:
        speakers = [self.clips[i].speaker for i in table.clip_index]
        groups = speaker_version_groups(speakers, table.versions)
        return replace(table, features=normalise_by_group(table.features, groups,
                                                          self.speaker_norm.eps))

    def extra_test_sets(self) -> dict[str, DataLoader]:
        """Further test sets scored with the same checkpoint (e.g. "no_enrolment")."""
        name = "no_enrolment"
        return {name: self._loader(name)} if name in self.datasets else {}

    def _fit_training_stats(self) -> None:
        train = self.tables["train"].features
        self.mean = train.mean(axis=0)
        self.std = np.maximum(train.std(axis=0), 1e-8)
        labels = self.labels("train")
        self.class_weights = balanced_class_weights(labels, self.n_classes)

    def labels(self, stage: str) -> np.ndarray:
        idx = self.tables[stage].clip_index
        return np.array([self.class_names.index(self.clips[i].emotion) for i in idx], np.int64)

    @property
    def n_features(self) -> int:
        return int(next(iter(self.tables.values())).features.shape[-1])

    def metadata(self) -> dict[str, Any]:
        """What a checkpoint needs to featurise new audio and to say how it was trained."""
        return {
            "feature_type": self.spec.kind,
            "features": asdict(self.spec),
            "speaker_norm": self._speaker_norm_meta(),
            "train_versions": self.train_versions,
            "test_versions": self.test_versions,
            "corpora": self.corpora,
            "labels": self.label_space.to_config(),
            "class_names": list(self.class_names),
            "split": {**self.split_cfg, "fold": self.split.fold,
                      "protocol": self.split.protocol, "leaky": self.split.leaky,
                      "tested_corpora": list(self.split.test_corpora),
                      "trained_corpora": self.corpora,
                      "speaker_norm": self.speaker_norm.mode,
                      "speaker_norm_test": self.speaker_norm.test},
            "test_speakers": list(self.split.test_speakers),
        }

    def _speaker_norm_meta(self) -> dict[str, Any]:
        """The speaker-normalisation setting, with the fallback statistics serving needs."""
        meta: dict[str, Any] = asdict(self.speaker_norm)
        if self.speaker_norm.enabled and self.global_moments is not None:
            meta["global_mean"] = self.global_moments.mean.tolist()
            meta["global_std"] = self.global_moments.std.tolist()
        return meta

    def _loader(self, stage: str, shuffle: bool = False) -> DataLoader:
        return DataLoader(self.datasets[stage], batch_size=self.batch_size, shuffle=shuffle)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._loader("test")

    def test_rows(self) -> list[tuple[Clip, str]]:
        """(clip, version) per test row, in loader order, for per-clip prediction files."""
        t = self.tables["test"]
        return [(self.clips[i], v) for i, v in zip(t.clip_index, t.versions, strict=False)]
