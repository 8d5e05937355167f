"""trainer=ddp: `python train.py` with Lightning's DDP on 2 CPU processes (gloo).

Runs the real command line, as a user would: Lightning re-launches the script for rank 1
(its default popen launcher), both ranks fit, and rank 0 alone tests and reports.
`tiny_backbones` and `real_subset` come from tests/conftest.py.
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from ser.config import REPO_ROOT
from ser.data.clip import Clip
from ser.data.ravdess import scan_ravdess
from ser.data.splits import make_split


def fold_test_clips(data_dir: Path, fold: int = 1) -> list[Clip]:
    """The subset's clips of the fold's test actors: what rank 0 must score, once each."""
    clips = scan_ravdess(data_dir / "ravdess", expect_complete=False)
    return [clips[i] for i in make_split(clips, fold=fold).test]


@pytest.mark.slow
@pytest.mark.real_data
def test_ddp_two_cpu_processes_fit_and_report(tmp_path, tiny_backbones, real_subset):
    # model=hubert brings features=waveform and augment=waveform with it
    cmd = [
        sys.executable, "train.py", "model=hubert", "data=ravdess", "data.fold=1",
        "trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2",
        "trainer.precision=32-true", "trainer.max_epochs=1",
        "trainer.enable_progress_bar=false", "logger=none",
        f"model.net.backbone.name_or_path={tiny_backbones['hubert']}",
        f"paths.data_dir={real_subset}", f"paths.cache_dir={tmp_path / 'cache'}",
        f"paths.log_dir={tmp_path / 'logs'}",
        "data.batch_size=8", "data.n_jobs=0", "data.progress=false", "num_threads=1",
    ]
    done = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "GLOBAL_RANK: 1, MEMBER: 2/2" in done.stdout + done.stderr  # two processes
    (run,) = (tmp_path / "logs" / "train" / "runs").iterdir()
    report = json.loads((run / "metrics.json").read_text())
    # the test ran once, in one process: every test clip scored exactly once
    expected = fold_test_clips(real_subset)
    assert len({c.speaker for c in expected}) == 4  # the fold's 4 test actors
    assert sum(map(sum, report["confusion"])) == len(expected)
    assert (run / "checkpoints" / "best.ckpt").is_file()
    assert (run / "hf_model" / "config.json").is_file()
