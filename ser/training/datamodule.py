"""One LightningDataModule for every input pipeline.

It owns what every model family shares: the corpora, the label space, the split and its
leak guard, class weights, the run's metadata and the test rows. The input pipeline
(`ser.features.pipelines`) supplies each stage's dataset and how it is batched, so a new
input kind is one pipeline class and nothing here.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
from omegaconf import DictConfig, ListConfig, OmegaConf
from sklearn.utils.class_weight import compute_class_weight
from torch.utils.data import DataLoader

from ser.data.clip import Clip
from ser.data.corpora import load_corpora
from ser.data.download import ensure_ravdess
from ser.data.label_space import LabelSpace, keep_labelled
from ser.data.splits import Split, make_split
from ser.features.pipelines import BuildContext, InputPipeline, StageData, build_pipeline

log = logging.getLogger(__name__)

BAD_FILE_POLICIES = ("error", "skip")


def balanced_class_weights(labels: np.ndarray, n_classes: int) -> np.ndarray:
    """scikit-learn's "balanced" weights for the classes present; 0 for absent ones."""
    weights = np.zeros(n_classes)
    present = np.unique(labels)
    if len(present):
        weights[present] = compute_class_weight("balanced", classes=present, y=labels)
    return weights


def plain(cfg: Any) -> Any:
    """A config node (DictConfig, ListConfig or plain) as plain dicts and lists."""
    if isinstance(cfg, DictConfig | ListConfig):
        return OmegaConf.to_container(cfg, resolve=True)
    return dict(cfg) if isinstance(cfg, dict) else cfg


