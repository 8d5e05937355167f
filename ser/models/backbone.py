"""Self-supervised speech backbones (wav2vec2 family) from a local folder, the HF cache or the hub.

`name_or_path` is a hub id (`ntu-spml/distilhubert`, `facebook/wav2vec2-base`, ...) or a
folder written by `save_pretrained`. With `pretrained=False` only the architecture's config
is read and the weights are random; for the hub ids the project names, that config is also
built in, so random-init runs need no network at all.

Nothing here downloads unless the hub answers: a hub id that is neither a folder nor in the
local HF cache, with the hub unreachable, stops with `BackboneUnavailableError`, whose
message names the two ways out instead of a stack of HTTP errors.
"""

from __future__ import annotations

import logging
import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch
from torch import nn
from transformers import (
    AutoConfig,
    AutoFeatureExtractor,
    AutoModel,
    AutoModelForAudioClassification,
    PretrainedConfig,
    PreTrainedModel,
    Wav2Vec2FeatureExtractor,
)

log = logging.getLogger(__name__)

# Architectures of the hub ids the project's recipes name, for `pretrained=false` offline:
# (model_type, changes to that type's default config). The sizes are the checkpoints' own.
KNOWN_ARCHITECTURES: dict[str, tuple[str, dict[str, Any]]] = {
    "ntu-spml/distilhubert": ("hubert", {"num_hidden_layers": 2, "conv_bias": False}),
    "facebook/hubert-base-ls960": ("hubert", {}),
    "facebook/wav2vec2-base": ("wav2vec2", {}),
}


class BackboneUnavailableError(RuntimeError):
    """A backbone that can't be loaded here; the message says what to do instead."""


@dataclass(frozen=True)
class InputSpec:
    """How waveforms are prepared for a backbone: its feature extractor's settings.

    `attention_mask` says whether the backbone itself is given the padding mask; models
    whose first conv layer uses group norm (wav2vec2-base, HuBERT-base) were trained
    without one, and their extractors say so. Pooling always honours the mask.
    """

    sampling_rate: int = 16000
    do_normalize: bool = True
    attention_mask: bool = False

    def feature_extractor(self) -> Wav2Vec2FeatureExtractor:
        return Wav2Vec2FeatureExtractor(
            feature_size=1, sampling_rate=self.sampling_rate, padding_value=0.0,
            do_normalize=self.do_normalize, return_attention_mask=self.attention_mask,
        )


def is_local(name_or_path: str) -> bool:
    return Path(name_or_path).expanduser().is_dir()


def hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the HF endpoint answers a TCP connect (fails fast where there is no network)."""
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return False
    url = urlparse(os.environ.get("HF_ENDPOINT", constants.ENDPOINT))
    try:
        with socket.create_connection((url.hostname or "", url.port or 443), timeout=timeout):
            return True
    except OSError:
        return False


def _unavailable(name: str, pretrained: bool, why: str) -> BackboneUnavailableError:
    options = [
        f"  - download it where there is network (`hf download {name} --local-dir DIR`) and "
        "set model.net.backbone.name_or_path=DIR (a folder written by save_pretrained)",
    ]
    if pretrained:
        options.append(
            "  - or set model.net.backbone.pretrained=false to train the same architecture "
            "from random weights (known offline: " + ", ".join(sorted(KNOWN_ARCHITECTURES))
            + "); such runs are not comparable with pretrained ones"
        )
    return BackboneUnavailableError(
        f"cannot load backbone {name!r}: {why}.\nOptions:\n" + "\n".join(options)
    )


def _from_hub(loader: Any, name: str, pretrained: bool, **kwargs: Any) -> Any:
    """`loader(name)` from a folder or the local cache, else from the hub if it answers."""
    if is_local(name):
        return loader(str(Path(name).expanduser()), **kwargs)
    try:
        return loader(name, local_files_only=True, **kwargs)
    except (OSError, ValueError):
        pass
    if not hub_reachable():
        raise _unavailable(name, pretrained, "not a local folder, not in the local Hugging "
                           "Face cache, and the hub can't be reached from here")
    try:
        return loader(name, **kwargs)
    except (OSError, ValueError) as err:  # HF wraps HTTP and repo errors in OSError
        raise _unavailable(name, pretrained,
                           f"the hub refused it ({str(err).splitlines()[0]})") from None


def load_config(name_or_path: str, pretrained: bool, **overrides: Any) -> PretrainedConfig:
    """The backbone's config with `overrides`; built in for known ids when pretrained=False."""
    if not pretrained and not is_local(name_or_path) and name_or_path in KNOWN_ARCHITECTURES:
        model_type, changes = KNOWN_ARCHITECTURES[name_or_path]
        try:  # the real file, if it is cached; else the built-in description
            config = AutoConfig.from_pretrained(name_or_path, local_files_only=True)
        except (OSError, ValueError):
            config = AutoConfig.for_model(model_type, **changes)
            log.info("backbone %s: built-in %s architecture, random weights", name_or_path,
                     model_type)
    else:
        config = _from_hub(AutoConfig.from_pretrained, name_or_path, pretrained)
    for key, value in overrides.items():
        if not hasattr(config, key):
            raise ValueError(f"backbone config {config.model_type!r} has no field {key!r}")
        setattr(config, key, value)
    return config


