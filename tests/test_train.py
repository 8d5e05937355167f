"""End to end: train(cfg) on generated and real RAVDESS, evaluate the checkpoint, aggregate."""

import json
from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_dir
from omegaconf import open_dict

from ser.config import REPO_ROOT
from ser.evaluation.aggregate import aggregate
from ser.training.checkpoint import load_classifier
from ser.training.train import train
from tests.conftest import CONF_DIR, train_cfg


def test_fit_writes_a_self_contained_checkpoint_and_report(tmp_path, generated_data_dir):
    cfg = train_cfg(tmp_path, generated_data_dir, "augment=none", "data.fold=2")
    metrics = train(cfg)
    assert {"val/ua", "val/ua_best", "test/ua", "test/wa", "test/macro_f1"} <= set(metrics)
    run = Path(cfg.paths.output_dir)
    report = json.loads((run / "metrics.json").read_text())
    assert set(report) >= {"wa", "ua", "macro_f1", "per_class", "confusion", "protocol"}
    assert report["protocol"] == "speaker-independent, fold 2"
    assert sum(map(sum, report["confusion"])) == 4 * 8 * 2  # 4 test actors x 8 emotions x 2
    assert (run / "confusion.png").stat().st_size > 0
    lines = (run / "predictions.csv").read_text().splitlines()
    assert len(lines) == 1 + 64 and "ravdess:05" in lines[1]
    assert list((run / "tensorboard").glob("events.out.tfevents.*"))

    model = load_classifier(run / "checkpoints" / "best.ckpt")
    meta = model.checkpoint_meta()
    assert meta.family == "cnn" and meta.class_names[0] == "neutral"
    assert model.pipeline.audio.offset == 0.6
    assert meta.training["split"]["fold"] == 2 and meta.training["test_speakers"][0] == "ravdess:05"
    assert meta.training["test_clips_per_class"] == {c: 8 for c in meta.class_names}
    # the training rows' standardisation statistics travel with the model
    std = model.pipeline.standardise.std
    assert std.shape == (2376,) and not np.allclose(std, 1.0)


def test_random_protocol_is_labelled_leaky_in_every_output(tmp_path, generated_data_dir):
    cfg = train_cfg(tmp_path, generated_data_dir, "experiment=baseline_ravdess_random",
                    "trainer.max_epochs=1", "logger=none", "paths.data_dir=" +
                    str(generated_data_dir))
    train(cfg)
    run = Path(cfg.paths.output_dir)
    assert "LEAKY" in json.loads((run / "metrics.json").read_text())["protocol"]
    assert "LEAKY" in (run / "predictions.csv").read_text().splitlines()[1]


def test_aggregate_folds_into_mean_and_std(tmp_path):
    for fold, ua in ((1, 0.4), (2, 0.6)):
        d = tmp_path / str(fold - 1)
        d.mkdir()
        (d / "metrics.json").write_text(json.dumps(
            {"ua": ua, "wa": ua + 0.1, "macro_f1": ua - 0.1, "protocol": "speaker-independent",
             "split": {"fold": fold}}))
    summary = aggregate(tmp_path)
    assert summary["ua"]["mean"] == pytest.approx(0.5)
    assert summary["ua"]["std"] == pytest.approx(0.1)
    assert "50.0 ± 10.0" in (tmp_path / "summary.md").read_text()
    assert "val_ua" not in summary  # no run left its training metrics


def test_aggregate_reports_the_validation_ua_runs_were_selected_on(tmp_path):
    for fold, (ua, val) in enumerate(((0.4, 0.7), (0.6, 0.5)), start=1):
        d = tmp_path / str(fold - 1)
        d.mkdir()
        (d / "metrics.json").write_text(json.dumps(
            {"ua": ua, "wa": ua, "macro_f1": ua, "split": {"fold": fold}}))
        (d / "train_metrics.json").write_text(json.dumps(
            {"val/ua": 0.1, "val/ua_best": val, "test/ua": ua}))
    summary = aggregate(tmp_path)
    assert [r["val_ua"] for r in summary["runs"]] == [0.7, 0.5]
    assert summary["val_ua"]["mean"] == pytest.approx(0.6)
    assert summary["val_ua"]["std"] == pytest.approx(0.1)
    assert "Validation UA (best epoch, selection score): **60.0 ± 10.0** (70.0, 50.0)" in (
        tmp_path / "summary.md").read_text()


