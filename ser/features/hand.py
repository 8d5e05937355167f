"""The seed's hand features, batched: `hstack([zcr, rms, mfcc.T.ravel()])` per waveform.

Matches `librosa.feature.zero_crossing_rate`, `rms` and `mfcc` (librosa 0.11 defaults:
Slaney mel, power_to_db(ref=1, amin=1e-10, top_db=80) with the max per waveform,
ortho DCT-II) for a whole batch at once, with the mel basis built once per config.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch

from ser.features import dsp

SHORT_CLIPS = ("pad_wave", "seed")


@dataclass(frozen=True)
class HandFeatureConfig:
    """Frame and MFCC settings; the defaults are the seed's (108 + 108 + 2160 values)."""

    frame_length: int = 2048  # ZCR / RMS frames
    hop_length: int = 512
    n_mfcc: int = 20
    n_fft: int = 2048
    n_mels: int = 128
    # a clip shorter than the crop: "pad_wave" zero-pads the waveform, so every block sits
    # where a full crop puts it; "seed" pads the stacked vector, as the seed did (its
    # reproduction only: the blocks of a short clip slide into other positions)
    short_clips: str = "pad_wave"

    def __post_init__(self) -> None:
        if self.short_clips not in SHORT_CLIPS:
            raise ValueError(f"features.hand.short_clips must be one of {SHORT_CLIPS}, got "
                             f"{self.short_clips!r}")


def feature_dim(cfg: HandFeatureConfig, sr: int, n_samples: int) -> int:
    """Length of the feature vector of an `n_samples` waveform (`sr` kept for the API)."""
    del sr  # frame counts depend on samples only
    n_zcr = dsp.frame_count(n_samples, cfg.frame_length, cfg.hop_length)
    n_mfcc_frames = dsp.frame_count(n_samples, cfg.n_fft, cfg.hop_length)
    return 2 * n_zcr + cfg.n_mfcc * n_mfcc_frames


def hand_features(waves: np.ndarray, sr: int, cfg: HandFeatureConfig, n_samples: int) -> np.ndarray:
    """(B, n) waveforms -> (B, feature_dim) float32.

    Longer waveforms are cropped to `n_samples`. Shorter ones are zero-padded to it
    (`short_clips="pad_wave"`), or featurised as they are with the stacked vector
    zero-padded at its end, exactly as the seed did (`"seed"`: its NaN padding, filled
    with 0), so a short clip's blocks sit where the seed put them.
    """
    waves = np.atleast_2d(np.asarray(waves, dtype=np.float32))[:, :n_samples]
    if cfg.short_clips == "pad_wave" and waves.shape[1] < n_samples:
        waves = np.pad(waves, ((0, 0), (0, n_samples - waves.shape[1])))
    zcr = zero_crossing_rate(waves, cfg.frame_length, cfg.hop_length)
    energy = rms(waves, cfg.frame_length, cfg.hop_length)
    cepstra = mfcc(waves, sr, cfg).reshape(len(waves), -1)  # frame-major, as mfcc.T.ravel()
    feats = np.concatenate([zcr, energy, cepstra], axis=1)
    return dsp.fix_length(feats, feature_dim(cfg, sr, n_samples)).astype(np.float32, copy=False)


def zero_crossing_rate(waves: np.ndarray, frame_length: int, hop_length: int) -> np.ndarray:
    """`librosa.feature.zero_crossing_rate` (edge padding, threshold 1e-10): (B, frames)."""
    half = frame_length // 2
    y = np.pad(waves, ((0, 0), (half, half)), mode="edge")
    sign = np.signbit(y)
    sign &= np.abs(y) > 1e-10  # librosa zeroes |x| <= threshold first
    crossing = np.zeros(y.shape, dtype=bool)  # crossing[i]: between samples i - 1 and i
    np.not_equal(sign[:, 1:], sign[:, :-1], out=crossing[:, 1:])
    n_frames = dsp.frame_count(waves.shape[1], frame_length, hop_length)
    # a frame's first sample has no pair inside the frame; librosa still divides by
    # frame_length
    first = crossing[:, hop_length * np.arange(n_frames)]
    counts = _frame_sums(crossing, frame_length, hop_length, n_frames) - first
    return counts / np.float32(frame_length)


