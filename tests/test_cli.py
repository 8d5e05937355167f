"""`ser-train` / `ser-evaluate`: one command from any directory, the end-of-run summary,
and a quiet plain run."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest
import yaml

from ser.config import CONF_DIR, REPO_ROOT
from tests.conftest import make_ravdess_tree, train_cfg
from tests.test_configs import write_user_configs

# `ser-train ARGS`, as its console script runs it, from a checkout without an install
AS_SER_TRAIN = "import sys; sys.argv[0] = 'ser-train'; from ser.cli import train_main; train_main()"


def clean_env(**extra: str) -> dict[str, str]:
    """This environment without the data/cache locations, so the defaults show."""
    env = {k: v for k, v in os.environ.items() if k not in ("SER_DATA_DIR", "SER_CACHE_DIR")}
    return {**env, "PYTHONPATH": str(REPO_ROOT), **extra}


def ser_train(cwd: Path, *args: str, timeout: int = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", AS_SER_TRAIN, *args], cwd=cwd,
                          env=clean_env(), capture_output=True, text=True, timeout=timeout)


def composed_job(done: subprocess.CompletedProcess) -> dict:
    assert done.returncode == 0, done.stderr[-2000:]
    return yaml.safe_load(done.stdout)


def test_console_scripts_run_the_cli_and_the_configs_are_package_data():
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
    scripts = project["project"]["scripts"]
    assert scripts["ser-train"] == "ser.cli:train_main"
    assert scripts["ser-evaluate"] == "ser.cli:evaluate_main"
    patterns = project["tool"]["setuptools"]["package-data"]["ser"]
    package = REPO_ROOT / "ser"
    declared = {p for pattern in patterns for p in package.glob(pattern)}
    shipped = {p for p in CONF_DIR.rglob("*") if p.is_file() and "__pycache__" not in p.parts}
    assert shipped and shipped <= declared  # a non-editable install gets every config


def test_ser_train_composes_the_shipped_configs_from_any_directory(tmp_path):
    job = composed_job(ser_train(tmp_path, "--cfg", "job", "--resolve"))
    assert job["model"]["family"] == "stats_linear"  # the default recipe
    assert job["paths"]["data_dir"] == str(tmp_path / "data")
    assert job["paths"]["log_dir"] == str(tmp_path / "outputs")
    assert job["paths"]["cache_dir"] == str(tmp_path / ".cache" / "features")


def test_ser_train_config_dir_adds_the_users_options(tmp_path):
    user = write_user_configs(tmp_path / "myconf")
    job = composed_job(ser_train(tmp_path, f"--config-dir={user}", "data=mycorpus",
                                 "model=small_cnn", "--cfg", "job", "--resolve"))
    assert (job["data"]["data_dir"], job["data"]["fold"]) == ("/corpora/mine", 4)
    assert job["model"]["net"]["channels"] == [16, 8, 4]
    assert job["features"]["kind"] == "hand"


def test_ser_train_refuses_a_bad_combination_in_one_line(tmp_path):
    done = ser_train(tmp_path, "model=hubert", "features=seed_hand",
                     f"hydra.run.dir={tmp_path / 'run'}")
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "ser-train: model=hubert (family hubert) takes waveform inputs: features=waveform; "
        "features=seed_hand makes vector inputs"]


@pytest.mark.slow
def test_a_wheel_ships_the_configs_and_its_commands_run_elsewhere(tmp_path):
    """A non-editable install: configs inside site-packages, outputs in the working dir."""
    src = tmp_path / "src"  # building writes build/ and *.egg-info beside the sources
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO_ROOT / name, src / name)
    for package in ("ser", "hydra_plugins"):
        shutil.copytree(REPO_ROOT / package, src / package,
                        ignore=shutil.ignore_patterns("__pycache__"))
    pip = [sys.executable, "-m", "pip", "-q", "--disable-pip-version-check"]
    subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", str(src), "-w",
                    str(tmp_path / "dist")], check=True, capture_output=True, timeout=300)
    (wheel,) = (tmp_path / "dist").glob("ser-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    configs = {f"ser/conf/{p.relative_to(CONF_DIR).as_posix()}" for p in CONF_DIR.rglob("*.yaml")}
    assert configs <= names
    site = tmp_path / "site"
    subprocess.run([*pip, "install", "--no-deps", "--target", str(site), str(wheel)],
                   check=True, capture_output=True, timeout=300)
    work = tmp_path / "work"
    work.mkdir()
    env = clean_env(PYTHONPATH=str(site))

    def installed(*args: str) -> str:
        done = subprocess.run([str(site / "bin" / args[0]), *args[1:]], cwd=work, env=env,
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr[-2000:]
        return done.stdout

    assert f"file://{site / 'ser' / 'conf'}" in installed("ser-train", "--info", "searchpath")
    job = yaml.safe_load(installed("ser-train", "--cfg", "job", "--resolve"))
    assert job["paths"]["log_dir"] == str(work / "outputs")  # not inside site-packages
    assert job["model"]["family"] == "stats_linear"
    help_text = installed("ser-evaluate", "--help")
    assert "ckpt_path: ???" in help_text and "experiment: " in help_text


# --- the end-of-run summary ---------------------------------------------------------------


def test_a_run_ends_with_its_summary_on_stdout(tmp_path, generated_data_dir, capsys):
    from ser.training.evaluate import shown
    from ser.training.train import train

    cfg = train_cfg(tmp_path, generated_data_dir, "augment=none", "logger=none",
                    "trainer.max_epochs=1")
    train(cfg)
    out = capsys.readouterr().out
    lines = out[out.index("-" * 88):].splitlines()
    run = tmp_path / "run"
    report = json.loads((run / "metrics.json").read_text())
    ckpt = run / "checkpoints" / "best.ckpt"  # tmp_path is outside the working directory
    assert lines[1] == (f"test   UA {100 * report['ua']:.1f}   WA {100 * report['wa']:.1f}   "
                        f"macro-F1 {100 * report['macro_f1']:.1f}   (chance 12.5: 8 classes)")
    assert lines[2] == "protocol  speaker-independent, fold 1: 4 test speakers, 64 clips"
    recall = " ".join(lines[3:5]).split()
    assert recall[0] == "recall" and recall[1:] == [
        w for c, m in report["per_class"].items() for w in (c, f"{100 * m['recall']:.1f}")]
    assert lines[5:8] == [f"model     {ckpt}",
                          f"report    {run / 'metrics.json'} (and predictions.csv beside it)",
                          f"confusion {run / 'confusion.png'}"]
    assert ckpt.is_file() and (run / "predictions.csv").is_file()
    assert (run / "confusion.png").is_file()
    assert [line.strip() for line in lines[8:]] == [
        "next", f"serve it        ser-serve {ckpt}", f"predict a file  ser-predict {ckpt} FILE",
        "all folds       ser-train -m data.fold=1,2,3,4,5,6",
        f"mean ± std      ser-aggregate {shown(cfg.paths.log_dir)}/train/multiruns/<time>",
        "-" * 88]


def test_the_all_folds_line_repeats_the_runs_overrides_and_config_dirs():
    from ser.training.train import all_folds_command

    assert all_folds_command(6, ["experiment=stats_ravdess", "data.fold=3",
                                 "augment.versions=[original]"], ["/my conf"]) == (
        "ser-train '--config-dir=/my conf' -m experiment=stats_ravdess "
        "'augment.versions=[original]' data.fold=1,2,3,4,5,6")


def test_an_untested_run_says_so_and_how_to_test_it(tmp_path):
    from types import SimpleNamespace

    from omegaconf import OmegaConf

    from ser.training.train import end_of_run

    cfg = OmegaConf.create({"paths": {"output_dir": str(tmp_path)}})
    dm = SimpleNamespace(pipeline=SimpleNamespace(uses_enrolment=True))
    ckpt = str(tmp_path / "best.ckpt")
    lines = end_of_run(cfg, dm, ckpt, {"val/ua_best": 0.6123}, None).splitlines()
    assert lines[1:] == [
        "no test (test=false): best validation UA 61.2", f"model     {ckpt}", "next",
        f"  test it         ser-evaluate ckpt_path={ckpt}",
        f"  serve it        ser-serve {ckpt}",
        f"  predict a file  ser-predict {ckpt} FILE --enrol SAME_SPEAKER_CLIPS...", "-" * 88]


# --- a quiet plain run ----------------------------------------------------------------------

# what the pinned stack would print on a plain run (TensorFlow through TensorBoard,
# Lightning's tips and notes, deprecation warnings)
NOISE = ("tensorflow", "absl", "onednn", "cpu_feature_guard", "💡 tip", "litlogger",
         "litmodels", "was configured so", "leafspec", "is deprecated", "deprecationwarning",
         "futurewarning", "callbacks used to create the checkpoint", "dirpath has changed")


@pytest.mark.slow
def test_a_plain_run_prints_no_third_party_noise(tmp_path):
    data = tmp_path / "data"
    make_ravdess_tree(data / "ravdess")
    done = subprocess.run(
        [sys.executable, str(REPO_ROOT / "train.py"), f"paths.data_dir={data}",
         "trainer.max_epochs=1", "augment.versions=[original]",
         "augment.test_versions=[original]", "data.n_jobs=0"],
        cwd=tmp_path, env=clean_env(), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    printed = (done.stdout + done.stderr).lower()
    assert [n for n in NOISE if n in printed] == []
    assert printed.count("gpu available:") == 2  # once per Trainer (fit, test), not twice
    assert "test   UA " in done.stdout and "ser-serve outputs/train/runs/" in done.stdout
    assert list((tmp_path / "outputs" / "train" / "runs").glob("*/tensorboard"))  # logged
