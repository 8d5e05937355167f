"""trainer=ddp: `python train.py` with Lightning's DDP on 2 CPU processes (gloo).

Runs the real command line, as a user would: Lightning re-launches the script for rank 1
(its default popen launcher), both ranks fit, and rank 0 alone tests and reports.
"""

import json
import subprocess
import sys

import pytest

from ser.config import REPO_ROOT
from tests.test_transformers import CLIPS_PER_ACTOR, real_subset, tiny  # noqa: F401


@pytest.mark.slow
@pytest.mark.real_data
def test_ddp_two_cpu_processes_fit_and_report(tmp_path, tiny, real_subset):  # noqa: F811
    cmd = [
        sys.executable, "train.py", "model=hubert", "data=ravdess", "trainer=ddp",
        "trainer.accelerator=cpu", "trainer.devices=2", "trainer.precision=32-true",
        "trainer.max_epochs=1", "trainer.enable_progress_bar=false", "logger=none",
        f"model.net.backbone.name_or_path={tiny['hubert']}", f"paths.data_dir={real_subset}",
        f"paths.cache_dir={tmp_path / 'cache'}", f"paths.log_dir={tmp_path / 'logs'}",
        "data.batch_size=8", "data.n_jobs=0", "data.progress=false", "num_threads=1",
    ]
    done = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "GLOBAL_RANK: 1, MEMBER: 2/2" in done.stdout + done.stderr  # two processes
    (run,) = (tmp_path / "logs" / "train" / "runs").iterdir()
    report = json.loads((run / "metrics.json").read_text())
    # the test ran once, in one process: every test clip scored exactly once
    assert sum(map(sum, report["confusion"])) == 4 * CLIPS_PER_ACTOR
    assert (run / "checkpoints" / "best.ckpt").is_file()
    assert (run / "hf_model" / "config.json").is_file()