def rms(waves: np.ndarray, frame_length: int, hop_length: int) -> np.ndarray:
    """`librosa.feature.rms` on samples (zero padding, centered): (B, frames)."""
    half = frame_length // 2
    y = np.pad(waves, ((0, 0), (half, half)))
    n_frames = dsp.frame_count(waves.shape[1], frame_length, hop_length)
    power = _frame_sums(y * y, frame_length, hop_length, n_frames) / frame_length
    return np.sqrt(power).astype(np.float32)


def _frame_sums(x: np.ndarray, frame_length: int, hop_length: int, n_frames: int) -> np.ndarray:
    """Per-frame sums of `x[:, t*hop : t*hop + frame_length]` without materialising frames."""
    acc = np.int64 if x.dtype == bool else np.float64
    if frame_length % hop_length == 0:  # the usual case: a frame is k whole hops
        k = frame_length // hop_length
        used = x[:, : (n_frames + k - 1) * hop_length]
        blocks = used.reshape(len(x), -1, hop_length).sum(axis=-1, dtype=acc)
        return sum(blocks[:, j : j + n_frames] for j in range(k))
    csum = np.zeros((len(x), x.shape[1] + 1), dtype=acc)
    np.cumsum(x, axis=1, dtype=acc, out=csum[:, 1:])
    starts = hop_length * np.arange(n_frames)
    return csum[:, starts + frame_length] - csum[:, starts]


def mfcc(waves: np.ndarray, sr: int, cfg: HandFeatureConfig) -> np.ndarray:
    """`librosa.feature.mfcc(y=w, sr=sr)` for each waveform, as (B, frames, n_mfcc)."""
    spec = dsp.stft(waves, cfg.n_fft, cfg.hop_length)
    power = torch.from_numpy(np.abs(spec) ** 2)
    mel = torch.empty(power.shape[:2] + (cfg.n_mels,), dtype=torch.float32)
    for m0, m1, b0, b1, weights in mel_bands(sr, cfg.n_fft, cfg.n_mels):
        torch.matmul(power[:, :, b0:b1], weights, out=mel[:, :, m0:m1])
    db = 10.0 * np.log10(np.maximum(mel.numpy(), 1e-10))  # ref=1: no offset
    db = np.maximum(db, db.max(axis=(1, 2), keepdims=True) - 80.0)  # top_db per waveform
    basis = torch.from_numpy(dct_basis(cfg.n_mels, cfg.n_mfcc))
    return (torch.from_numpy(db) @ basis).numpy()


@lru_cache(maxsize=8)
def mel_basis(sr: int, n_fft: int, n_mels: int) -> np.ndarray:
    """librosa's Slaney mel filterbank (n_mels, 1 + n_fft // 2), built once per config."""
    import librosa  # imported here: it costs ~1 s, and only the basis needs it

    return np.ascontiguousarray(librosa.filters.mel(sr=sr, n_fft=n_fft, n_mels=n_mels))


@lru_cache(maxsize=8)
def mel_bands(
    sr: int, n_fft: int, n_mels: int, per_band: int = 16
) -> list[tuple[int, int, int, int, torch.Tensor]]:
    """The mel basis cut into groups of filters with the FFT bins they touch.

    Each filter spans a few bins, so `power[..., b0:b1] @ weights` per group skips the
    zeros that make a dense (bins x mels) product ~4x slower here.
    """
    basis = mel_basis(sr, n_fft, n_mels)
    bands = []
    for m0 in range(0, n_mels, per_band):
        m1 = min(m0 + per_band, n_mels)
        cols = np.flatnonzero(basis[m0:m1].any(axis=0))
        b0, b1 = (int(cols[0]), int(cols[-1]) + 1) if cols.size else (0, 1)
        weights = torch.from_numpy(np.ascontiguousarray(basis[m0:m1, b0:b1].T))
        bands.append((m0, m1, b0, b1, weights))
    return bands


@lru_cache(maxsize=8)
def dct_basis(n_mels: int, n_mfcc: int) -> np.ndarray:
    """Orthonormal DCT-II as an (n_mels, n_mfcc) matrix: `db @ basis` == scipy dct[:n_mfcc]."""
    m = np.arange(n_mels)
    k = np.arange(n_mfcc)[:, None]
    basis = np.cos(np.pi * k * (2 * m + 1) / (2 * n_mels)) * np.sqrt(2.0 / n_mels)
    basis[0] /= np.sqrt(2.0)
    return np.ascontiguousarray(basis.T, dtype=np.float32)
