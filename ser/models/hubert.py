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
    InputSpec,
    frame_lengths,
    load_backbone,
    masked_mean,
    model_from_config,
    normalise,
    sample_mask,
)


class FinetuneClassifier(nn.Module):
    """(waves (B, N), lengths (B,)) -> logits; the conv feature encoder frozen by default."""

    kind = "finetune"

    def __init__(
        self,
        model: PreTrainedModel,
        inputs: InputSpec,
        head_dropout: float = 0.1,
        freeze_feature_encoder: bool = True,
        source: dict | None = None,
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

    def forward(
        self, waves: torch.Tensor, lengths: torch.Tensor, keys: Sequence[str] | None = None
    ) -> torch.Tensor:
        del keys  # nothing is cached: the encoder is trained
        x = normalise(waves, lengths) if self.inputs.do_normalize else waves
        mask = sample_mask(lengths, x.shape[1]).long() if self.inputs.attention_mask else None
        weighted = bool(self.model.config.use_weighted_layer_sum)
        out = self.model.base_model(x, attention_mask=mask, output_hidden_states=weighted)
        if weighted:
            stacked = torch.stack(out.hidden_states, dim=1)
            w = torch.softmax(self.model.layer_weights, dim=-1).to(stacked.dtype)
            hidden = (stacked * w.view(1, -1, 1, 1)).sum(dim=1)
        else:
            hidden = out.last_hidden_state
        hidden = self.model.projector(hidden)
        frames = sample_mask(frame_lengths(self.model, lengths), hidden.shape[1])
        return self.model.classifier(self.dropout(masked_mean(hidden, frames)))

    # --- what a checkpoint needs, and the transformers export -------------------------
    def meta(self) -> dict[str, Any]:
        return {
            "type": self.kind,
            "config": self.model.config.to_dict(),
            "inputs": asdict(self.inputs),
            "head_dropout": self.head_dropout,
            "freeze_feature_encoder": self.freeze_feature_encoder,
            "source": self.source,
        }

    @classmethod
    def from_meta(cls, meta: dict[str, Any]) -> FinetuneClassifier:
        """The network with random weights, ready for a checkpoint's state dict."""
        return cls(
            model_from_config(meta["config"], head=True), InputSpec(**meta["inputs"]),
            meta["head_dropout"], meta["freeze_feature_encoder"], meta.get("source"),
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
) -> FinetuneClassifier:
    """The Hydra entry point (`model.net`): load the backbone, put a fresh head on it."""
    names = list(class_names)
    name, pretrained = str(backbone["name_or_path"]), bool(backbone.get("pretrained", True))
    model, inputs = load_backbone(
        name, pretrained, head=True, config=backbone.get("config"),
        num_labels=len(names), id2label=dict(enumerate(names)),
        label2id={n: i for i, n in enumerate(names)},
        use_weighted_layer_sum=weighted_layer_sum, classifier_proj_size=classifier_proj_size,
    )
    source = {"name_or_path": name, "pretrained": pretrained}
    return FinetuneClassifier(model, inputs, head_dropout, freeze_feature_encoder, source)
