"""Hydra Sweeper that asks Optuna for each trial's parameters and tells it the result.

Search spaces use Hydra's override grammar, in `hydra.sweeper.params` or on the command
line: `choice(16, 32)`, `range(1, 5)`, `interval(0.1, 0.5)`, `tag(log, interval(1e-4,
1e-2))`, `tag(int, interval(1, 8))`; anything else is a fixed override. The task's
return value (train.py returns `optimized_metric`) is the objective; a failed or
non-numeric trial is told FAIL.
"""

# No `from __future__ import annotations`: Hydra imports plugins outside sys.modules,
# where dataclasses cannot resolve string annotations.
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hydra.core.config_store import ConfigStore
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import ChoiceSweep, IntervalSweep, Override, RangeSweep
from hydra.core.plugins import Plugins
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

if TYPE_CHECKING:  # optuna is imported when a sweep runs: Hydra imports every plugin
    import optuna
    from optuna.distributions import BaseDistribution

log = logging.getLogger(__name__)


@dataclass
class SerOptunaSweeperConf:
    _target_: str = "hydra_plugins.ser_optuna_sweeper.optuna_sweeper.SerOptunaSweeper"
    direction: str = "maximize"
    study_name: str | None = None
    storage: str | None = None  # e.g. sqlite:///optuna.db to resume; None keeps it in memory
    n_trials: int = 20
    n_jobs: int = 1  # trials launched per batch
    sampler: Any = field(default_factory=lambda: {"_target_": "optuna.samplers.TPESampler"})
    params: dict[str, str] | None = None


ConfigStore.instance().store(group="hydra/sweeper", name="ser_optuna",
                             node=SerOptunaSweeperConf, provider="ser")


def to_distribution(override: Override) -> "BaseDistribution | None":
    """The Optuna distribution of a sweep override; None for a fixed value."""
    from optuna.distributions import (
        CategoricalDistribution,
        FloatDistribution,
        IntDistribution,
    )

    if not override.is_sweep_override():
        return None
    value = override.value()
    if isinstance(value, ChoiceSweep):
        return CategoricalDistribution([_plain(v) for v in value.list])
    if isinstance(value, RangeSweep):
        return CategoricalDistribution(list(value.range()))
    if isinstance(value, IntervalSweep):
        log_scale = "log" in value.tags
        if "int" in value.tags:  # Hydra parses interval bounds as floats
            return IntDistribution(int(value.start), int(value.end), log=log_scale)
        return FloatDistribution(float(value.start), float(value.end), log=log_scale)
    raise ValueError(f"{override.input_line}: unsupported sweep for Optuna")


def _plain(value: Any) -> Any:
    """Optuna's categorical choices must be None, bool, int, float or str."""
    return value if value is None or isinstance(value, bool | int | float | str) else str(value)


def search_space(
    params: dict[str, str] | None, arguments: list[str]
) -> "tuple[dict[str, BaseDistribution], list[str]]":
    """Distributions by key, and the fixed overrides; command-line arguments win."""
    lines = [f"{k}={v}" for k, v in (params or {}).items()] + list(arguments)
    distributions: dict[str, BaseDistribution] = {}
    fixed: dict[str, str] = {}
    for override in OverridesParser.create().parse_overrides(lines):
        key = override.get_key_element()
        distributions.pop(key, None)
        fixed.pop(key, None)
        dist = to_distribution(override)
        if dist is None:
            fixed[key] = override.input_line
        else:
            distributions[key] = dist
    return distributions, list(fixed.values())


class SerOptunaSweeper(Sweeper):
    def __init__(self, direction: str, study_name: str | None, storage: str | None,
                 n_trials: int, n_jobs: int, sampler: Any, params: dict | None) -> None:
        self.direction = direction
        self.study_name = study_name
        self.storage = storage
        self.n_trials = n_trials
        self.n_jobs = max(1, n_jobs)
        self.sampler_cfg = sampler
        self.params = OmegaConf.to_container(params) if isinstance(params, DictConfig) else params
        self.job_idx = 0

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction,
              config: DictConfig) -> None:
        self.config = config
        self.hydra_context = hydra_context
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config)

    def sweep(self, arguments: list[str]) -> "optuna.Study":
        import optuna

        distributions, fixed = search_space(self.params, arguments)
        if not distributions:
            raise ValueError("nothing to search: give hydra.sweeper.params or sweep overrides")
        study = optuna.create_study(
            study_name=self.study_name, storage=self.storage, direction=self.direction,
            sampler=self._sampler(),
            load_if_exists=True,
        )
        log.info("Optuna study %s, %s, %d trials: %s", study.study_name, self.direction,
                 self.n_trials, {k: repr(d) for k, d in distributions.items()})
        done = 0
        while done < self.n_trials:
            batch = min(self.n_jobs, self.n_trials - done)
            self._run_batch(study, distributions, fixed, batch)
            done += batch
        self._write_results(study)
        return study

    def _sampler(self) -> "optuna.samplers.BaseSampler | None":
        """Hydra instantiates the sweeper's config recursively: usually a sampler by now."""
        import optuna

        if self.sampler_cfg is None or isinstance(self.sampler_cfg, optuna.samplers.BaseSampler):
            return self.sampler_cfg
        return instantiate(self.sampler_cfg)

    def _run_batch(self, study: "optuna.Study", distributions: "dict[str, BaseDistribution]",
                   fixed: list[str], size: int) -> None:
        import optuna

        trials = [study.ask(distributions) for _ in range(size)]
        overrides = [fixed + [f"{k}={v}" for k, v in t.params.items()] for t in trials]
        self.validate_batch_is_legal(overrides)
        returns = self.launcher.launch(overrides, initial_job_idx=self.job_idx)
        self.job_idx += len(returns)
        for trial, ret in zip(trials, returns, strict=True):
            try:
                value = float(ret.return_value)
            except Exception as err:  # the job raised, or returned no number
                log.warning("trial %d failed: %r", trial.number, err)
                study.tell(trial, state=optuna.trial.TrialState.FAIL)
                continue
            if math.isnan(value):
                study.tell(trial, state=optuna.trial.TrialState.FAIL)
            else:
                study.tell(trial, value)

    def _write_results(self, study: "optuna.Study") -> None:
        import optuna

        complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
        out = Path(self.config.hydra.sweep.dir)
        out.mkdir(parents=True, exist_ok=True)
        results: dict[str, Any] = {"name": "ser_optuna", "n_complete": len(complete),
                                   "n_trials": len(study.trials)}
        if complete:
            results.update(best_value=study.best_value, best_params=study.best_params,
                           best_trial=study.best_trial.number)
            log.info("best %s: %s with %s", self.direction, study.best_value, study.best_params)
        OmegaConf.save(OmegaConf.create(results), out / "optimization_results.yaml")
