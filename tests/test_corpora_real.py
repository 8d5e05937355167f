"""Real fits on RAVDESS + TESS from ../shared/data: a mixture, and RAVDESS -> TESS."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import hydra
import pytest
from hydra import compose, initialize_config_dir
from omegaconf import open_dict

from ser.config import CONF_DIR
from ser.data.labels import EMOTIONS
from ser.training.train import train

pytestmark = [pytest.mark.slow, pytest.mark.real_data]

# the seed's features and model, no augmentation and 2 epochs: a real but short fit
SHORT = ["augment=none", "augment.versions=[original]", "trainer.max_epochs=2", "logger=none",
         "data.progress=false", "trainer.enable_progress_bar=false"]


@pytest.fixture(scope="module")
def real_cache(tmp_path_factory) -> Path:
    """Both fits featurise the same original clips: compute them once."""
    return tmp_path_factory.mktemp("real_cache")


def real_cfg(data_dir: Path, cache: Path, out: Path, *overrides: str):
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("train", overrides=[*overrides, f"paths.data_dir={data_dir}",
                                          f"paths.cache_dir={cache}", *SHORT])
    with open_dict(cfg):
        cfg.paths.output_dir = str(out)
    return cfg


def test_mixture_fit_tests_on_ravdess_actors_and_weights_the_mixture(
    real_ravdess, real_cache, tmp_path
):
    cfg = real_cfg(real_ravdess.parent, real_cache, tmp_path, "experiment=baseline_ravdess_tess",
                   "data.fold=2")
    dm = hydra.utils.instantiate(cfg.data)
    dm.setup("fit")
    train_clips = [dm.clips[i] for i in dm.stages["train"].clip_index]
    assert Counter(c.corpus for c in train_clips) == {"ravdess": 16 * 60, "tess": 2798}
    test_speakers = {dm.clips[i].speaker for i in dm.stages["test"].clip_index}
    assert test_speakers == {"ravdess:05", "ravdess:06", "ravdess:07", "ravdess:08"}
    # calm comes from RAVDESS alone, so it is the rarest class of the mixture
    weights = dict(zip(EMOTIONS, dm.class_weights, strict=True))
    assert max(weights, key=weights.get) == "calm"

    metrics = train(cfg)
    assert metrics["test/ua"] > 1 / 8  # learned something about unseen RAVDESS actors
    report = json.loads((tmp_path / "metrics.json").read_text())
    assert report["protocol"] == "speaker-independent, fold 2"
    assert sum(map(sum, report["confusion"])) == 240


def test_cross_corpus_ravdess_to_tess(real_ravdess, real_cache, tmp_path):
    cfg = real_cfg(real_ravdess.parent, real_cache, tmp_path, "experiment=baseline_ravdess_to_tess")
    metrics = train(cfg)
    report = json.loads((tmp_path / "metrics.json").read_text())
    assert report["protocol"] == "cross-corpus, trained on ravdess, tested on tess"
    assert report["classes"] == [e for e in EMOTIONS if e != "calm"]
    assert sum(map(sum, report["confusion"])) == 2798
    assert {k: report["per_class"][k]["support"] for k in ("angry", "sad")} == \
        {"angry": 399, "sad": 399}
    assert metrics["test/ua"] == pytest.approx(report["ua"])
