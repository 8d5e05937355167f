"""ONNX export of a trained classifier, self-describing like the checkpoint it came from.

The graph takes the input pipeline's tensors (feature vectors `features` (clips,
versions, D), or `waves` (clips, 1, samples) and `lengths` (clips, 1) for waveform
models, any number of samples) and returns `probabilities` (clips, classes): the
versions' mean probability. The model's metadata holds the label map (`class_names`) and
the checkpoint's whole metadata (`ser_meta`: family, input pipeline with its fitted
statistics, network), so `Predictor.load(model.onnx)` needs nothing else.

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

from ser.training.schema import CheckpointError, CheckpointMeta

OUTPUT = "probabilities"
OPSET = 18


def export_onnx(ckpt_path: str | Path, out_path: str | Path | None = None) -> Path:
    """Write `out_path` (default: beside the checkpoint, `.onnx`); returns its path."""
    import onnx

    from ser.training.checkpoint import load_classifier

    ckpt_path = Path(ckpt_path)
    out = Path(out_path) if out_path else ckpt_path.with_suffix(".onnx")
    model = load_classifier(ckpt_path)
    pipeline = model.pipeline
    wrapper = Probabilities(model).eval()
    example = pipeline.example_inputs()
    clips = torch.export.Dim("clips", min=1)
    varying = pipeline.dynamic_axes()
    dynamic = {name: {0: clips, **{axis: torch.export.Dim(label, min=400)
                                   for axis, label in varying.get(name, {}).items()}}
               for name in example}
    with warnings.catch_warnings(), _quiet("torch.onnx"):
        warnings.simplefilter("ignore")  # the exporter's notes on torchvision and friends
        program = torch.onnx.export(
            wrapper, tuple(example.values()), input_names=list(example), output_names=[OUTPUT],
            dynamic_shapes=(tuple(dynamic.values()),), opset_version=OPSET, dynamo=True,
            verbose=False, optimize=True,
        )
    proto = program.model_proto
    with open(ckpt_path, "rb") as f:
        digest = hashlib.file_digest(f, "sha1").hexdigest()
    props = {
        "class_names": json.dumps(model.class_names),
        "ser_meta": json.dumps(model.checkpoint_meta().to_dict()),
        "source_checkpoint": f"{ckpt_path.name} sha1 {digest}",
    }
    onnx.helper.set_model_props(proto, props)
    proto.doc_string = "ser emotion classifier: the input pipeline's tensors in, probabilities out"
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
    """The classifier on the pipeline's input tensors (positional, in the pipeline's
    order), followed by softmax: each clip's mean probability over its versions."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model
        self.names = list(model.pipeline.input_names)

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.model(dict(zip(self.names, inputs, strict=True))), dim=-1)


def read_metadata(path: str | Path) -> dict[str, str]:
    """The model's metadata properties as a dict."""
    import onnx

    proto = onnx.load(str(path), load_external_data=False)
    return {p.key: p.value for p in proto.metadata_props}


def load_onnx(path: str | Path, threads: int | None = None):
    """(classify, CheckpointMeta) for `Predictor`: onnxruntime on the CPU."""
    import onnxruntime as ort

    path = Path(path)
    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    try:
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as err:  # onnxruntime's own exception types (InvalidProtobuf, Fail, ...)
        first = str(err).strip().splitlines()[0][:200] if str(err).strip() else type(err).__name__
        raise CheckpointError(f"{path}: not a usable ser ONNX model ({first})") from None
    props = session.get_modelmeta().custom_metadata_map
    if "ser_meta" not in props:
        raise CheckpointError(f"{path}: not a ser ONNX export (no 'ser_meta' metadata)")
    try:
        meta = CheckpointMeta.from_dict(json.loads(props["ser_meta"]))
    except ValueError as err:  # json's errors are ValueErrors too
        raise CheckpointError(f"{path}: {err}") from None
    names = [i.name for i in session.get_inputs()]

    def classify(inputs: dict[str, np.ndarray]) -> np.ndarray:
        feed = {name: np.ascontiguousarray(inputs[name]) for name in names}
        return session.run([OUTPUT], feed)[0]

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
    except (OSError, ValueError) as err:  # CheckpointError is a ValueError naming the file
        print(f"ser-export-onnx: {err}", file=sys.stderr)
        return 2
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
