"""Feature worker processes die with their parent, even when it is SIGKILLed mid-run."""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from ser.config import REPO_ROOT
from tests.conftest import write_tone

N_CLIPS = 32

# A parent that featurises with 2 workers; each worker prints its pid once initialised.
# Each load sleeps, so the workers are mid-job for ~4 s without burning CPU.
PARENT = textwrap.dedent("""
    import os, sys, time
    from pathlib import Path
    from ser.data.audio import AudioConfig
    from ser.data.clip import Clip
    from ser.features import extract
    from ser.features.augment import AugmentConfig
    from ser.features.hand import HandFeatureConfig

    if sys.argv[2] == "no_prctl":  # only the portable watcher thread is left
        extract._set_pdeathsig = lambda: False
    init, load = extract._init_worker, extract.load_audio

    def announce(parent_pid):
        init(parent_pid)
        os.write(1, f"worker {os.getpid()}\\n".encode())  # one write: no interleaving

    def slow_load(*args):
        time.sleep(0.25)
        return load(*args)

    extract._init_worker, extract.load_audio = announce, slow_load
    clips = [Clip(p, "ravdess", f"ravdess:{i}", "male", "angry")
             for i, p in enumerate(sorted(Path(sys.argv[1]).glob("*.wav")))]
    spec = extract.FeatureSpec(AudioConfig(22050, offset=0.6, duration=2.5),
                               HandFeatureConfig(), AugmentConfig())
    extract.featurise(clips, ["original"], spec,
                      cache_dir=None, n_jobs=2, progress=False)
    print("finished", flush=True)
""")


@pytest.fixture(scope="module")
def audio_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("busy_audio")
    for i in range(N_CLIPS):
        write_tone(root / f"clip{i:02d}.wav", 180.0 + 11 * i, seconds=3.5, sr=22050, seed=i)
    return root


def alive(pid: int) -> bool:
    """Running, not a zombie waiting for a reaper (this container's init may not reap)."""
    stat = Path(f"/proc/{pid}/stat")
    if stat.parent.parent.is_dir():
        try:
            return stat.read_text().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
        except (OSError, IndexError):
            return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _lines(stream, out: queue.Queue) -> None:
    for line in stream:
        out.put(line.strip())


def worker_pids(parent: subprocess.Popen, n: int, timeout: float) -> list[int]:
    """Pids the parent's workers report, waiting at most `timeout` seconds for `n`."""
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=_lines, args=(parent.stdout, lines), daemon=True).start()
    pids, deadline = [], time.monotonic() + timeout
    while len(pids) < n:
        try:
            line = lines.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            break
        assert line != "finished", "featurisation ended before the parent could be killed"
        if line.startswith("worker "):
            pids.append(int(line.split()[1]))
    return pids


def _tail(log) -> str:
    log.flush()
    log.seek(0)
    return log.read()[-2000:]


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL")
@pytest.mark.parametrize("mode, grace", [("prctl", 3.0), ("no_prctl", 3.0)])
def test_workers_exit_when_the_parent_is_sigkilled(audio_dir, mode, grace, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    log = open(tmp_path / "stderr.txt", "w+")  # a file: a full pipe would block the parent
    parent = subprocess.Popen([sys.executable, "-c", PARENT, str(audio_dir), mode], env=env,
                              stdout=subprocess.PIPE, stderr=log, text=True)
    pids: list[int] = []
    try:
        pids = worker_pids(parent, 2, timeout=90)
        assert len(pids) == 2, f"the workers never started: {_tail(log)}"
        time.sleep(0.5)  # into the work
        state = (parent.poll(), [alive(pid) for pid in pids])
        assert state == (None, [True, True]), f"nothing to kill: {state}, {_tail(log)}"
        parent.send_signal(signal.SIGKILL)
        parent.wait(timeout=10)
        deadline = time.monotonic() + grace
        while any(map(alive, pids)) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not [pid for pid in pids if alive(pid)], f"orphaned workers outlived {grace}s"
    finally:
        log.close()
        if parent.poll() is None:
            parent.kill()
        for pid in pids:  # never leave a failed run's workers behind
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
