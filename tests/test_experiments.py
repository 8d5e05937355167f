"""Every baseline experiment composes and runs a tiny fit; the Optuna search runs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf, open_dict

from ser.config import CONF_DIR, REPO_ROOT
from ser.training.train import train
from tests.conftest import make_all_corpora, make_ravdess_tree

CONF = CONF_DIR
EXPERIMENTS = sorted(p.stem for p in (CONF / "experiment").glob("baseline_*.yaml"))
TINY = ["trainer.max_epochs=1", "logger=none", "data.progress=false",
        "trainer.enable_progress_bar=false"]


@pytest.fixture(scope="module")
def corpora_dir(tmp_path_factory) -> Path:
    """All four corpora, as small as the folds allow (every clip gets 4 augmented rows)."""
    return make_all_corpora(tmp_path_factory.mktemp("corpora"), ravdess_emotions=(1, 2, 3, 5),
                            crema_actors=(1001, 1002), tess_words=("bite",))


@pytest.fixture(scope="module")
def shared_cache(tmp_path_factory) -> Path:
    """One feature cache for all experiments: each clip's versions are computed once."""
    return tmp_path_factory.mktemp("cache")


def compose_experiment(name: str, *overrides: str, output_dir: Path | None = None):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("train", overrides=[f"experiment={name}", *overrides])
    with open_dict(cfg):
        cfg.paths.output_dir = str(output_dir or "/nonexistent")
    return cfg


def test_the_seed_results_each_have_an_experiment():
    assert {"baseline_ravdess", "baseline_ravdess_random", "baseline_four_corpora",
            "baseline_four_corpora_random", "baseline_ravdess_to_tess"} <= set(EXPERIMENTS)


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_experiment_composes_with_its_numbers(name):
    cfg = compose_experiment(name)
    OmegaConf.resolve(cfg)
    assert cfg.trainer.max_epochs == 25 and cfg.data.batch_size == 32
    assert cfg.features.audio.offset == 0.6 and cfg.model.module.optimizer.lr == 0.001
    split = cfg.data.split
    assert ("leaky_random_split" in cfg.tags) == (split.protocol == "random")
    if "four_corpora" in name:
        assert list(cfg.data.corpora) == ["ravdess", "crema_d", "tess", "savee"]


@pytest.mark.slow
@pytest.mark.parametrize("name", EXPERIMENTS)
def test_experiment_runs_a_tiny_fit(name, corpora_dir, shared_cache, tmp_path):
    cfg = compose_experiment(name, f"paths.data_dir={corpora_dir}",
                             f"paths.cache_dir={shared_cache}", *TINY, output_dir=tmp_path)
    metrics = train(cfg)
    report = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["test/ua"] == report["ua"] and "val/ua_best" in metrics
    split = cfg.data.split
    if split.protocol == "random":
        assert report["protocol"].startswith("LEAKY")
    elif split.protocol == "cross_corpus":
        assert report["protocol"] == "cross-corpus, trained on ravdess, tested on tess"
        assert "calm" not in report["classes"] and sum(map(sum, report["confusion"])) == 14
    else:
        assert report["protocol"] == "speaker-independent, fold 1"
        test_rows = (tmp_path / "predictions.csv").read_text().splitlines()[1:]
        assert {row.split(",")[1] for row in test_rows} == {f"ravdess:0{a}" for a in range(1, 5)}


@pytest.mark.slow
def test_a_ravdess_checkpoint_evaluated_on_tess(corpora_dir, shared_cache, tmp_path):
    """evaluate.py's cross-corpus path: the model's 8 classes, TESS's clips, shared labels."""
    from ser.training.evaluate import evaluate

    cfg = compose_experiment("baseline_ravdess_noaug", f"paths.data_dir={corpora_dir}",
                             f"paths.cache_dir={shared_cache}", *TINY,
                             output_dir=tmp_path / "train")
    train(cfg)
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        ecfg = compose("eval", overrides=[
            f"ckpt_path={tmp_path / 'train' / 'checkpoints' / 'best.ckpt'}", "data=cross_corpus",
            f"paths.data_dir={corpora_dir}", f"paths.cache_dir={shared_cache}",
            "data.progress=false"])
    with open_dict(ecfg):
        ecfg.paths.output_dir = str(tmp_path / "eval")
    report = evaluate(ecfg)
    assert report["protocol"] == "cross-corpus, trained on ravdess, tested on tess"
    assert len(report["classes"]) == 8  # the checkpoint's classes, indices unchanged
    assert sum(map(sum, report["confusion"])) == 14
    rows = (tmp_path / "eval" / "predictions.csv").read_text().splitlines()[1:]
    assert {row.split(",")[1] for row in rows} == {"tess:OAF", "tess:YAF"}


def test_optuna_search_config_composes():
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("train", overrides=["hparams_search=cnn_optuna"], return_hydra_config=True)
    sweeper = cfg.hydra.sweeper
    assert sweeper._target_.endswith("SerOptunaSweeper") and sweeper.direction == "maximize"
    assert cfg.optimized_metric == "val/ua_best" and cfg.test is False
    assert "model.module.optimizer.lr" in sweeper.params


def test_search_space_parsing():
    pytest.importorskip("optuna")
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    from hydra_plugins.ser_optuna_sweeper.optuna_sweeper import search_space

    dists, fixed = search_space(
        {"a": "tag(log, interval(0.0001, 0.01))", "b": "choice(16, 32)", "c": "0.5"},
        ["d=tag(int, interval(1, 4))", "e=range(1, 4)", "b=choice(8, 64)", "f=interval(1, 4)"],
    )
    assert dists["a"] == FloatDistribution(0.0001, 0.01, log=True)
    assert dists["b"] == CategoricalDistribution([8, 64])  # the command line wins
    assert dists["d"] == IntDistribution(1, 4)
    assert dists["e"] == CategoricalDistribution([1, 2, 3])
    assert dists["f"] == FloatDistribution(1.0, 4.0)
    assert fixed == ["c=0.5"]


@pytest.mark.slow
def test_optuna_search_runs_trials_on_validation_only(tmp_path):
    pytest.importorskip("optuna")
    data = tmp_path / "data"
    make_ravdess_tree(data / "ravdess", emotions=range(1, 9))
    sweep_dir = tmp_path / "sweep"
    cmd = [sys.executable, str(REPO_ROOT / "train.py"), "-m", "hparams_search=cnn_optuna",
           "hydra.sweeper.n_trials=2", "augment=none", f"hydra.sweep.dir={sweep_dir}",
           f"paths.data_dir={data}", f"paths.cache_dir={tmp_path / 'cache'}", *TINY]
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    run = subprocess.run(cmd, cwd=REPO_ROOT, env=env, capture_output=True, text=True,
                         timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    results = OmegaConf.load(sweep_dir / "optimization_results.yaml")
    assert results.n_complete == 2
    assert set(results.best_params) >= {"model.module.optimizer.lr", "data.batch_size"}
    best = []
    for trial in ("0", "1"):
        metrics = json.loads((sweep_dir / trial / "train_metrics.json").read_text())
        assert not any(k.startswith("test/") for k in metrics)
        assert not (sweep_dir / trial / "metrics.json").exists()  # no test report at all
        best.append(metrics["val/ua_best"])
    assert results.best_value == pytest.approx(max(best))  # the sweep maximised validation UA
