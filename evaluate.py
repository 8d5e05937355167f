"""Evaluate a checkpoint: `python evaluate.py ckpt_path=PATH [data=ravdess data.fold=N]`."""

import sys

import hydra
from omegaconf import DictConfig

from ser.config import register_resolvers
from ser.training.evaluate import evaluate
from ser.training.schema import CheckpointError

register_resolvers()


@hydra.main(version_base="1.3", config_path="conf", config_name="eval")
def main(cfg: DictConfig) -> None:
    try:
        evaluate(cfg)
    except CheckpointError as err:  # one line naming the file, not a traceback
        print(f"evaluate.py: {err}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
