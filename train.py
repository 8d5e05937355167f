"""Train a model: `python train.py [experiment=...] [group=option] [key=value]`; `-m` sweeps."""

import sys

import hydra
from omegaconf import DictConfig

from ser.config import register_resolvers
from ser.training.config_check import ConfigError
from ser.training.schema import CheckpointError
from ser.training.train import train

register_resolvers()


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    try:
        metrics = train(cfg)
    except (ConfigError, CheckpointError) as err:  # one line, not a traceback
        print(f"train.py: {err}", file=sys.stderr)
        sys.exit(2)
    return metrics.get(cfg.get("optimized_metric"))


if __name__ == "__main__":
    main()
