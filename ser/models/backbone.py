"""Speech backbones (wav2vec2 family, Whisper) from a local folder, the HF cache or the hub.

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
import types
from collections import OrderedDict
from collections.abc import Hashable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch
from torch import nn
from torch.nn import functional as F
from transformers import (
    AutoConfig,
    AutoFeatureExtractor,
    AutoModel,
    AutoModelForAudioClassification,
    PretrainedConfig,
    PreTrainedModel,
    Wav2Vec2FeatureExtractor,
)

from ser.models.masks import sample_mask

log = logging.getLogger(__name__)

# Architectures of the hub ids the project's recipes name, for `pretrained=false` offline:
# (model_type, changes to that type's default config). The sizes are the checkpoints' own
# (the EmoBox rows' from their published sizes, not checked against the hub's files here).
# The large checkpoints' sizes; those with layer-norm conv features take the padding mask
# (data2vec-audio has no such switch: its conv features are always layer-normed).
_LARGE = {"hidden_size": 1024, "num_hidden_layers": 24, "num_attention_heads": 16,
          "intermediate_size": 4096}
_LARGE_LN = {**_LARGE, "feat_extract_norm": "layer", "do_stable_layer_norm": True}


def _whisper(d_model: int, layers: int, heads: int, n_mels: int = 80) -> tuple[str, dict]:
    return ("whisper", {"d_model": d_model, "encoder_layers": layers, "decoder_layers": layers,
                        "encoder_attention_heads": heads, "decoder_attention_heads": heads,
                        "encoder_ffn_dim": 4 * d_model, "decoder_ffn_dim": 4 * d_model,
                        "num_mel_bins": n_mels})


KNOWN_ARCHITECTURES: dict[str, tuple[str, dict[str, Any]]] = {
    "ntu-spml/distilhubert": ("hubert", {"num_hidden_layers": 2, "conv_bias": False}),
    "facebook/hubert-base-ls960": ("hubert", {}),
    "facebook/hubert-large-ll60k": ("hubert", _LARGE_LN),
    "facebook/wav2vec2-base": ("wav2vec2", {}),
    "facebook/wav2vec2-large": ("wav2vec2", _LARGE),
    "microsoft/wavlm-base": ("wavlm", {}),
    "microsoft/wavlm-base-plus": ("wavlm", {}),
    "microsoft/wavlm-large": ("wavlm", _LARGE_LN),
    "facebook/data2vec-audio-base": ("data2vec-audio", {}),
    "facebook/data2vec-audio-large": ("data2vec-audio", _LARGE),
    "openai/whisper-base": _whisper(512, 6, 8),
    "openai/whisper-small": _whisper(768, 12, 12),
    "openai/whisper-medium": _whisper(1024, 24, 16),
    "openai/whisper-large-v3": _whisper(1280, 32, 20, n_mels=128),
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


@dataclass(frozen=True)
class MelSpec:
    """Whisper's log-mel input: its WhisperFeatureExtractor's settings."""

    sampling_rate: int = 16000
    n_mels: int = 80
    n_fft: int = 400
    hop_length: int = 160


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


def _local_feature_extractor(name_or_path: str, default: Any) -> Any:
    """The checkpoint's own feature extractor from its folder or the local cache, or None
    (logged, with the `default` settings the caller will use instead)."""
    try:
        return AutoFeatureExtractor.from_pretrained(
            str(Path(name_or_path).expanduser()) if is_local(name_or_path) else name_or_path,
            local_files_only=True,
        )
    except (OSError, ValueError):
        log.info("backbone %s: no feature-extractor settings found; using %s", name_or_path,
                 default)
        return None


def load_input_spec(name_or_path: str, config: PretrainedConfig) -> InputSpec:
    """The checkpoint's own feature-extractor settings, or the usual ones for its config.

    Without a preprocessor_config.json the wav2vec2 convention applies: normalise, and
    pass the attention mask only to models with layer-norm conv features.
    """
    default = InputSpec(attention_mask=getattr(config, "feat_extract_norm", "group") == "layer")
    fe = _local_feature_extractor(name_or_path, default)
    if fe is None:
        return default
    return InputSpec(
        sampling_rate=int(fe.sampling_rate),
        do_normalize=bool(getattr(fe, "do_normalize", True)),
        attention_mask=bool(getattr(fe, "return_attention_mask", default.attention_mask)),
    )


def load_mel_spec(name_or_path: str, config: PretrainedConfig) -> MelSpec:
    """A Whisper checkpoint's log-mel settings; without a preprocessor_config.json, the
    extractor's defaults with the model's own number of mel bins."""
    default = MelSpec(n_mels=int(config.num_mel_bins))
    fe = _local_feature_extractor(name_or_path, default)
    if fe is None:
        return default
    spec = MelSpec(sampling_rate=int(fe.sampling_rate), n_mels=int(fe.feature_size),
                   n_fft=int(fe.n_fft), hop_length=int(fe.hop_length))
    if spec.n_mels != default.n_mels:
        raise ValueError(f"backbone {name_or_path!r}: its feature extractor makes "
                         f"{spec.n_mels} mel bins, the model takes {default.n_mels}")
    return spec


def load_backbone(
    name_or_path: str,
    pretrained: bool = True,
    head: bool = False,
    config: dict[str, Any] | None = None,
    attn_implementation: str | None = None,
    **model_kwargs: Any,
) -> tuple[PreTrainedModel, InputSpec]:
    """The model (`head`: with its audio-classification head) and its input settings.

    `config` holds changes to the backbone's config (dropouts, layerdrop, ...);
    `model_kwargs` go to the head's config (num_labels, id2label, ...).
    `attn_implementation` ("sdpa", "eager", ...; None: transformers' default, which is
    "sdpa" for the wav2vec2 family) picks the attention kernel; it is not saved in the
    config, so callers that rebuild the model keep it themselves.
    """
    cfg = load_config(name_or_path, pretrained, **dict(config or {}), **model_kwargs)
    auto = AutoModelForAudioClassification if head else AutoModel
    attn = {"attn_implementation": attn_implementation} if attn_implementation else {}
    if pretrained:
        # a base checkpoint has no classifier weights: those start random (and say so)
        extra = {"ignore_mismatched_sizes": True} if head else {}  # a head for other labels
        model = _from_hub(auto.from_pretrained, name_or_path, pretrained, config=cfg,
                          **extra, **attn)
    else:
        model = auto.from_config(cfg, **attn)
    return model, load_input_spec(name_or_path, cfg)


def model_from_config(
    config: dict[str, Any], head: bool, attn_implementation: str | None = None
) -> PreTrainedModel:
    """Rebuild a model (random weights) from `config.to_dict()`, e.g. to load a checkpoint."""
    cfg = dict(config)
    cfg = AutoConfig.for_model(cfg.pop("model_type"), **cfg)
    attn = {"attn_implementation": attn_implementation} if attn_implementation else {}
    return (AutoModelForAudioClassification if head else AutoModel).from_config(cfg, **attn)


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


def frame_lengths(model: PreTrainedModel, lengths: torch.Tensor) -> torch.Tensor:
    """Frames of the conv feature encoder for clips of `lengths` samples."""
    base = model.base_model if hasattr(model, "base_model") else model
    return base._get_feat_extract_output_lengths(lengths).to(torch.long)


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


# -- fine-tuning speed: each the same function as transformers' own, within tolerance ------

POS_CONV_IMPLS = ("native", "channels_last", "matmul")


def grouped_conv1d(
    x: torch.Tensor, conv: nn.Conv1d, impl: str = "native"
) -> torch.Tensor:
    """`conv(x)` for x (B, C, T), computed by one of three equivalent kernels.

    "channels_last" runs it as a 2-D conv on a (B, C, 1, T) NHWC view: x usually is the
    transpose of a (B, T, C) tensor, so that view needs no copy, and cuDNN has faster
    bf16 kernels for NHWC grouped convs. "matmul" unfolds the windows and does one batched
    matmul per group (more memory: B*T*C*K elements, kept for the backward).
    """
    weight, bias = conv.weight, conv.bias  # weight-norm parametrisation evaluated once
    (pad,), groups = conv.padding, conv.groups
    if impl == "native":
        return F.conv1d(x, weight, bias, padding=pad, groups=groups)
    if impl == "channels_last":
        x4 = x.unsqueeze(2).contiguous(memory_format=torch.channels_last)
        w4 = weight.unsqueeze(2).contiguous(memory_format=torch.channels_last)
        return F.conv2d(x4, w4, bias, padding=(0, pad), groups=groups).squeeze(2)
    if impl == "matmul":
        return _grouped_conv1d_matmul(x, weight, bias, pad, groups)
    raise ValueError(f"pos_conv must be one of {POS_CONV_IMPLS}, got {impl!r}")


def _grouped_conv1d_matmul(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, pad: int, groups: int
) -> torch.Tensor:
    if torch.is_autocast_enabled(x.device.type):  # unfold in the matmul's dtype: half the bytes
        x = x.to(torch.get_autocast_dtype(x.device.type))
    b, c, _ = x.shape
    c_out, cg, k = weight.shape
    cols = F.pad(x, (pad, pad)).unfold(2, k, 1)  # (B, C, T', K), a view
    t = cols.shape[2]
    cols = cols.reshape(b, groups, cg, t, k).permute(1, 0, 3, 2, 4).reshape(groups, b * t, cg * k)
    w = weight.reshape(groups, c_out // groups, cg * k).transpose(1, 2)
    y = torch.bmm(cols, w.to(cols.dtype))  # (G, B*T', C_out/G)
    y = y.reshape(groups, b, t, -1).permute(1, 0, 3, 2).reshape(b, c_out, t)
    return y if bias is None else y + bias.to(y.dtype)[:, None]


def _pos_conv_forward(self: nn.Module, hidden_states: torch.Tensor) -> torch.Tensor:
    """transformers' *PositionalConvEmbedding.forward, with the conv by `grouped_conv1d`."""
    x = hidden_states.transpose(1, 2)
    if getattr(self, "batch_norm", None) is not None:
        x = self.batch_norm(x)
    x = self.activation(self.padding(grouped_conv1d(x, self.conv, self._ser_pos_conv)))
    return x.transpose(1, 2)


