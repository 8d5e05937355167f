"""A frame-sequence model trained from scratch: log-mel frames -> dilated 1D CNN ->
attentive statistics pooling -> classifier.

(waves (B, N), lengths (B,)) -> logits, on 16 kHz waveforms from the waveform pipeline
(which also draws the speed / pitch / noise augmentation). Inside the network:

- `LogMel`: a Hann-windowed DFT written as a strided convolution (real arithmetic, so an
  ONNX export is a plain Conv), mel filters, then the log floored `top_db` below the
  clip's peak; each clip's frames then lose their per-band mean over the clip ("cmn",
  optionally unit variance, "cmvn").
- SpecAugment (training only): random frequency bands and time spans set to 0.
- a TDNN-style stack of dilated convolutions, each followed by BatchNorm and ReLU, and
  attentive mean + std pooling over the clip's frames.

Padding never changes a clip's result: the DFT pads with zeros (as a clip served alone
is), and after every layer the frames past a clip's end are zeroed again, which is what
the next convolution's own zero padding would show it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from ser.models.masks import sample_mask

NORMALISATIONS = ("none", "cmn", "cmvn")


class LogMel(nn.Module):
    """(B, N) waves -> (B, n_mels, frames) mel power, frames = 1 + N // hop (centred)."""

    def __init__(self, sample_rate: int = 16000, n_fft: int = 512, win_length: int = 400,
                 hop_length: int = 160, n_mels: int = 64, fmin: float = 50.0) -> None:
        super().__init__()
        import librosa  # filters only; not needed for a forward

        if not 0 < win_length <= n_fft:
            raise ValueError(f"win_length {win_length} must be in (0, n_fft={n_fft}]")
        self.n_fft, self.hop_length = n_fft, hop_length
        window = np.zeros(n_fft)
        left = (n_fft - win_length) // 2  # the window centred in the FFT frame, as librosa
        window[left:left + win_length] = np.hanning(win_length + 1)[:-1]  # periodic Hann
        t = np.arange(n_fft)
        freqs = np.arange(n_fft // 2 + 1)
        angle = 2 * np.pi * np.outer(freqs, t) / n_fft
        basis = np.concatenate([np.cos(angle), -np.sin(angle)]) * window  # (2F, n_fft)
        self.register_buffer("dft", torch.tensor(basis[:, None, :], dtype=torch.float32),
                             persistent=False)
        mel = librosa.filters.mel(sr=sample_rate, n_fft=n_fft, n_mels=n_mels, fmin=fmin)
        self.register_buffer("mel", torch.tensor(mel, dtype=torch.float32), persistent=False)

    def frames(self, lengths: torch.Tensor) -> torch.Tensor:
        return 1 + lengths // self.hop_length

    def forward(self, waves: torch.Tensor) -> torch.Tensor:
        half = self.n_fft // 2
        x = F.pad(waves.float()[:, None, :], (half, half))  # zeros, as beyond a clip's end
        spec = F.conv1d(x, self.dft, stride=self.hop_length)  # (B, 2F, T)
        re, im = spec.chunk(2, dim=1)
        return torch.matmul(self.mel, re * re + im * im)


def log_floored(mel: torch.Tensor, mask: torch.Tensor, top_db: float) -> torch.Tensor:
    """ln of mel power, floored `top_db` below the clip's own peak (over its own frames).

    A floor relative to the clip keeps a clip's values independent of its gain, and keeps
    digital silence and float rounding (which differs between torch and an ONNX runtime)
    from being amplified by the log.
    """
    peak = mel.masked_fill(~mask[:, None, :], 0.0).amax(dim=(1, 2), keepdim=True)
    return torch.log(torch.maximum(mel, peak * 10.0 ** (-top_db / 10.0)).clamp(min=1e-30))


def normalise_frames(x: torch.Tensor, mask: torch.Tensor, mode: str) -> torch.Tensor:
    """Per clip and band, over the clip's own frames: minus the mean ("cmn"), also divided
    by the std ("cmvn"); padding set to 0."""
    m = mask[:, None, :].to(x.dtype)
    if mode == "none":
        return x * m
    n = m.sum(dim=2, keepdim=True).clamp(min=1.0)
    mean = (x * m).sum(dim=2, keepdim=True) / n
    x = (x - mean) * m
    if mode == "cmvn":
        x = x / torch.sqrt((x * x).sum(dim=2, keepdim=True) / n + 1e-5)
    return x


def spec_augment(x: torch.Tensor, lengths: torch.Tensor, freq_masks: int, freq_width: int,
                 time_masks: int, time_width: int) -> torch.Tensor:
    """Zero `freq_masks` bands of up to `freq_width` mels and `time_masks` spans of up to
    `time_width` frames (inside each clip's own frames), drawn per clip."""
    b, n_mels, n_frames = x.shape
    keep = torch.ones_like(x, dtype=torch.bool)
    bands = torch.arange(n_mels, device=x.device)
    steps = torch.arange(n_frames, device=x.device)
    for _ in range(freq_masks):
        width = torch.randint(0, freq_width + 1, (b, 1), device=x.device)
        start = (torch.rand(b, 1, device=x.device) * (n_mels - width + 1)).long()
        keep &= ~((bands >= start) & (bands < start + width))[:, :, None]
    for _ in range(time_masks):
        width = torch.minimum(torch.randint(0, time_width + 1, (b, 1), device=x.device),
                              lengths[:, None] // 5)  # at most a fifth of a short clip
        start = (torch.rand(b, 1, device=x.device) * (lengths[:, None] - width + 1)).long()
        keep &= ~((steps >= start) & (steps < start + width))[:, None, :]
    return x * keep


class AttentiveStatsPool(nn.Module):
    """(B, C, T) -> (B, 2C): attention-weighted mean and std over each clip's frames."""

    def __init__(self, channels: int, hidden: int = 64) -> None:
        super().__init__()
        self.attention = nn.Sequential(nn.Conv1d(channels, hidden, 1), nn.Tanh(),
                                       nn.Conv1d(hidden, 1, 1))

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        scores = self.attention(x).masked_fill(~mask[:, None, :], float("-inf"))
        w = torch.softmax(scores, dim=2)
        mean = (w * x).sum(dim=2)
        var = (w * x * x).sum(dim=2) - mean * mean
        return torch.cat([mean, torch.sqrt(var.clamp(min=1e-5))], dim=1)


class LogMelCNN(nn.Module):
    """(waves (B, N), lengths (B,)) -> logits."""

    def __init__(
        self,
        n_classes: int = 8,
        sample_rate: int = 16000,
        n_fft: int = 512,
        win_length: int = 400,
        hop_length: int = 160,
        n_mels: int = 64,
        fmin: float = 50.0,
        top_db: float = 80.0,
        normalisation: str = "cmn",
        channels: Sequence[int] = (128, 128, 128),
        kernels: Sequence[int] = (5, 3, 3),
        dilations: Sequence[int] = (1, 2, 3),
        embedding: int = 256,
        attention_hidden: int = 64,
        head_hidden: int = 128,
        dropout: float = 0.3,
        spec_augment: dict[str, int] | None = None,
    ) -> None:
        super().__init__()
        if normalisation not in NORMALISATIONS:
            raise ValueError(f"model.net.normalisation must be one of {NORMALISATIONS}, "
                             f"got {normalisation!r}")
        if not len(channels) == len(kernels) == len(dilations):
            raise ValueError("channels, kernels and dilations need one entry per layer")
        augment = {"freq_masks": 2, "freq_width": 8, "time_masks": 2, "time_width": 30,
                   **(spec_augment or {})}
        self.init_args: dict[str, Any] = {
            "n_classes": n_classes, "sample_rate": sample_rate, "n_fft": n_fft,
            "win_length": win_length, "hop_length": hop_length, "n_mels": n_mels,
            "fmin": fmin, "top_db": top_db, "normalisation": normalisation,
            "channels": list(channels), "kernels": list(kernels), "dilations": list(dilations),
            "embedding": embedding,
            "attention_hidden": attention_hidden, "head_hidden": head_hidden,
            "dropout": dropout, "spec_augment": augment}
        self.logmel = LogMel(sample_rate, n_fft, win_length, hop_length, n_mels, fmin)
        self.top_db = top_db
        self.normalisation = normalisation
        self.spec_augment = augment
        self.input_norm = nn.BatchNorm1d(n_mels)
        sizes = [n_mels, *channels]
        self.layers = nn.ModuleList(
            nn.Sequential(nn.Conv1d(c_in, c_out, k, dilation=d, padding=d * (k - 1) // 2),
                          nn.BatchNorm1d(c_out), nn.ReLU())
            for c_in, c_out, k, d in zip(sizes[:-1], sizes[1:], kernels, dilations, strict=True))
        self.embed = nn.Sequential(nn.Conv1d(sizes[-1], embedding, 1), nn.BatchNorm1d(embedding),
                                   nn.ReLU())
        self.pool = AttentiveStatsPool(embedding, attention_hidden)
        self.head = nn.Sequential(nn.Linear(2 * embedding, head_hidden), nn.ReLU(),
                                  nn.Dropout(dropout), nn.Linear(head_hidden, n_classes))

    def meta(self) -> dict[str, Any]:
        return dict(self.init_args)

    @classmethod
    def from_meta(cls, meta: dict[str, Any]) -> LogMelCNN:
        return cls(**meta)

    def forward(self, waves: torch.Tensor, lengths: torch.Tensor,
                keys: Sequence[str | None] | None = None) -> torch.Tensor:
        """`keys` (clip content keys, for caches) are accepted and unused."""
        mel = self.logmel(waves)
        frames = self.logmel.frames(lengths).clamp(max=mel.shape[2])
        mask = sample_mask(frames, mel.shape[2])
        x = normalise_frames(log_floored(mel, mask, self.top_db), mask, self.normalisation)
        if self.training and (self.spec_augment["freq_masks"] or self.spec_augment["time_masks"]):
            x = spec_augment(x, frames, **self.spec_augment)
        keep = mask[:, None, :].to(x.dtype)
        x = self.input_norm(x) * keep
        for layer in self.layers:
            x = layer(x) * keep
        x = self.embed(x) * keep
        return self.head(self.pool(x, mask))


def build_logmel_cnn(class_names: Sequence[str], **kwargs: Any) -> LogMelCNN:
    """The network a config names, sized by the run's classes."""
    return LogMelCNN(n_classes=len(class_names), **kwargs)
