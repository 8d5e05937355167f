"""Every config group composes with the real config files, and instantiates."""

import re
from pathlib import Path

import hydra
import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf, open_dict

from ser.config import CONF_DIR, REPO_ROOT
from ser.data.labels import EMOTIONS
from ser.training.config_check import ConfigError, check_config
from tests.conftest import HAS_OPENSMILE

CONF = CONF_DIR


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


def without_tags(cfg) -> dict:
    return {k: v for k, v in OmegaConf.to_container(cfg).items() if k != "tags"}


def test_the_default_run_is_the_best_single_clip_recipe(tmp_path):
    """No overrides: the stats_ravdess_rich recipe to the last number."""
    cfg = compose_train([], tmp_path)
    check_config(cfg)
    assert without_tags(cfg) == without_tags(compose_train(["experiment=stats_ravdess_rich"],
                                                           tmp_path))
    dm = hydra.utils.instantiate(cfg.data)
    assert dm.pipeline.dim == 1776  # utterance statistics of the whole clip, extras included
    assert cfg.model.net.lda_shrinkage == 0.1
    assert cfg.model.family == "stats_linear" and cfg.trainer.precision == "32-true"
    assert cfg.augment.versions[1:] == [f"speed{f}" for f in
                                        (0.8, 0.85, 0.9, 0.95, 1.05, 1.1, 1.15, 1.2)]


def test_the_seeds_recipe_is_one_override_away(tmp_path):
    """model=cnn brings the seed's features and augmentation: experiment=baseline_ravdess,
    but for short clips, which only the seed's reproduction pads as the seed did."""
    seed = without_tags(compose_train(["experiment=baseline_ravdess"], tmp_path))
    cnn = without_tags(compose_train(["model=cnn"], tmp_path))
    assert (cnn["features"]["hand"].pop("short_clips"),
            seed["features"]["hand"].pop("short_clips")) == ("pad_wave", "seed")
    assert cnn == seed


def test_the_seed_model_instantiates_its_parts(tmp_path):
    cfg = compose_train(["model=cnn", "trainer.max_epochs=1"], tmp_path)
    check_config(cfg)
    dm = hydra.utils.instantiate(cfg.data)
    net = hydra.utils.get_object(cfg.model.net._target_)(
        **{k: v for k, v in cfg.model.net.items() if k != "_target_"},
        **dm.pipeline.net_kwargs(EMOTIONS))
    assert sum(p.numel() for p in net.parameters()) == 49_800  # the seed's CNN
    assert dm.pipeline.dim == 2376  # ZCR + RMS + MFCC frames of the seed's 2.5 s crop
    for group in ("callbacks", "logger"):
        for node in cfg[group].values():
            hydra.utils.instantiate(node)


@pytest.mark.parametrize("name", sorted(p.stem for p in (CONF / "experiment").glob("*.yaml")))
def test_every_experiment_is_a_combination_that_can_train(name, tmp_path):
    cfg = compose_train([f"experiment={name}"], tmp_path)
    if cfg.features.kind == "opensmile" and not HAS_OPENSMILE:
        with pytest.raises(ConfigError, match="research and education"):
            check_config(cfg)  # without the optional extra it stops, saying how to get it
        return
    check_config(cfg)


@pytest.mark.parametrize("name", sorted(p.stem for p in (CONF / "experiment").glob("*.yaml")))
def test_the_split_group_chooses_the_protocol_of_every_experiment(name, tmp_path):
    """`split=emobox` on an experiment of the speaker-independent folds runs EmoBox's folds:
    no experiment pins `split.protocol` against the group it was given."""
    cfg = compose_train([f"experiment={name}"], tmp_path)
    if cfg.split.protocol != "speaker_independent":
        pytest.skip(f"{name} uses {cfg.split.protocol}")
    cfg = compose_train([f"experiment={name}", "split=emobox"], tmp_path)
    assert cfg.split.protocol == "emobox"


README_GROUPS = re.compile(r"^\| `([\w/]+)` \| ((?:`\w+`(?:, )?)+) \|", re.M)


def test_the_readme_lists_every_group_and_option():
    """The README's configuration table is conf/ itself: every group, every option."""
    text = (REPO_ROOT / "README.md").read_text()
    table = text[text.index("### Configuration"):]
    table = table[: table.index("\n\n", table.index("| group |"))]
    listed = {group: sorted(o.strip("`") for o in options.split(", "))
              for group, options in README_GROUPS.findall(table)}
    groups = {p.name: sorted(y.stem for y in p.glob("*.yaml")) for p in CONF.iterdir()
              if p.is_dir() and p.name != "hydra"}
    groups["hydra/launcher"] = group_options("hydra/launcher")
    assert listed == groups


def test_data_dir_follows_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("SER_DATA_DIR", "/some/where")
    cfg = compose_train([], tmp_path)
    assert cfg.paths.data_dir == "/some/where"
    monkeypatch.delenv("SER_DATA_DIR")
    monkeypatch.delenv("SER_CACHE_DIR", raising=False)
    monkeypatch.chdir(tmp_path)
    cfg = compose_train([], tmp_path)
    assert cfg.paths.data_dir == str(tmp_path / "data")


def test_outputs_data_and_cache_are_relative_to_the_working_directory(tmp_path, monkeypatch):
    """Never the package's folder: an installed ser would write into site-packages."""
    monkeypatch.delenv("SER_DATA_DIR", raising=False)
    monkeypatch.delenv("SER_CACHE_DIR", raising=False)
    monkeypatch.chdir(tmp_path)
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("train", return_hydra_config=True)
    paths = cfg.paths
    assert (paths.data_dir, paths.cache_dir, paths.log_dir) == (
        str(tmp_path / "data"), str(tmp_path / ".cache" / "features"), str(tmp_path / "outputs"))
    assert cfg.hydra.run.dir.startswith(str(tmp_path / "outputs" / "train" / "runs"))


def write_user_configs(root: Path) -> Path:
    """A user's own options, outside the package: a corpus folder and a smaller CNN."""
    (root / "data").mkdir(parents=True)
    (root / "data" / "mycorpus.yaml").write_text(
        "defaults:\n  - ravdess\n  - _self_\ndata_dir: /corpora/mine\nfold: 4\n")
    (root / "model").mkdir()
    (root / "model" / "small_cnn.yaml").write_text(
        "defaults:\n  - cnn\n  - _self_\nnet:\n  channels: [16, 8, 4]\n")
    return root


def test_a_user_config_dir_adds_options_through_the_search_path(tmp_path):
    user = write_user_configs(tmp_path / "myconf")
    cfg = compose_train([f"hydra.searchpath=[file://{user}]", "data=mycorpus",
                         "model=small_cnn"], tmp_path)
    check_config(cfg)
    assert (cfg.data.data_dir, cfg.data.fold) == ("/corpora/mine", 4)
    assert cfg.model.family == "cnn" and list(cfg.model.net.channels) == [16, 8, 4]
    assert cfg.features.kind == "hand"  # what model=cnn (its base) brings
    assert cfg.data.batch_size == 32  # the shipped ravdess option's


def test_eval_config_composes_with_and_without_data(tmp_path):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        plain = compose("eval", overrides=["ckpt_path=x.ckpt"])
        with_data = compose("eval", overrides=["ckpt_path=x.ckpt", "data=ravdess",
                                               "data.fold=3"])
    assert plain.get("data") is None
    assert with_data.data.fold == 3
