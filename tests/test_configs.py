"""Every config group composes with the real config files, and instantiates."""

from pathlib import Path

import hydra
import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf, open_dict

from ser.config import REPO_ROOT

CONF = REPO_ROOT / "conf"


def group_options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


def compose_train(overrides: list[str], tmp_path: Path):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("train", overrides=overrides, return_hydra_config=True)
    with open_dict(cfg):
        cfg.paths.output_dir = str(tmp_path)
        cfg.hydra = None
    return cfg


@pytest.mark.parametrize(
    "group",
    ["data", "features", "augment", "split", "model", "callbacks", "logger", "trainer",
     "experiment"],
)
def test_every_option_of_every_group_composes(group, tmp_path):
    options = group_options(group)
    assert options, f"conf/{group} is empty"
    for option in options:
        cfg = compose_train([f"{group}={option}"], tmp_path)
        OmegaConf.resolve(cfg)  # every interpolation resolves


def test_default_config_instantiates_its_parts(tmp_path):
    cfg = compose_train(["trainer.max_epochs=1"], tmp_path)
    net = hydra.utils.instantiate(cfg.model.net)
    assert sum(p.numel() for p in net.parameters()) == 49_800
    for group in ("callbacks", "logger"):
        for node in cfg[group].values():
            hydra.utils.instantiate(node)
    dm = hydra.utils.instantiate(cfg.data)
    assert dm.train_versions == ["original", "noise", "pitch", "pitch_noise"]
    assert dm.spec.audio.offset == 0.6 and dm.spec.audio.duration == 2.5
    assert dm.split_cfg["protocol"] == "speaker_independent"


def test_random_split_experiment_is_labelled(tmp_path):
    cfg = compose_train(["experiment=baseline_ravdess_random"], tmp_path)
    assert cfg.split.protocol == "random" and cfg.split.rows_leak
    assert "leaky_random_split" in cfg.tags


def test_data_dir_follows_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("SER_DATA_DIR", "/some/where")
    cfg = compose_train([], tmp_path)
    assert cfg.paths.data_dir == "/some/where"
    monkeypatch.delenv("SER_DATA_DIR")
    cfg = compose_train([], tmp_path)
    assert cfg.paths.data_dir == str(REPO_ROOT / "data")


def test_eval_config_composes_with_and_without_data(tmp_path):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        plain = compose("eval", overrides=["ckpt_path=x.ckpt"])
        with_data = compose("eval", overrides=["ckpt_path=x.ckpt", "data=ravdess",
                                               "data.fold=3"])
    assert plain.get("data") is None
    assert with_data.data.fold == 3
