"""Evaluate a checkpoint: `python evaluate.py ckpt_path=PATH [data=ravdess data.fold=N]`."""

import hydra
from omegaconf import DictConfig

from ser.config import register_resolvers
from ser.evaluation.evaluate import evaluate

register_resolvers()


@hydra.main(version_base="1.3", config_path="conf", config_name="eval")
def main(cfg: DictConfig) -> None:
    evaluate(cfg)


if __name__ == "__main__":
    main()
