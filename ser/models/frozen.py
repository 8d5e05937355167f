"""Frozen speech encoders, their hidden states cached on disk per clip, and a trained head.

One mechanism for three families (ser.models.FAMILIES), differing in two swappable parts:

- the encoder: a wav2vec2-family `AutoModel` on 16 kHz waveforms (wav2vec2, HuBERT, WavLM,
  data2vec-audio: `WaveformEncoder`), or Whisper's encoder on its own log-mel features
  (`WhisperMelEncoder`);
- the head: the seed's CNN (`CNNHead`) or EmoBox's light head (`LightHead`).

`wav2vec2_cnn` is the seed's model (waveform encoder, CNN head); `ssl_frozen` and
`whisper_frozen` are EmoBox's frozen-encoder benchmark (waveform or Whisper encoder, light
head). The cache, the per-clip logic, the layer selection and the checkpoint meta are shared.

Hidden states of one layer (or of all, for a learned weighted sum) are cached on disk per
clip under `cache_dir/<backbone, weights, layer, input settings>/<audio sha1>.npy`, so
later epochs and runs never run the encoder on a clip twice. An encoder that takes no
padding mask sees each clip alone, at its own length, so a clip's value never depends on
what it was batched with; both heads pool over the clip's own frames only.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F
from transformers import AutoConfig, PreTrainedModel

from ser.cache import ArrayCache
from ser.models.backbone import (
    InputSpec,
    MelSpec,
    frame_lengths,
    freeze,
    load_backbone,
    load_mel_spec,
    model_from_config,
    normalise,
    weights_digest,
)
from ser.models.masks import masked_mean, sample_mask

log = logging.getLogger(__name__)

CACHE_FORMAT = 1  # bump whenever cached values change meaning

# (all hidden states, the last one, frames per clip) for a batch
Encoded = tuple[Sequence[torch.Tensor], torch.Tensor, torch.Tensor]


# --- heads -------------------------------------------------------------------------------


def _layer_sum(weights: nn.Parameter | None, hidden: torch.Tensor) -> torch.Tensor:
    """(B, L, T, H) -> (B, T, H) by the softmax of `weights`; (B, T, H) passes through."""
    if weights is None:
        return hidden
    w = torch.softmax(weights, dim=0).to(hidden.dtype)
    return (hidden * w.view(1, -1, 1, 1)).sum(dim=1)


class CNNHead(nn.Module):
    """The seed's head: (hidden (B, T, H) or (B, L, T, H) with `n_layers`, frames (B,)) -> logits.

    Conv1d(hidden->128) -> max-pool -> dropout -> Conv1d(128->256) -> average pool ->
    Linear(256->classes), with ReLU after each conv. Every step honours the clip's real
    length (padding is zeroed before each conv, pooling windows that touch padding are
    dropped), so padding a clip does not change its prediction.
    """

    def __init__(
        self,
        hidden: int,
        n_classes: int,
        channels: Sequence[int] = (128, 256),
        kernel: int = 3,
        pool: int = 2,
        dropout: float = 0.1,
        n_layers: int | None = None,
    ) -> None:
        super().__init__()
        c1, c2 = channels
        # uniform at the start (softmax of zeros); only with a stack of all layers
        self.layer_weights = nn.Parameter(torch.zeros(n_layers)) if n_layers else None
        self.conv1 = nn.Conv1d(hidden, c1, kernel, padding=kernel // 2)
        self.pool = pool
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv1d(c1, c2, kernel, padding=kernel // 2)
        self.out = nn.Linear(c2, n_classes)

    def forward(self, hidden: torch.Tensor, frames: torch.Tensor) -> torch.Tensor:
        hidden = _layer_sum(self.layer_weights, hidden)
        mask = sample_mask(frames, hidden.shape[1])[:, None, :]  # (B, 1, T)
        x = hidden.transpose(1, 2) * mask  # zeros beyond the clip = the conv's own padding
        x = F.relu(self.conv1(x)) * mask
        # max_pool1d(x, pool) as a reshape (same values; exports with a dynamic length);
        # a window with any padding is dropped just below
        t = x.shape[-1] // self.pool
        x = x[..., : t * self.pool].unflatten(-1, (t, self.pool)).amax(dim=-1)
        pooled = frames // self.pool
        mask = sample_mask(pooled, x.shape[-1])[:, None, :]
        x = F.relu(self.conv2(self.dropout(x) * mask))
        return self.out(masked_mean(x.transpose(1, 2), mask[:, 0]))


class LightHead(nn.Module):
    """EmoBox's downstream model: Linear(hidden->size) -> ReLU -> mean over the clip's frames
    -> Linear(size->classes), on the last layer or a learned weighted sum of all."""

    def __init__(
        self, hidden: int, n_classes: int, hidden_size: int = 256, n_layers: int | None = None
    ) -> None:
        super().__init__()
        self.layer_weights = nn.Parameter(torch.zeros(n_layers)) if n_layers else None
        self.pre = nn.Linear(hidden, hidden_size)
        self.post = nn.Linear(hidden_size, n_classes)

    def forward(self, hidden: torch.Tensor, frames: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.pre(_layer_sum(self.layer_weights, hidden)))
        return self.post(masked_mean(x, sample_mask(frames, x.shape[1])))


HEADS: dict[str, type[nn.Module]] = {"cnn": CNNHead, "light": LightHead}


# --- encoders ------------------------------------------------------------------------------


class WaveformEncoder:
    """A wav2vec2-family `AutoModel` on 16 kHz waveforms, prepared as its extractor says."""

    name = "waveform"

    def __init__(self, inputs: InputSpec) -> None:
        self.inputs = inputs

    @property
    def takes_mask(self) -> bool:
        return self.inputs.attention_mask

    def __call__(self, backbone: nn.Module, waves: torch.Tensor, lengths: torch.Tensor) -> Encoded:
        x = normalise(waves, lengths) if self.inputs.do_normalize else waves
        mask = sample_mask(lengths, x.shape[1]).long() if self.inputs.attention_mask else None
        out = backbone(x, attention_mask=mask, output_hidden_states=True)
        return out.hidden_states, out.last_hidden_state, frame_lengths(backbone, lengths)

    @staticmethod
    def load(name: str, pretrained: bool, config: dict | None) -> tuple[nn.Module, InputSpec]:
        model, inputs = load_backbone(name, pretrained, head=False, config=config)
        if model.config.model_type == "whisper":
            raise ValueError(f"backbone {name!r} is a Whisper model: use model=whisper_frozen")
        return model, inputs

    @staticmethod
    def rebuild(config: dict[str, Any], inputs: dict[str, Any]) -> tuple[nn.Module, InputSpec]:
        return model_from_config(config, head=False), InputSpec(**inputs)


class WhisperMelEncoder:
    """Whisper's encoder on the log-mel features of its own feature extractor.

    transformers' `WhisperEncoder.forward` takes only 30 s inputs (3000 mel frames), so a
    4 s clip would cost a 30 s forward. Here the encoder's own submodules run each clip at
    its own length: the log-mel of the clip alone (the extractor's arithmetic; padding
    never enters its per-clip maximum), the two convs, the positional embeddings sliced
    to the clip's frames, the layers, the final layer norm. A clip's result therefore
    depends on nothing but the clip.

    This differs from the clip's frames of a 30 s-padded forward (what EmoBox ran), where
    every frame also attends to the padding's frames, so the values are not EmoBox's
    exactly; on a whole 30 s window the two are the same computation (tested). Chosen
    because the cost is the clip's, not 30 s's (a 3-5 s RAVDESS clip: 150-265 frames
    instead of 1500, and attention is quadratic in them), and because nothing outside
    the clip then shapes its value. The price: the encoder sees inputs shorter than the
    30 s windows it was trained on.
    """

    name = "whisper"
    takes_mask = False  # every clip runs alone, at its own length

    def __init__(self, inputs: MelSpec) -> None:
        from transformers import WhisperFeatureExtractor

        self.inputs = inputs
        extractor = WhisperFeatureExtractor(
            feature_size=inputs.n_mels, sampling_rate=inputs.sampling_rate,
            hop_length=inputs.hop_length, n_fft=inputs.n_fft)
        self._filters = torch.from_numpy(extractor.mel_filters).float()  # (freqs, mels)

    def log_mel(self, waves: torch.Tensor) -> torch.Tensor:
        """(B, N) clips of N samples each -> (B, mels, N // hop), as WhisperFeatureExtractor."""
        n_fft, hop = self.inputs.n_fft, self.inputs.hop_length
        window = torch.hann_window(n_fft, device=waves.device)
        stft = torch.stft(waves.float(), n_fft, hop, window=window, return_complex=True)
        power = stft[..., :-1].abs() ** 2
        mel = self._filters.to(waves.device).T @ power
        log_spec = torch.clamp(mel, min=1e-10).log10()
        peak = log_spec.amax(dim=(1, 2), keepdim=True)  # each clip's own maximum
        return (torch.maximum(log_spec, peak - 8.0) + 4.0) / 4.0

    def frames(self, lengths: torch.Tensor) -> torch.Tensor:
        """Encoder frames of clips of `lengths` samples: mel frames, halved by conv2."""
        return (lengths // self.inputs.hop_length - 1) // 2 + 1

    def __call__(self, encoder: nn.Module, waves: torch.Tensor, lengths: torch.Tensor) -> Encoded:
        x = F.gelu(encoder.conv1(self.log_mel(waves)))
        x = F.gelu(encoder.conv2(x)).transpose(1, 2)  # (B, T, H)
        if not torch.compiler.is_compiling():  # an export's windows share one length
            _check_whole(x.shape[1], encoder.embed_positions.num_embeddings, waves, lengths)
        hidden = x + encoder.embed_positions.weight[: x.shape[1]]
        states = [hidden]
        for layer in encoder.layers:
            hidden = layer(hidden, None)
            states.append(hidden)
        # as transformers' own hidden_states: the last entry after the final layer norm
        states[-1] = last = encoder.layer_norm(hidden)
        return states, last, self.frames(lengths)

    @staticmethod
    def load(name: str, pretrained: bool, config: dict | None) -> tuple[nn.Module, MelSpec]:
        # the audio-classification model holds the encoder alone (no decoder weights)
        model, _ = load_backbone(name, pretrained, head=True, config=config)
        if model.config.model_type != "whisper":
            raise ValueError(f"backbone {name!r} is a {model.config.model_type} model, not "
                             "Whisper: use model=ssl_frozen")
        return model.encoder, load_mel_spec(name, model.config)

    @staticmethod
    def rebuild(config: dict[str, Any], inputs: dict[str, Any]) -> tuple[nn.Module, MelSpec]:
        from transformers.models.whisper.modeling_whisper import WhisperEncoder

        cfg = dict(config)
        return WhisperEncoder(AutoConfig.for_model(cfg.pop("model_type"), **cfg)), MelSpec(**inputs)


def _check_whole(frames: int, limit: int, waves: torch.Tensor, lengths: torch.Tensor) -> None:
    if bool((lengths != waves.shape[1]).any()):
        raise ValueError("the Whisper encoder runs clips alone: no padded batches")
    if frames > limit:
        raise ValueError(f"a clip of {frames} Whisper frames is longer than the encoder's "
                         f"{limit} (30 s); cut it into windows")


ENCODERS: dict[str, type] = {"waveform": WaveformEncoder, "whisper": WhisperMelEncoder}


# --- the model -------------------------------------------------------------------------------


class FrozenBackbone(nn.Module):
    """(waves (B, N), lengths (B,), keys) -> logits; only the head is trained.

    `layer` indexes the encoder's hidden states (0: the embeddings fed to the first
    layer, -1: the last layer, after the final layer norm where the model has one) or is
    "weighted" for a learned softmax-weighted sum of all. `kind` is the family name the
    checkpoint records.
    """

    def __init__(
        self,
        backbone: PreTrainedModel,
        encoder: WaveformEncoder | WhisperMelEncoder,
        head: nn.Module,
        layer: int | str = -1,
        head_cfg: dict | None = None,
        cache_dir: str | Path | None = None,
        cache_dtype: str = "float16",
        source: dict | None = None,
        kind: str = "wav2vec2_cnn",
        head_type: str = "cnn",
    ) -> None:
        super().__init__()
        if layer != "weighted" and not isinstance(layer, int):
            raise ValueError(f"layer must be an int or 'weighted', got {layer!r}")
        freeze(backbone)
        self.backbone = backbone.eval()
        self.encoder = encoder
        self.head = head
        self.layer = layer
        self.head_cfg = dict(head_cfg or {})
        self.cache_dir = Path(cache_dir) if cache_dir else None
        self.cache_dtype = np.dtype(cache_dtype)
        self.source = dict(source or {})
        self.kind = kind
        self.head_type = head_type
        self._cache: ArrayCache | None = None

    @property
    def inputs(self) -> InputSpec | MelSpec:
        """How the encoder prepares its input (the checkpoint records it)."""
        return self.encoder.inputs

    def train(self, mode: bool = True) -> FrozenBackbone:
        super().train(mode)
        self.backbone.eval()  # frozen: no dropout, and the cached values stay valid
        return self

    # --- encoder ---------------------------------------------------------------------------
    def hidden_states(
        self, waves: torch.Tensor, lengths: torch.Tensor
    ) -> list[torch.Tensor]:
        """Per clip, the selected hidden states over its real frames: (T, H) or (L, T, H).

        Encoders that take no padding mask see each clip alone, at its own length, so a
        clip's value never depends on what it was batched with. Always float32.
        """
        device_type = waves.device.type
        with torch.no_grad(), torch.autocast(device_type, enabled=False):
            if self.encoder.takes_mask:
                return self._run(waves.float(), lengths)
            return [self._run(waves[i : i + 1, : int(n)].float(), lengths[i : i + 1])[0]
                    for i, n in enumerate(lengths)]

    def _run(self, waves: torch.Tensor, lengths: torch.Tensor) -> list[torch.Tensor]:
        picked, frames = self._picked(waves, lengths)
        return [picked[i, ..., : int(t), :] for i, t in enumerate(frames)]

    def _picked(
        self, waves: torch.Tensor, lengths: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The configured layer(s), (B, T, H) or (B, L, T, H), and frames per clip."""
        states, last, frames = self.encoder(self.backbone, waves, lengths)
        if self.layer == "weighted":
            return torch.stack(tuple(states), dim=1), frames
        if self.layer == -1:  # after the final layer norm of pre-LN (large) models too
            return last, frames
        return states[self.layer], frames

    def _traced_forward(self, waves: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """The graph an export records: the whole batch through the backbone at once, no
        cache. Serving scores windows of one length together, so no window sees another's
        padding; values pass through the cache dtype, as the head saw them in training."""
        picked, frames = self._picked(waves.float(), lengths)
        dtype = getattr(torch, self.cache_dtype.name)
        return self.head(picked.to(dtype).float(), frames)

    @property
    def cache(self) -> ArrayCache | None:
        """Created on first use: the key hashes the weights, which a checkpoint may set."""
        if self.cache_dir is not None and self._cache is None:
            identity = {
                "format": CACHE_FORMAT,
                "backbone": self.source.get("name_or_path"),
                "weights": weights_digest(self.backbone),
                "layer": self.layer,
                "inputs": asdict(self.inputs),
                "dtype": self.cache_dtype.name,
            }
            if self.encoder.name != "waveform":  # waveform keys as before: old caches stay
                identity["encoder"] = self.encoder.name
            name = f"{self.source.get('name_or_path', 'backbone')}-layer{self.layer}"
            self._cache = ArrayCache(self.cache_dir, name, identity, dtype=self.cache_dtype)
        return self._cache

    def features(
        self, waves: torch.Tensor, lengths: torch.Tensor, keys: Sequence[str | None] | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Padded hidden states and their frame counts, from the cache where possible.

        Every value goes through the cache's dtype, so a cached and a fresh batch give the
        head exactly the same input.
        """
        keys = list(keys) if keys is not None else [None] * len(waves)
        cache = self.cache
        values: list[np.ndarray | None] = [
            cache.load(k) if cache is not None and k else None for k in keys
        ]
        missing = [i for i, v in enumerate(values) if v is None]
        if missing:
            fresh = self.hidden_states(waves[missing], lengths[missing])
            for i, h in zip(missing, fresh, strict=True):
                values[i] = h.cpu().numpy().astype(self.cache_dtype)
                if cache is not None and keys[i]:
                    cache.save(keys[i], values[i])
        return _pad_time(values, waves.device)

    def forward(
        self,
        waves: torch.Tensor,
        lengths: torch.Tensor,
        keys: Sequence[str | None] | None = None,
    ) -> torch.Tensor:
        if torch.compiler.is_compiling():  # export traces one tensor graph
            return self._traced_forward(waves, lengths)
        hidden, frames = self.features(waves, lengths, keys)
        return self.head(hidden, frames)

    # --- what a checkpoint needs ----------------------------------------------------------
    def meta(self) -> dict[str, Any]:
        return {
            "type": self.kind,
            "encoder": self.encoder.name,
            "head_type": self.head_type,
            "config": self.backbone.config.to_dict(),
            "inputs": asdict(self.inputs),
            "layer": self.layer,
            "head": self.head_cfg,
            "cache_dtype": self.cache_dtype.name,
            "source": self.source,
        }

    @classmethod
    def from_meta(cls, meta: dict[str, Any]) -> FrozenBackbone:
        """The network with random weights and no cache, ready for a state dict.

        Checkpoints made before the encoder and head were swappable (`wav2vec2_cnn` only)
        lack `encoder` and `head_type`: the waveform encoder and the CNN head.
        """
        encoder_cls = ENCODERS[meta.get("encoder", "waveform")]
        head_type = meta.get("head_type", "cnn")
        backbone, inputs = encoder_cls.rebuild(meta["config"], meta["inputs"])
        head = _make_head(backbone.config, meta["layer"], head_type, meta["head"])
        return cls(backbone, encoder_cls(inputs), head, meta["layer"], meta["head"],
                   cache_dtype=meta["cache_dtype"], source=meta.get("source"),
                   kind=meta.get("type", "wav2vec2_cnn"), head_type=head_type)



def _pad_time(values: list[np.ndarray], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack (..., T_i, H) arrays into (B, ..., T_max, H) float32, zeros after each T_i."""
    frames = torch.tensor([v.shape[-2] for v in values], dtype=torch.long)
    shape = (len(values), *values[0].shape[:-2], int(frames.max()), values[0].shape[-1])
    out = torch.zeros(shape, dtype=torch.float32)
    for i, v in enumerate(values):
        out[i, ..., : v.shape[-2], :] = torch.from_numpy(v.astype(np.float32))
    return out.to(device), frames.to(device)


def _make_head(config: Any, layer: int | str, head_type: str, head_cfg: dict) -> nn.Module:
    n_layers = config.num_hidden_layers + 1 if layer == "weighted" else None
    return HEADS[head_type](config.hidden_size, n_layers=n_layers, **head_cfg)


def _build(
    kind: str, encoder: str, head_type: str, head_cfg: dict[str, Any], backbone: dict[str, Any],
    layer: int | str, cache_dir: str | Path | None, cache_dtype: str,
) -> FrozenBackbone:
    """Load and freeze the backbone through its encoder, build the head."""
    name, pretrained = str(backbone["name_or_path"]), bool(backbone.get("pretrained", True))
    encoder_cls = ENCODERS[encoder]
    model, inputs = encoder_cls.load(name, pretrained, backbone.get("config"))
    head = _make_head(model.config, layer, head_type, head_cfg)
    source = {"name_or_path": name, "pretrained": pretrained}
    return FrozenBackbone(model, encoder_cls(inputs), head, layer, head_cfg, cache_dir,
                          cache_dtype, source, kind=kind, head_type=head_type)


def build_wav2vec2_cnn(
    class_names: Sequence[str],
    backbone: dict[str, Any],
    layer: int | str = -1,
    channels: Sequence[int] = (128, 256),
    kernel: int = 3,
    pool: int = 2,
    dropout: float = 0.1,
    cache_dir: str | Path | None = None,
    cache_dtype: str = "float16",
) -> FrozenBackbone:
    """`model=wav2vec2_cnn` (`model.net`): the seed's frozen wav2vec2 and CNN head."""
    head_cfg = {"n_classes": len(class_names), "channels": list(channels), "kernel": kernel,
                "pool": pool, "dropout": dropout}
    return _build("wav2vec2_cnn", "waveform", "cnn", head_cfg, backbone, layer, cache_dir,
                  cache_dtype)


LIGHT_ENCODERS = {"ssl_frozen": "waveform", "whisper_frozen": "whisper"}


def build_light_frozen(
    class_names: Sequence[str],
    backbone: dict[str, Any],
    family: str = "ssl_frozen",
    layer: int | str = -1,
    hidden_size: int = 256,
    cache_dir: str | Path | None = None,
    cache_dtype: str = "float16",
) -> FrozenBackbone:
    """`model=ssl_frozen` (a frozen wav2vec2-family encoder) and `model=whisper_frozen`
    (Whisper's frozen encoder), each with EmoBox's light head."""
    if family not in LIGHT_ENCODERS:
        raise ValueError(f"family must be one of {sorted(LIGHT_ENCODERS)}, got {family!r}")
    head_cfg = {"n_classes": len(class_names), "hidden_size": hidden_size}
    return _build(family, LIGHT_ENCODERS[family], "light", head_cfg, backbone, layer,
                  cache_dir, cache_dtype)
