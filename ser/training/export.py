"""Export a fine-tuned checkpoint to transformers' own format.

    python -m ser.training.export outputs/train/runs/<time>/checkpoints/best.ckpt OUT_DIR

OUT_DIR then holds config.json (with id2label), the weights and preprocessor_config.json;
anyone can load it without this project:

    from transformers import AutoFeatureExtractor, AutoModelForAudioClassification
    model = AutoModelForAudioClassification.from_pretrained(OUT_DIR)
    extractor = AutoFeatureExtractor.from_pretrained(OUT_DIR)

train(cfg) already does this for every fine-tuned run (`<run>/hf_model`).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ser.training.checkpoint import load_classifier


def export_checkpoint(ckpt_path: str | Path, out_dir: str | Path) -> Path:
    model = load_classifier(ckpt_path)
    path = model.export_pretrained(out_dir)
    if path is None:
        raise ValueError(f"{ckpt_path}: only fine-tuned backbone models (model=hubert) export "
                         "to transformers' format")
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("out_dir", type=Path)
    args = parser.parse_args(argv)
    try:
        print(export_checkpoint(args.checkpoint, args.out_dir))
    except ValueError as err:  # CheckpointError names the file
        print(f"ser-export-hf: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
