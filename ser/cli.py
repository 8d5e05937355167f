"""The `ser-train` and `ser-evaluate` commands (and the checkout's train.py, evaluate.py).

Both take Hydra's overrides (`ser-train experiment=baseline_ravdess data.fold=3`, `-m`
sweeps, `--cfg job`) and compose the configs shipped in the package (ser/conf), so they
work from any directory. `--config-dir DIR` or `hydra.searchpath=[file:///DIR]` adds a
folder of the user's own options (DIR/data/mycorpus.yaml, DIR/model/mine.yaml, ...).
"""

from __future__ import annotations

import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

from ser.config import CONF_DIR, register_resolvers

register_resolvers()


def _exit_with(err: Exception) -> None:
    """One line naming the command, not a traceback; exit status 2."""
    print(f"{Path(sys.argv[0]).name}: {err}", file=sys.stderr)
    sys.exit(2)


def _train(cfg: DictConfig) -> float | None:
    from ser.training.config_check import ConfigError
    from ser.training.schema import CheckpointError
    from ser.training.train import train

    try:
        metrics = train(cfg)
    except (ConfigError, CheckpointError) as err:
        _exit_with(err)
    return metrics.get(cfg.get("optimized_metric"))  # what a sweeper maximises


def _evaluate(cfg: DictConfig) -> None:
    from ser.training.evaluate import evaluate
    from ser.training.schema import CheckpointError

    try:
        evaluate(cfg)
    except CheckpointError as err:  # one line naming the file
        _exit_with(err)


train_main = hydra.main(version_base="1.3", config_path=str(CONF_DIR),
                        config_name="train")(_train)
evaluate_main = hydra.main(version_base="1.3", config_path=str(CONF_DIR),
                           config_name="eval")(_evaluate)
