"""The seed's third model: a HuBERT (or any wav2vec2-family) encoder fine-tuned end to end.

The network is transformers' `*ForSequenceClassification` (encoder, projector, classifier),
driven by our own forward: inputs normalised as the checkpoint's feature extractor says,
the padding mask given to the encoder only where its config supports one, and mean pooling
over the real frames only. So `export_pretrained` writes a folder that
`AutoModelForAudioClassification.from_pretrained` loads without this project.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import PreTrainedModel

from ser.models.backbone import (
    FeatureCache,
    InputSpec,
    frame_lengths,
    given_features,
    load_backbone,
    model_from_config,
    normalise,
    set_pos_conv,
)
from ser.models.masks import masked_mean, sample_mask

SPEED_DEFAULTS: dict[str, Any] = {
    "encoder_no_grad": True,
    "feature_cache_mb": 1024.0,
    "pos_conv": "native",
    "compile_encoder": False,
}


class FinetuneClassifier(nn.Module):
    """(waves (B, N), lengths (B,)) -> logits; the conv feature encoder frozen by default.

    Speed options, none of which changes the function computed (beyond float rounding):
    `encoder_no_grad` runs the frozen conv encoder outside autograd; `feature_cache_mb`
    keeps its outputs per clip key on their device, up to that many MiB (0: off; clips
    whose key is None, i.e. augmented or randomly cropped, are never cached);
    `pos_conv` picks the positional conv's kernel (`POS_CONV_IMPLS`); `compile_encoder`
    wraps the transformer encoder in torch.compile (worth it on GPUs only).
    """

    kind = "finetune"

    def __init__(
        self,
        model: PreTrainedModel,
        inputs: InputSpec,
        head_dropout: float = 0.1,
        freeze_feature_encoder: bool = True,
        source: dict | None = None,
        encoder_no_grad: bool = SPEED_DEFAULTS["encoder_no_grad"],
        feature_cache_mb: float = SPEED_DEFAULTS["feature_cache_mb"],
        pos_conv: str = SPEED_DEFAULTS["pos_conv"],
        compile_encoder: bool = SPEED_DEFAULTS["compile_encoder"],
    ) -> None:
        super().__init__()
        self.model = model
        self.inputs = inputs
        self.head_dropout = head_dropout
        self.dropout = nn.Dropout(head_dropout)
        self.freeze_feature_encoder = freeze_feature_encoder
        self.source = dict(source or {})
        model.train()  # from_pretrained returns eval mode, and Lightning keeps modes as found
        if freeze_feature_encoder:
            model.freeze_feature_encoder()
        self.speed = {"encoder_no_grad": encoder_no_grad, "feature_cache_mb": feature_cache_mb,
                      "pos_conv": pos_conv}
        # only a frozen encoder may skip autograd, and only its outputs may be reused
        self.encoder_no_grad = freeze_feature_encoder and encoder_no_grad
        use_cache = self.encoder_no_grad and feature_cache_mb > 0
        self.feature_cache = FeatureCache(int(feature_cache_mb * 2**20)) if use_cache else None
        # valid frames don't depend on padding with per-frame (layer) norm, and padded
        # frames are then masked out: one entry per clip. Group norm spans the whole
        # padded clip, and unmasked padding is attended: one entry per padded length.
        self._length_free = (getattr(model.config, "feat_extract_norm", "group") == "layer"
                             and inputs.attention_mask)
        self.register_load_state_dict_post_hook(_clear_feature_cache)
        set_pos_conv(model, pos_conv)
        if compile_encoder:
            model.base_model.encoder.compile()

    def forward(
        self,
        waves: torch.Tensor,
        lengths: torch.Tensor,
        keys: Sequence[str | None] | None = None,
    ) -> torch.Tensor:
        """`keys` name each clip's samples (None: a one-off, e.g. augmented, clip)."""
        if self._hears_padding(waves, lengths):
            # a backbone given no padding mask hears the padding (group norm over time):
            # evaluated, each clip runs alone at its own length, exactly as it is served
            return torch.cat([
                self(waves[i : i + 1, :n], lengths[i : i + 1], keys[i : i + 1] if keys else None)
                for i, n in enumerate(lengths.tolist())])
        x = normalise(waves, lengths) if self.inputs.do_normalize else waves
        mask = sample_mask(lengths, x.shape[1]).long() if self.inputs.attention_mask else None
        weighted = bool(self.model.config.use_weighted_layer_sum)
        base = self.model.base_model
        if self.encoder_no_grad:
            with given_features(base.feature_extractor, self._features(x, lengths, keys)):
                out = base(x, attention_mask=mask, output_hidden_states=weighted)
        else:
            out = base(x, attention_mask=mask, output_hidden_states=weighted)
        if weighted:
            stacked = torch.stack(out.hidden_states, dim=1)
            w = torch.softmax(self.model.layer_weights, dim=-1).to(stacked.dtype)
            hidden = (stacked * w.view(1, -1, 1, 1)).sum(dim=1)
        else:
            hidden = out.last_hidden_state
        hidden = self.model.projector(hidden)
        frames = sample_mask(frame_lengths(self.model, lengths), hidden.shape[1])
        return self.model.classifier(self.dropout(masked_mean(hidden, frames)))

    def _hears_padding(self, waves: torch.Tensor, lengths: torch.Tensor) -> bool:
        """Evaluation of a padded batch by a backbone that takes no padding mask (an export
        traces one graph: its served windows share one length)."""
        return (not self.training and not self.inputs.attention_mask
                and not torch.compiler.is_compiling() and bool((lengths < waves.shape[1]).any()))

    # --- the frozen conv encoder: outside autograd, and cached per clip ----------------
    def _features(
        self, x: torch.Tensor, lengths: torch.Tensor, keys: Sequence[str | None] | None
    ) -> torch.Tensor:
        """The conv encoder's (B, C, T) output for normalised waves `x`."""
        encoder = self.model.base_model.feature_extractor
        cache = self.feature_cache
        if cache is None or keys is None or not any(keys):
            with torch.no_grad():
                return encoder(x)
        ids = [self._cache_id(k, x) if k else None for k in keys]
        found = [cache.get(i) if i is not None else None for i in ids]
        miss = [b for b, f in enumerate(found) if f is None]
        fresh = None
        if miss:
            with torch.no_grad():
                fresh = encoder(x if len(miss) == len(ids) else x[miss])
        feats = self._assemble(x, lengths, found, miss, fresh)
        valid = frame_lengths(self.model, lengths).tolist() if self._length_free else None
        for b in miss:
            if ids[b] is not None:  # a copy: a view would keep the whole batch alive
                cache.put(ids[b], (feats[b, :, : valid[b]] if valid else feats[b]).clone())
        return feats

    def _cache_id(self, key: str, x: torch.Tensor) -> tuple:
        """What the cached value depends on besides the clip: padding, device, dtypes."""
        dev = x.device.type
        amp = torch.get_autocast_dtype(dev) if torch.is_autocast_enabled(dev) else None
        weight = next(self.model.base_model.feature_extractor.parameters())
        context = (str(x.device), x.dtype, weight.dtype, amp)
        return (key, context) if self._length_free else (key, x.shape[1], context)

    def _assemble(
        self,
        x: torch.Tensor,
        lengths: torch.Tensor,
        found: list[torch.Tensor | None],
        miss: list[int],
        fresh: torch.Tensor | None,
    ) -> torch.Tensor:
        """One (B, C, T) batch from cached rows and freshly computed ones."""
        if fresh is not None and len(miss) == len(found):
            feats = fresh
        elif fresh is None and not self._length_free:  # all hit, all of the batch's width
            return torch.stack(found)
        else:
            ref = fresh if fresh is not None else next(f for f in found if f is not None)
            t = int(frame_lengths(self.model, lengths.new_tensor([x.shape[1]]))[0])
            feats = ref.new_zeros(len(found), ref.shape[-2], t)
            if fresh is not None:
                feats[miss] = fresh
            for b, f in enumerate(found):
                if f is not None:
                    feats[b, :, : f.shape[-1]] = f
        if self._length_free:  # padded frames are masked downstream: make them 0 alike
            keep = sample_mask(frame_lengths(self.model, lengths), feats.shape[-1])
            feats = feats.masked_fill(~keep[:, None, :], 0.0)
        return feats

    # --- what a checkpoint needs, and the transformers export -------------------------
    def meta(self) -> dict[str, Any]:
        return {
            "type": self.kind,
            "config": self.model.config.to_dict(),
            "inputs": asdict(self.inputs),
            "head_dropout": self.head_dropout,
            "freeze_feature_encoder": self.freeze_feature_encoder,
            "source": self.source,
            # not in the config's dict; torch.compile is left to whoever loads it
            "attn_implementation": self.model.config._attn_implementation,
            "speed": dict(self.speed),
        }

    @classmethod
    def from_meta(cls, meta: dict[str, Any]) -> FinetuneClassifier:
        """The network with random weights, ready for a checkpoint's state dict.

        Metas written before the speed options existed load with today's defaults.
        """
        model = model_from_config(meta["config"], head=True,
                                  attn_implementation=meta.get("attn_implementation"))
        return cls(
            model, InputSpec(**meta["inputs"]), meta["head_dropout"],
            meta["freeze_feature_encoder"], meta.get("source"), **meta.get("speed", {}),
        )

    def export_pretrained(self, out_dir: str | Path, class_names: Sequence[str]) -> Path:
        """`save_pretrained` of the model (with id2label) and of its feature extractor."""
        out = Path(out_dir)
        cfg = self.model.config
        cfg.id2label = dict(enumerate(class_names))
        cfg.label2id = {name: i for i, name in enumerate(class_names)}
        self.model.save_pretrained(out)
        self.inputs.feature_extractor().save_pretrained(out)
        return out


