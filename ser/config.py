"""Hydra/OmegaConf glue: where the configs are, and the resolvers they use.

The configs ship inside the package (`ser/conf`), so `ser-train` finds them from any
directory and in a non-editable install; every reader takes CONF_DIR from here.
"""

from __future__ import annotations

import os
from pathlib import Path

from omegaconf import OmegaConf

PACKAGE_DIR = Path(__file__).resolve().parent
CONF_DIR = PACKAGE_DIR / "conf"
# the checkout's root; in an installed package, the folder holding site-packages' `ser`
REPO_ROOT = PACKAGE_DIR.parent


def register_resolvers() -> None:
    """`${cwd:}`: the directory a run starts in, where outputs, data and the feature cache
    go by default (never inside site-packages); `${repo_root:}`: the checkout's root, kept
    for user configs that name it."""
    if not OmegaConf.has_resolver("cwd"):
        OmegaConf.register_new_resolver("cwd", os.getcwd)
    if not OmegaConf.has_resolver("repo_root"):
        OmegaConf.register_new_resolver("repo_root", lambda: str(REPO_ROOT))
