"""The `ser-train` and `ser-evaluate` commands (and the checkout's train.py, evaluate.py).

Both take Hydra's overrides (`ser-train experiment=baseline_ravdess data.fold=3`, `-m`
sweeps, `--cfg job`) and compose the configs shipped in the package (ser/conf), so they
work from any directory. `--config-dir DIR` or `hydra.searchpath=[file:///DIR]` adds a
folder of the user's own options (DIR/data/mycorpus.yaml, DIR/model/mine.yaml, ...).
"""

from __future__ import annotations

import logging
import sys
import types
import warnings
from pathlib import Path

import hydra
from omegaconf import DictConfig

from ser.config import CONF_DIR, register_resolvers

register_resolvers()

# Lightning's advertisements, logged at INFO on every Trainer (message prefixes)
LIGHTNING_TIPS = ("💡 Tip:",)
LIGHTNING_LOGGERS = ("lightning.pytorch", "lightning.fabric", "lightning_fabric")
LIGHTNING_RANK_ZERO_LOGGERS = ("lightning.pytorch.utilities.rank_zero",
                               "lightning_fabric.utilities.rank_zero",
                               "lightning.fabric.utilities.rank_zero")


class DropMessages(logging.Filter):
    """Drops records whose message starts with one of `prefixes`; passes the rest."""

    def __init__(self, prefixes: tuple[str, ...]) -> None:
        super().__init__()
        self.prefixes = prefixes

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(self.prefixes)


def lightning_lines_once() -> None:
    """Lightning's INFO lines ("GPU available: ...") once, by Lightning's own handler.

    Lightning gives its loggers a handler and stops their propagation only when it is
    imported before any logging set-up; imported after Hydra's, each line would print twice
    (its `lightning` handler and Hydra's). Do what it does, whatever the import order.
    """
    for name in LIGHTNING_LOGGERS:
        logger = logging.getLogger(name)
        if not logger.handlers:
            logger.addHandler(logging.StreamHandler())
        logger.propagate = False


def quiet_third_party() -> None:
    """Silence the pinned stack's noise on a plain run, each by message and module.

    - TensorBoard imports TensorFlow, when installed (the `keras` extra), only for file
      access; its own stub does that for local log folders, without ~10 s of import and
      TensorFlow's absl/oneDNN lines (`tensorboard.compat.notf` is its switch for this).
    - Lightning's "Tip" advertisements on every Trainer.
    - Lightning 2.6 still builds torch's deprecated `LeafSpec` (a FutureWarning per test).
    - The float32 test Trainer deliberately has no callbacks, so Lightning's warning that
      the checkpoint's callbacks are missing does not apply.
    """
    if "tensorflow" not in sys.modules:
        sys.modules.setdefault("tensorboard.compat.notf", types.ModuleType("notf"))
    lightning_lines_once()
    for name in LIGHTNING_RANK_ZERO_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, DropMessages) for f in logger.filters):
            logger.addFilter(DropMessages(LIGHTNING_TIPS))
    warnings.filterwarnings("ignore", r"`isinstance\(treespec, LeafSpec\)` is deprecated",
                            FutureWarning, r"lightning\.pytorch\.utilities\._pytree")
    warnings.filterwarnings("ignore", message="Be aware that when using `ckpt_path`, callbacks",
                            module=r"lightning\.pytorch\.trainer\.call")


def _exit_with(err: Exception) -> None:
    """One line naming the command, not a traceback; exit status 2."""
    print(f"{Path(sys.argv[0]).name}: {err}", file=sys.stderr)
    sys.exit(2)


def _train(cfg: DictConfig) -> float | None:
    quiet_third_party()
    from ser.training.config_check import ConfigError
    from ser.training.schema import CheckpointError
    from ser.training.train import train

    try:
        metrics = train(cfg)
    except (ConfigError, CheckpointError) as err:
        _exit_with(err)
    return metrics.get(cfg.get("optimized_metric"))  # what a sweeper maximises


def _evaluate(cfg: DictConfig) -> None:
    quiet_third_party()
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