def build_finetune_classifier(
    class_names: Sequence[str],
    backbone: dict[str, Any],
    head_dropout: float = 0.1,
    freeze_feature_encoder: bool = True,
    weighted_layer_sum: bool = False,
    classifier_proj_size: int = 256,
    attn_implementation: str | None = "sdpa",
    encoder_no_grad: bool = SPEED_DEFAULTS["encoder_no_grad"],
    feature_cache_mb: float = SPEED_DEFAULTS["feature_cache_mb"],
    pos_conv: str = SPEED_DEFAULTS["pos_conv"],
    compile_encoder: bool = SPEED_DEFAULTS["compile_encoder"],
) -> FinetuneClassifier:
    """The Hydra entry point (`model.net`): load the backbone, put a fresh head on it.

    `attn_implementation` goes to transformers ("sdpa": PyTorch's fused attention, "eager");
    the speed options are FinetuneClassifier's.
    """
    names = list(class_names)
    name, pretrained = str(backbone["name_or_path"]), bool(backbone.get("pretrained", True))
    model, inputs = load_backbone(
        name, pretrained, head=True, config=backbone.get("config"),
        attn_implementation=attn_implementation,
        num_labels=len(names), id2label=dict(enumerate(names)),
        label2id={n: i for i, n in enumerate(names)},
        use_weighted_layer_sum=weighted_layer_sum, classifier_proj_size=classifier_proj_size,
    )
    source = {"name_or_path": name, "pretrained": pretrained}
    return FinetuneClassifier(
        model, inputs, head_dropout, freeze_feature_encoder, source,
        encoder_no_grad=encoder_no_grad, feature_cache_mb=feature_cache_mb,
        pos_conv=pos_conv, compile_encoder=compile_encoder,
    )


def _clear_feature_cache(module: FinetuneClassifier, incompatible: Any) -> None:
    """New weights (a checkpoint) make cached encoder outputs stale."""
    del incompatible
    if module.feature_cache is not None:
        module.feature_cache.clear()
