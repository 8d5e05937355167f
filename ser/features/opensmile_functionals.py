"""openSMILE functionals (eGeMAPSv02, ComParE_2016) as utterance vectors, optionally with ours.

`features=opensmile` runs audEERING's `opensmile` package on each clip version and keeps
its utterance-level functionals: eGeMAPSv02's 88 (the Geneva minimalistic acoustic
parameter set: pitch, jitter, shimmer, HNR, formants, H1-H2, alpha ratio, Hammarberg
index, spectral slopes, loudness) or ComParE_2016's 6373. `with_stats` appends our own
utterance statistics (`features.stats`), so the two sets can be compared and combined on
the same rows, caches and splits.

The package is licensed for research and education only, so it is an optional extra
(`pip install -e ".[opensmile]"`), never part of the base install; a run that asks for it
without it installed stops at start-up with that instruction.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import sys
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np

# functionals per feature set, as the package's `FeatureLevel.Functionals` gives them
OPENSMILE_SETS = {"eGeMAPSv02": 88, "ComParE_2016": 6373}
INSTALL_HINT = ('features=opensmile needs the optional "opensmile" extra, licensed for '
                'research and education only: pip install -e ".[opensmile]"')


class OpenSmileMissingError(ImportError):
    """The `opensmile` package is not installed."""


class NonFiniteFunctionalsError(ValueError):
    """openSMILE gave NaN or infinite functionals for this audio."""


@dataclass(frozen=True)
class OpenSmileConfig:
    """Which openSMILE set, and whether our utterance statistics follow it in the vector."""

    feature_set: str = "eGeMAPSv02"
    with_stats: bool = False

    def __post_init__(self) -> None:
        if self.feature_set not in OPENSMILE_SETS:
            raise ValueError(f"features.opensmile.feature_set must be one of "
                             f"{sorted(OPENSMILE_SETS)}, got {self.feature_set!r}")
        if not isinstance(self.with_stats, bool):
            raise ValueError(f"features.opensmile.with_stats must be true or false, got "
                             f"{self.with_stats!r}")

    @property
    def dim(self) -> int:
        """Values openSMILE gives (our statistics, when appended, come on top)."""
        return OPENSMILE_SETS[self.feature_set]


def opensmile_version() -> str:
    """The installed package's version (it keys the cache), or OpenSmileMissingError."""
    try:
        importlib.import_module("opensmile")
        return importlib.metadata.version("opensmile")
    except ImportError as err:
        raise OpenSmileMissingError(f"{INSTALL_HINT} ({err})") from None


class OpenSmileClashError(RuntimeError):
    """openSMILE asked for in a process that has loaded TensorFlow."""


@lru_cache(maxsize=4)
def _smile(feature_set: str) -> Any:
    """One extractor per set and process (building one parses its config files)."""
    opensmile_version()
    if "tensorflow" in sys.modules:
        # its native library and TensorFlow's crash the process (segfault or abort) when
        # both are loaded, as measured with tensorflow-cpu 2.x and opensmile 2.6
        raise OpenSmileClashError("openSMILE features can't be computed in a process that "
                                  "has loaded TensorFlow (the Keras twin): their native "
                                  "libraries crash together; run them in separate processes")
    import opensmile

    return opensmile.Smile(feature_set=getattr(opensmile.FeatureSet, feature_set),
                           feature_level=opensmile.FeatureLevel.Functionals)


def opensmile_vector(wave: np.ndarray, sr: int, cfg: OpenSmileConfig) -> np.ndarray:
    """A waveform's (cfg.dim,) float32 openSMILE functionals (NonFiniteFunctionalsError
    if any is not finite)."""
    values = _smile(cfg.feature_set).process_signal(np.asarray(wave, np.float32), sr)
    vector = np.asarray(values, dtype=np.float32).reshape(-1)
    if vector.shape != (cfg.dim,):
        raise ValueError(f"openSMILE {cfg.feature_set} gave {vector.size} values, "
                         f"expected {cfg.dim}")
    if not np.isfinite(vector).all():
        raise NonFiniteFunctionalsError(f"openSMILE {cfg.feature_set} gave non-finite "
                                        "functionals")
    return vector