def load_input_spec(name_or_path: str, config: PretrainedConfig) -> InputSpec:
    """The checkpoint's own feature-extractor settings, or the usual ones for its config.

    Without a preprocessor_config.json the wav2vec2 convention applies: normalise, and
    pass the attention mask only to models with layer-norm conv features.
    """
    default = InputSpec(attention_mask=getattr(config, "feat_extract_norm", "group") == "layer")
    try:
        fe = AutoFeatureExtractor.from_pretrained(
            str(Path(name_or_path).expanduser()) if is_local(name_or_path) else name_or_path,
            local_files_only=True,
        )
    except (OSError, ValueError):
        log.info("backbone %s: no feature-extractor settings found; using %s", name_or_path,
                 default)
        return default
    return InputSpec(
        sampling_rate=int(fe.sampling_rate),
        do_normalize=bool(getattr(fe, "do_normalize", True)),
        attention_mask=bool(getattr(fe, "return_attention_mask", default.attention_mask)),
    )


def load_backbone(
    name_or_path: str,
    pretrained: bool = True,
    head: bool = False,
    config: dict[str, Any] | None = None,
    **model_kwargs: Any,
) -> tuple[PreTrainedModel, InputSpec]:
    """The model (`head`: with its audio-classification head) and its input settings.

    `config` holds changes to the backbone's config (dropouts, layerdrop, ...);
    `model_kwargs` go to the head's config (num_labels, id2label, ...).
    """
    cfg = load_config(name_or_path, pretrained, **dict(config or {}), **model_kwargs)
    auto = AutoModelForAudioClassification if head else AutoModel
    if pretrained:
        # a base checkpoint has no classifier weights: those start random (and say so)
        extra = {"ignore_mismatched_sizes": True} if head else {}  # a head for other labels
        model = _from_hub(auto.from_pretrained, name_or_path, pretrained, config=cfg, **extra)
    else:
        model = auto.from_config(cfg)
    return model, load_input_spec(name_or_path, cfg)


def model_from_config(config: dict[str, Any], head: bool) -> PreTrainedModel:
    """Rebuild a model (random weights) from `config.to_dict()`, e.g. to load a checkpoint."""
    cfg = dict(config)
    cfg = AutoConfig.for_model(cfg.pop("model_type"), **cfg)
    return (AutoModelForAudioClassification if head else AutoModel).from_config(cfg)


# -- shared tensor helpers ---------------------------------------------------------------


def normalise(waves: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Zero mean, unit variance over each clip's own samples; padding stays 0.

    The same arithmetic as Wav2Vec2FeatureExtractor(do_normalize=True) with a mask.
    """
    mask = sample_mask(lengths, waves.shape[1]).to(waves.dtype)
    n = lengths.clamp(min=1).to(waves.dtype)[:, None]
    mean = (waves * mask).sum(1, keepdim=True) / n
    var = (((waves - mean) * mask) ** 2).sum(1, keepdim=True) / n
    return (waves - mean) / torch.sqrt(var + 1e-7) * mask


def sample_mask(lengths: torch.Tensor, size: int) -> torch.Tensor:
    """(B, size) bool: True on each row's first `lengths[b]` positions."""
    return torch.arange(size, device=lengths.device)[None, :] < lengths[:, None]


def frame_lengths(model: PreTrainedModel, lengths: torch.Tensor) -> torch.Tensor:
    """Frames of the conv feature encoder for clips of `lengths` samples."""
    base = model.base_model if hasattr(model, "base_model") else model
    return base._get_feat_extract_output_lengths(lengths).to(torch.long)


def masked_mean(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over time of (B, T, H) where `mask` (B, T) is True."""
    m = mask.to(hidden.dtype)[..., None]
    return (hidden * m).sum(1) / m.sum(1).clamp(min=1.0)


def freeze(module: nn.Module) -> None:
    for p in module.parameters():
        p.requires_grad_(False)


def weights_digest(module: nn.Module) -> str:
    """A content hash of a module's weights (keys a cache to exactly these weights)."""
    import hashlib

    h = hashlib.blake2b(digest_size=16)
    for name, tensor in sorted(module.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()
