"""Model files as possibly hostile input: checkpoints load as tensors and plain data only,
and every broken, crafted or foreign file ends in one line naming it (exit 2), never a
traceback and never code run."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from ser.config import REPO_ROOT
from ser.serving.app import main as serve_main
from ser.serving.onnx_export import main as export_main
from ser.serving.predict import Predictor
from ser.serving.predict import main as predict_main
from ser.training.checkpoint import load_classifier
from ser.training.schema import SCHEMA_VERSION, CheckpointError
from tests.conftest import write_tone


class RunsAShellCommand:
    """What a crafted pickle does: calls os.system when it is unpickled."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


@pytest.fixture()
def clip(tmp_path):
    return write_tone(tmp_path / "clip.wav", 440.0)


def _broken_files(tmp_path, tiny_checkpoint):
    data = tiny_checkpoint.read_bytes()
    files = {
        "empty": b"",
        "truncated": data[: len(data) // 2],
        "random": os.urandom(4096),
        "text": b"this is a model, honestly\n",
    }
    out = {}
    for name, content in files.items():
        out[name] = tmp_path / f"{name}.ckpt"
        out[name].write_bytes(content)
    return out


def test_a_crafted_checkpoint_is_refused_before_any_code_runs(tmp_path):
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {}, "ser_meta": RunsAShellCommand(marker)}, evil)
    with pytest.raises(CheckpointError, match="refused: it holds more than tensors") as err:
        load_classifier(evil)
    assert str(evil) in str(err.value) and not marker.exists()


def test_broken_checkpoints_name_the_file(tmp_path, tiny_checkpoint):
    for name, path in _broken_files(tmp_path, tiny_checkpoint).items():
        with pytest.raises(CheckpointError) as err:
            load_classifier(path)
        assert str(err.value).startswith(f"{path}: "), name
    with pytest.raises(CheckpointError, match="no such checkpoint file"):
        load_classifier(tmp_path / "missing.ckpt")


@pytest.mark.parametrize(("change", "message"), [
    ({"schema_version": 99}, f"schema version 99, this ser reads version {SCHEMA_VERSION}"),
    ({"family": "evil"}, "unknown model family 'evil'"),
    ({"class_names": "neutral"}, "'class_names' is missing or not a list"),
    ({"pipeline": {"kind": "magic"}}, "unknown input pipeline 'magic'"),
    ({"net": {"channels": [1]}}, "does not describe a usable model"),
])
def test_altered_metadata_is_named(change, message, tmp_path, tiny_checkpoint):
    ckpt = torch.load(tiny_checkpoint, weights_only=True)
    ckpt["ser_meta"] = {**ckpt["ser_meta"], **change}
    path = tmp_path / "altered.ckpt"
    torch.save(ckpt, path)
    with pytest.raises(CheckpointError, match=message):
        load_classifier(path)


def test_weights_that_do_not_fit_are_named(tmp_path, tiny_checkpoint):
    ckpt = torch.load(tiny_checkpoint, weights_only=True)
    ckpt["state_dict"] = {k: v[..., :1] if v.dim() else v for k, v in ckpt["state_dict"].items()}
    path = tmp_path / "shrunk.ckpt"
    torch.save(ckpt, path)
    with pytest.raises(CheckpointError, match="weights do not fit the network"):
        load_classifier(path)


def test_commands_exit_2_with_one_line(tmp_path, tiny_checkpoint, tiny_onnx, clip, capsys):
    bad = _broken_files(tmp_path, tiny_checkpoint)
    cut_onnx = tmp_path / "cut.onnx"
    cut_onnx.write_bytes(tiny_onnx.read_bytes()[:1000])
    for path in [*bad.values(), cut_onnx]:
        assert predict_main([str(path), str(clip)]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and str(path) in err[0] and "Traceback" not in err[0]
    for path in bad.values():
        assert export_main([str(path), str(tmp_path / "out.onnx")]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and str(path) in err[0]
        assert serve_main([str(path)]) == 2  # before it binds a port
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and str(path) in err[0] and "Traceback" not in err[0]
    with pytest.raises(CheckpointError, match="not a usable ser ONNX model"):
        Predictor.load(cut_onnx)


def test_evaluate_py_exits_2_with_one_line(tmp_path, tiny_checkpoint):
    path = _broken_files(tmp_path, tiny_checkpoint)["truncated"]
    done = subprocess.run([sys.executable, "evaluate.py", f"ckpt_path={path}",
                           f"hydra.run.dir={tmp_path / 'eval'}"],
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"evaluate.py: {path}: not a readable")


def test_a_checkpoint_holds_tensors_and_plain_data_only(tiny_checkpoint):
    ckpt = torch.load(tiny_checkpoint, weights_only=True)  # would raise on anything else
    json.dumps(ckpt["ser_meta"])  # the metadata is plain JSON values
