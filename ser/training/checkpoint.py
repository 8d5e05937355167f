"""Loading ser checkpoints safely: metadata, network, input pipeline, weights.

Checkpoints are read with `torch.load(weights_only=True)`: tensors and plain data only,
so a crafted file cannot run code while it is read. The network is rebuilt from the
model-family table (ser.models.FAMILIES), never from a class path stored in the file.
Every way a file can be wrong ends in `CheckpointError`, whose message names the file.
"""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch

from ser.features.pipelines import pipeline_from_meta
from ser.models import net_from_meta
from ser.training.module import SERClassifier
from ser.training.schema import CheckpointError, CheckpointMeta


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """The checkpoint's dict, read as tensors and plain data only."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else "unpickling failed"
        raise CheckpointError(f"{path}: refused: it holds more than tensors and plain data "
                              f"({first[:200]}); ser loads checkpoints with "
                              f"weights_only=True") from None
    except (RuntimeError, EOFError, OSError, ValueError, zipfile.BadZipFile,
            UnicodeDecodeError, AttributeError, TypeError, IndexError, KeyError) as err:
        raise CheckpointError(f"{path}: not a readable checkpoint ({_short(err)})") from None
    if not isinstance(ckpt, dict):
        raise CheckpointError(f"{path}: not a ser checkpoint (no ser metadata)")
    return ckpt


def read_meta(path: str | Path, ckpt: dict[str, Any] | None = None) -> CheckpointMeta:
    ckpt = read_checkpoint(path) if ckpt is None else ckpt
    try:
        return CheckpointMeta.from_dict(ckpt.get("ser_meta"))
    except ValueError as err:
        raise CheckpointError(f"{path}: {err}") from None


def load_classifier(path: str | Path) -> SERClassifier:
    """Rebuild a trained classifier, with its input pipeline, from its checkpoint alone."""
    ckpt = read_checkpoint(path)
    meta = read_meta(path, ckpt)
    return classifier_from_meta(path, meta, ckpt.get("state_dict"))


def classifier_from_meta(path: str | Path, meta: CheckpointMeta,
                         state_dict: dict[str, torch.Tensor] | None) -> SERClassifier:
    """The model a checkpoint's metadata describes, with `state_dict`'s weights."""
    try:
        pipeline = pipeline_from_meta(meta.pipeline)
        net = net_from_meta(meta.family, meta.net)
    except (ValueError, KeyError, TypeError, OSError) as err:
        raise CheckpointError(f"{path}: its metadata does not describe a usable model "
                              f"({_short(err)})") from None
    model = SERClassifier(net, meta.class_names)
    model.attach(meta.family, pipeline, meta.training)
    if not isinstance(state_dict, dict):
        raise CheckpointError(f"{path}: no weights (state_dict) in the checkpoint")
    try:
        model.load_state_dict(state_dict)
    except (RuntimeError, KeyError, TypeError) as err:
        raise CheckpointError(f"{path}: the weights do not fit the network its metadata "
                              f"describes ({_short(err)})") from None
    return model.eval()


def save_classifier(model: SERClassifier, path: str | Path) -> Path:
    """A minimal checkpoint (weights and metadata, no training state) that loads as any
    trained one does: for models built outside a training run."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": model.state_dict(), "ser_meta": model.checkpoint_meta().to_dict()},
               path)
    return path


def _short(err: Exception) -> str:
    text = " ".join(str(err).split()) or type(err).__name__
    return text if len(text) <= 300 else text[:297] + "..."
