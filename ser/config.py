"""Hydra/OmegaConf glue: where the configs are, and the resolvers they use."""

from __future__ import annotations

from pathlib import Path

from omegaconf import OmegaConf

REPO_ROOT = Path(__file__).resolve().parents[1]
CONF_DIR = REPO_ROOT / "conf"


def register_resolvers() -> None:
    """`${repo_root:}`: the checkout's root, whatever the working directory."""
    if not OmegaConf.has_resolver("repo_root"):
        OmegaConf.register_new_resolver("repo_root", lambda: str(REPO_ROOT))
