"""Start-up checks of a composed config: combinations that can't work stop here.

A model family consumes one kind of input ("vector" or "waveform", ser.models.FAMILIES);
each `features` option builds one input pipeline (`kind`), and each `augment` option is
either training versions of a clip (`kind: versions`, for feature vectors) or on-line
waveform augmentation (`kind: online`). The messages name the groups and the options that
would work, read from the config files themselves.
"""

from __future__ import annotations

import json
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from ser.config import CONF_DIR
from ser.features.opensmile_functionals import OpenSmileMissingError, opensmile_version
from ser.features.pipelines import AUGMENT_KINDS, INPUT_KINDS
from ser.models import FAMILIES


class ConfigError(ValueError):
    """A config that can't work; the message says which groups and what would."""


def check_config(cfg: DictConfig, conf_dir: Path = CONF_DIR) -> None:
    """Raise ConfigError for a combination of groups that can't train."""
    if cfg.model.get("datamodule") is not None:
        raise ConfigError("model.datamodule is gone: a model family picks its input pipeline "
                          "with the features group (features=waveform for transformer models)")
    family = cfg.model.get("family")
    if family not in FAMILIES:
        raise ConfigError(f"model.family must be one of {sorted(FAMILIES)}, got {family!r}")
    kind = cfg.features.get("kind")
    if kind not in INPUT_KINDS:
        raise ConfigError(f"features.kind must be one of {sorted(INPUT_KINDS)}, got {kind!r} "
                          f"(features={_choice('features', kind)})")
    if kind == "opensmile":
        try:
            opensmile_version()
        except OpenSmileMissingError as err:
            raise ConfigError(str(err)) from None
    needs = FAMILIES[family].input_kind
    if INPUT_KINDS[kind] != needs:
        fits = _options(conf_dir, "features", lambda c: INPUT_KINDS.get(c.get("kind")) == needs)
        raise ConfigError(
            f"model={_choice('model', family)} (family {family}) takes {needs} inputs: "
            f"features={'|'.join(fits)}; features={_choice('features', kind)} makes "
            f"{INPUT_KINDS[kind]} inputs")
    augment = cfg.augment.get("kind")
    if augment != AUGMENT_KINDS[needs]:
        fits = _options(conf_dir, "augment", lambda c: c.get("kind") == AUGMENT_KINDS[needs])
        raise ConfigError(
            f"model={_choice('model', family)} with features={_choice('features', kind)} takes "
            f"augment={'|'.join(fits)} ({AUGMENT_KINDS[needs]} augmentation); "
            f"augment={_choice('augment', augment)} is {augment} augmentation")
    _check_backbone(cfg, family)
    norm = cfg.get("speaker_norm") or {}
    if norm.get("mode", "none") != "none" and needs != "vector":
        raise ConfigError(f"speaker_norm={_choice('speaker_norm', norm.get('mode'))} applies to "
                          f"feature-vector models; model={_choice('model', family)} takes "
                          f"waveforms: use speaker_norm=none")


WHISPER_FAMILIES = ("whisper_frozen",)  # the families whose encoder is Whisper's


def _check_backbone(cfg: DictConfig, family: str) -> None:
    """Whisper backbones only under a Whisper family, and nothing else under one."""
    backbone = (cfg.model.get("net") or {}).get("backbone") or {}
    name = backbone.get("name_or_path")
    if name is None:
        return
    model_type = backbone_type(str(name))
    if model_type is None:
        return
    is_whisper = model_type == "whisper"
    if (family in WHISPER_FAMILIES) != is_whisper:
        fits = "whisper_frozen" if is_whisper else "ssl_frozen (or another waveform model)"
        raise ConfigError(f"model={_choice('model', family)} can't run backbone {name} "
                          f"({model_type}): use model={fits}")


def backbone_type(name: str) -> str | None:
    """The model_type of a local folder's config.json; for a hub id, "whisper" when the
    id names Whisper, else "wav2vec2-family"; None when it can't be told (no config)."""
    path = Path(name).expanduser()
    if path.is_dir():
        try:
            return json.loads((path / "config.json").read_text()).get("model_type")
        except (OSError, ValueError):
            return None
    return "whisper" if "whisper" in name.lower() else "wav2vec2-family"


def _choice(group: str, fallback: object) -> str:
    """The option the user chose for a group (from Hydra's record), else the value."""
    from hydra.core.hydra_config import HydraConfig

    if HydraConfig.initialized():
        choice = HydraConfig.get().runtime.choices.get(group)
        if choice:
            return str(choice)
    return str(fallback)


def _options(conf_dir: Path, group: str, keep) -> list[str]:
    """Options of a config group whose file (with its defaults) satisfies `keep`."""
    names = []
    for path in sorted((conf_dir / group).glob("*.yaml")):
        if keep(_resolved_group_file(path)):
            names.append(path.stem)
    return names


def _resolved_group_file(path: Path) -> DictConfig:
    """A group file merged over the same-group files its defaults list names."""
    cfg = OmegaConf.load(path)
    base = OmegaConf.create()
    for entry in cfg.get("defaults") or []:
        if isinstance(entry, str) and entry != "_self_":
            base = OmegaConf.merge(base, _resolved_group_file(path.with_name(f"{entry}.yaml")))
    cfg.pop("defaults", None)
    return OmegaConf.merge(base, cfg)
