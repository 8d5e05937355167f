"""Train a model: `python train.py [experiment=...] [group=option] [key=value]`; `-m` sweeps."""

import hydra
from omegaconf import DictConfig

from ser.config import register_resolvers
from ser.training.train import train

register_resolvers()


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    metrics = train(cfg)
    return metrics.get(cfg.get("optimized_metric"))


if __name__ == "__main__":
    main()