class SERDataModule(L.LightningDataModule):
    """Corpora, split and labels for any input pipeline.

    `features`, `augment` and `speaker_norm` configure the pipeline (or `pipeline` is
    given ready-made: a checkpoint's, for evaluation). `labels` merges/drops labels
    ({merge: {calm: neutral}, drop: [surprised]}); `class_names` fixes the classes
    instead (a checkpoint's). `n_jobs` is the pipeline's workers: featurisation
    processes for feature vectors, DataLoader workers for waveforms.
    """

    def __init__(
        self,
        data_dir: str | Path,
        corpora: Sequence[str] = ("ravdess",),
        split: dict | None = None,
        fold: int = 1,
        features: dict | None = None,
        augment: dict | None = None,
        speaker_norm: dict | None = None,
        batch_size: int = 32,
        eval_batch_size: int | None = None,
        cache_dir: str | Path | None = None,
        n_jobs: int = 2,
        on_bad_file: str = "error",
        download: bool | None = None,
        progress: bool = True,
        labels: dict | None = None,
        class_names: Sequence[str] | None = None,
        seed: int = 0,
        pipeline: InputPipeline | None = None,
    ) -> None:
        super().__init__()
        if on_bad_file not in BAD_FILE_POLICIES:
            raise ValueError(f"data.on_bad_file must be one of {BAD_FILE_POLICIES}, "
                             f"got {on_bad_file!r}")
        self.pipeline = pipeline or build_pipeline(plain(features) or {}, plain(augment),
                                                   plain(speaker_norm))
        self.data_dir = Path(data_dir)
        self.corpora = list(corpora)
        # plain containers: the split config goes into JSON reports and checkpoints
        self.split_cfg = plain(split) or {"protocol": "speaker_independent"}
        self.fold = fold
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.n_jobs = n_jobs
        self.download = download
        self.seed = seed
        self.context = BuildContext(Path(cache_dir) if cache_dir else None, n_jobs, on_bad_file,
                                    progress, fit=pipeline is None)
        self.label_space = LabelSpace.from_config(labels)
        self.test_corpora = list(self.split_cfg.get("test_corpora") or [])
        if set(self.test_corpora) & set(self.corpora):
            raise ValueError(f"test corpora {self.test_corpora} are also training corpora")
        self.class_names: tuple[str, ...] = (
            tuple(class_names) if class_names
            else self.label_space.classes(self.corpora, self.test_corpora))
        self.clips: list[Clip] = []
        self.split: Split | None = None
        self.stages: dict[str, StageData] = {}
        self.class_weights: np.ndarray | None = None

    @property
    def n_classes(self) -> int:
        return len(self.class_names)

    @property
    def skipped(self) -> list[tuple[Path, str]]:
        return self.context.skipped

    def prepare_data(self) -> None:
        if "ravdess" in self.corpora + self.test_corpora:
            ensure_ravdess(self.data_dir, download=self.download, progress=self.context.progress)

    def setup(self, stage: str | None = None) -> None:
        """Build what `stage` needs: every stage for fit, the test stage for test."""
        if self.stages:
            return
        every = self.corpora + self.test_corpora
        self.clips = keep_labelled(load_corpora(self.data_dir, every), self.label_space,
                                   self.class_names, every)
        split_cfg = dict(self.split_cfg)
        if split_cfg.get("protocol") == "random" and not self.pipeline.splits_rows:
            split_cfg["rows_leak"] = False  # one row per clip: the clip split is the row split
        self.split = make_split(self.clips, fold=self.fold, **split_cfg)
        labels = np.array([self.class_names.index(c.emotion) for c in self.clips], np.int64)
        self.stages = self.pipeline.build(self.clips, labels, self.split,
                                          "test" if stage == "test" else "fit", self.context)
        if "train" in self.stages:
            self.class_weights = balanced_class_weights(self.stages["train"].labels,
                                                        self.n_classes)
        for warning in self.incomplete_test_speakers():
            log.warning("INCOMPLETE FOLD: %s", warning)
        log.info("%s split%s%s: %s items", self.split.protocol,
                 f" fold {self.split.fold}" if self.split.fold else "",
                 " (LEAKY)" if self.split.leaky else "",
                 {k: len(v.labels) for k, v in self.stages.items()})

    # --- loaders -------------------------------------------------------------------------
    def _loader(self, stage: str, shuffle: bool = False) -> DataLoader:
        size = self.batch_size if stage == "train" else self.eval_batch_size
        return self.pipeline.loader(self.stages[stage], size, shuffle, self.n_jobs, self.seed)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._loader("test")

    def extra_test_sets(self) -> dict[str, DataLoader]:
        """Further test sets scored with the same checkpoint (e.g. "no_enrolment")."""
        return {name: self._loader(name) for name in self.stages
                if name not in ("train", "val", "test")}

    # --- what reports and checkpoints say ------------------------------------------------
    def labels(self, stage: str) -> np.ndarray:
        return self.stages[stage].labels

    def test_rows(self, stage: str = "test") -> list[tuple[Clip, str]]:
        """(clip, version) per item of a test stage, in dataset order."""
        data = self.stages[stage]
        return [(self.clips[i], v) for i, v in zip(data.clip_index, data.versions, strict=True)]

    def incomplete_test_speakers(self) -> list[str]:
        """Test speakers with fewer usable clips than the fullest speaker of their corpus
        (missing or skipped files): the fold's figure is then not the usual fold's."""
        per_speaker = Counter(self.clips[i].speaker for i in self.stages["test"].clip_index) \
            if "test" in self.stages else Counter()
        full = Counter(c.speaker for c in self.clips)
        most = {}
        for speaker, n in full.items():
            corpus = speaker.split(":", 1)[0]
            most[corpus] = max(most.get(corpus, 0), n)
        return [f"test speaker {s} has {per_speaker.get(s, 0)} usable clips, the fullest "
                f"speaker of its corpus {most[s.split(':', 1)[0]]}"
                for s in self.split.test_speakers
                if per_speaker.get(s, 0) < most.get(s.split(":", 1)[0], 0)]

    def metadata(self) -> dict[str, Any]:
        """How the run was trained and tested: corpora, labels, split, test speakers."""
        split = self.split
        test = self.stages.get("test")
        test_counts = Counter(self.class_names[y] for y in test.labels) if test else {}
        return {
            "corpora": self.corpora,
            "labels": self.label_space.to_config(),
            "class_names": list(self.class_names),
            "split": {**self.split_cfg, "fold": split.fold, "protocol": split.protocol,
                      "leaky": split.leaky, "tested_corpora": list(split.test_corpora),
                      "trained_corpora": self.corpora, **self.pipeline.protocol()},
            "test_speakers": list(split.test_speakers),
            "test_clips_per_class": {c: int(test_counts.get(c, 0)) for c in self.class_names},
            "skipped_files": [[str(p), why] for p, why in self.skipped],
            "incomplete_test_speakers": self.incomplete_test_speakers(),
        }