@pytest.mark.slow
@pytest.mark.real_data
def test_short_real_fit_and_evaluate(tmp_path, real_ravdess):
    """A real (short) fit on real RAVDESS fold 3, then evaluate.py's path on its checkpoint."""
    from ser.training.evaluate import evaluate

    # 6 epochs: after 3 the seed CNN sat at 13.7-14.5 UA on an AMX machine (bf16 or fp32),
    # at chance's margin, where another CPU's summation order had put it above
    cfg = train_cfg(tmp_path, real_ravdess.parent, "augment=none", "data.fold=3",
                    "trainer.max_epochs=6")
    metrics = train(cfg)
    assert metrics["test/ua"] > 1 / 8 + 0.03  # learned something beyond chance on new actors
    ckpt = Path(cfg.paths.output_dir) / "checkpoints" / "best.ckpt"
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        ecfg = compose("eval", overrides=[f"ckpt_path={ckpt}",
                                          f"paths.data_dir={real_ravdess.parent}"])
    with open_dict(ecfg):
        ecfg.paths.output_dir = str(tmp_path / "eval")
    report = evaluate(ecfg)
    assert report["ua"] == pytest.approx(metrics["test/ua"], abs=1e-6)
    assert len((tmp_path / "eval" / "predictions.csv").read_text().splitlines()) == 1 + 240


def test_a_resumed_run_ends_as_the_uninterrupted_run(tmp_path, generated_data_dir):
    """Stopped after epoch 1 and continued from last.ckpt, a run ends with the same weights
    and metrics as the run that was never stopped, in the same run folder."""
    import torch

    common = ("augment=none", "logger=none", "trainer.precision=32-true")
    whole = train_cfg(tmp_path / "whole", generated_data_dir, *common, "trainer.max_epochs=3")
    expected = train(whole)
    cut = train_cfg(tmp_path / "cut", generated_data_dir, *common, "trainer.max_epochs=1",
                    "test=false")
    train(cut)
    last = Path(cut.paths.output_dir) / "checkpoints" / "last.ckpt"
    assert torch.load(last, weights_only=True)["epoch"] == 0
    resumed = train_cfg(tmp_path / "elsewhere", generated_data_dir, *common,
                        "trainer.max_epochs=3", f"ckpt_path={last}")
    got = train(resumed)
    assert got == pytest.approx(expected)
    for name in ("best.ckpt", "last.ckpt"):  # the run went on in its own folder
        ours = torch.load(last.parent / name, weights_only=True)
        theirs = torch.load(Path(whole.paths.output_dir) / "checkpoints" / name,
                            weights_only=True)
        assert ours["global_step"] == theirs["global_step"], name
        for key in theirs["state_dict"]:
            torch.testing.assert_close(ours["state_dict"][key], theirs["state_dict"][key],
                                       msg=f"{name}: {key}")
    assert (Path(cut.paths.output_dir) / "metrics.json").is_file()


def test_an_incomplete_fold_is_recorded_and_warned_about(tmp_path, caplog):
    """A test actor's missing file: metrics.json names the speaker and the counts."""
    from tests.conftest import make_ravdess_tree

    data = tmp_path / "data"
    make_ravdess_tree(data / "ravdess")
    next((data / "ravdess" / "Actor_02").glob("*.wav")).unlink()
    cfg = train_cfg(tmp_path, data, "augment=none", "logger=none", "trainer.fast_dev_run=true")
    with caplog.at_level("WARNING", logger="ser.training.datamodule"):
        train(cfg)
    report = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert report["data"]["incomplete_test_speakers"] == [
        "test speaker ravdess:02 has 7 usable clips, the fullest speaker of its corpus 8"]
    assert report["data"]["test_speakers"] == [f"ravdess:0{a}" for a in range(1, 5)]
    assert "INCOMPLETE FOLD: test speaker ravdess:02" in caplog.text


@pytest.mark.slow
def test_a_waveform_sweep_with_loader_workers_runs_under_joblib(tmp_path, generated_data_dir):
    """joblib's loky workers default to a start method that pickles the dataset; the
    DataLoader's own workers must start there too (they fork)."""
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "train.py", "-m", "experiment=logmel_ravdess", "data.fold=1,2",
         "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "num_threads=1", "data.n_jobs=1",
         "model.net.channels=[8]", "model.net.kernels=[3]", "model.net.dilations=[1]",
         "trainer.max_epochs=1", "logger=none", "features.audio.duration=1.0",
         f"paths.data_dir={generated_data_dir}", f"paths.cache_dir={tmp_path / 'cache'}",
         "data.progress=false", "trainer.enable_progress_bar=false",
         f"hydra.sweep.dir={tmp_path / 'sweep'}"],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert len(list((tmp_path / "sweep").glob("*/metrics.json"))) == 2