def set_pos_conv(model: PreTrainedModel, impl: str) -> None:
    """Pick the kernel of the encoder's positional conv; "native" is transformers' own.

    Replaces only the module's forward (weights and state-dict keys stay as they are).
    """
    if impl not in POS_CONV_IMPLS:
        raise ValueError(f"pos_conv must be one of {POS_CONV_IMPLS}, got {impl!r}")
    pos = model.base_model.encoder.pos_conv_embed
    pos.__dict__.pop("forward", None)
    if impl != "native":
        pos._ser_pos_conv = impl
        pos.forward = types.MethodType(_pos_conv_forward, pos)


@contextmanager
def given_features(feature_encoder: nn.Module, features: torch.Tensor) -> Iterator[None]:
    """Within the block the conv feature encoder returns `features` instead of running.

    So the base model's own forward (masks, SpecAugment, hidden-state capture) runs on
    features computed (or cached) outside it.
    """
    feature_encoder.forward = lambda *args, **kwargs: features
    try:
        yield
    finally:
        del feature_encoder.forward


class FeatureCache:
    """A bounded LRU of frozen conv-encoder outputs, on whichever device they were made.

    Keys are whatever the caller makes unique to the value (clip, padded length, dtype).
    Values over `max_bytes` on their own are not kept.
    """

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = int(max_bytes)
        self.bytes = 0
        self.hits = 0
        self.misses = 0
        self._store: OrderedDict[Hashable, torch.Tensor] = OrderedDict()

    def __len__(self) -> int:
        return len(self._store)

    def get(self, key: Hashable) -> torch.Tensor | None:
        value = self._store.get(key)
        if value is None:
            self.misses += 1
            return None
        self._store.move_to_end(key)
        self.hits += 1
        return value

    def put(self, key: Hashable, value: torch.Tensor) -> None:
        size = value.numel() * value.element_size()
        if size > self.max_bytes:
            return
        old = self._store.pop(key, None)
        if old is not None:
            self.bytes -= old.numel() * old.element_size()
        self._store[key] = value
        self.bytes += size
        while self.bytes > self.max_bytes:
            _, evicted = self._store.popitem(last=False)
            self.bytes -= evicted.numel() * evicted.element_size()

    def clear(self) -> None:
        self._store.clear()
        self.bytes = 0
