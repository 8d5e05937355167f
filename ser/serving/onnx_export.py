"""ONNX export of a trained classifier, self-describing like the checkpoint it came from.

The graph takes raw hand-feature vectors `features` (batch, D) and returns `probabilities`
(batch, classes): standardisation and softmax are inside. The model's metadata holds the
label map (`class_names`), the preprocessing settings (`features`: audio crop and hand
features), and the checkpoint's whole `ser_meta`, so `Predictor.load(model.onnx)` needs
nothing else.

    ser-export-onnx CKPT [OUT.onnx]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import sys
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch

INPUT, OUTPUT = "features", "probabilities"
OPSET = 18


def export_onnx(ckpt_path: str | Path, out_path: str | Path | None = None) -> Path:
    """Write `out_path` (default: beside the checkpoint, `.onnx`); returns its path."""
    import onnx

    from ser.training.checkpoint import load_classifier

    ckpt_path = Path(ckpt_path)
    out = Path(out_path) if out_path else ckpt_path.with_suffix(".onnx")
    model = load_classifier(ckpt_path)
    wrapper = Probabilities(model).eval()
    example = torch.zeros(2, model.feature_mean.numel())
    batch = torch.export.Dim("batch", min=1)
    with warnings.catch_warnings(), _quiet("torch.onnx"):
        warnings.simplefilter("ignore")  # the exporter's notes on torchvision and friends
        program = torch.onnx.export(
            wrapper, (example,), input_names=[INPUT], output_names=[OUTPUT],
            dynamic_shapes=({0: batch},), opset_version=OPSET, dynamo=True, verbose=False,
            optimize=True,
        )
    proto = program.model_proto
    meta = {**model.ser_meta, "class_names": model.class_names}
    with open(ckpt_path, "rb") as f:
        digest = hashlib.file_digest(f, "sha1").hexdigest()
    props = {
        "class_names": json.dumps(model.class_names),
        "features": json.dumps(meta["features"]),
        "feature_type": str(meta.get("feature_type", "hand")),
        "ser_meta": json.dumps(meta, default=str),
        "source_checkpoint": f"{ckpt_path.name} sha1 {digest}",
    }
    onnx.helper.set_model_props(proto, props)
    proto.doc_string = "ser emotion classifier: raw feature vectors in, class probabilities out"
    onnx.checker.check_model(proto)
    out.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(proto, out)
    return out


@contextmanager
def _quiet(name: str) -> Iterator[None]:
    """Only errors from a logger (the exporter warns that torchvision is absent)."""
    logger = logging.getLogger(name)
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


class Probabilities(torch.nn.Module):
    """The classifier (standardisation inside) followed by softmax."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.model(features), dim=-1)


def read_metadata(path: str | Path) -> dict[str, str]:
    """The model's metadata properties as a dict."""
    import onnx

    proto = onnx.load(str(path), load_external_data=False)
    return {p.key: p.value for p in proto.metadata_props}


def load_onnx(path: str | Path, threads: int | None = None):
    """(classify, ser_meta) for `Predictor`: onnxruntime on the CPU."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    props = session.get_modelmeta().custom_metadata_map
    if "ser_meta" not in props:
        raise ValueError(f"{path}: not a ser ONNX export (no 'ser_meta' metadata)")
    meta = json.loads(props["ser_meta"])

    def classify(features: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(features, dtype=np.float32)
        if x.ndim == 3:  # (clips, versions, D): mean probability over each clip's versions
            probs = session.run([OUTPUT], {INPUT: x.reshape(-1, x.shape[-1])})[0]
            return probs.reshape(x.shape[0], x.shape[1], -1).mean(axis=1)
        return session.run([OUTPUT], {INPUT: x})[0]

    return classify, meta


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="ser-export-onnx", description="Export a ser checkpoint to ONNX, with its label "
        "map and feature settings in the model's metadata.")
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("out", type=Path, nargs="?", default=None,
                        help="output .onnx (default: beside the checkpoint)")
    args = parser.parse_args(argv)
    try:
        out = export_onnx(args.checkpoint, args.out)
    except (OSError, ValueError) as err:
        print(f"ser-export-onnx: {err}", file=sys.stderr)
        return 2
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
