"""Batched STFT, phase vocoder and ISTFT with librosa 0.11's exact conventions.

Everything takes a batch of equal-length waveforms `(B, n)`. FFTs (and cos/sin of large
phases) run in torch, ~4x faster than numpy's here; other elementwise work stays in
numpy, faster than torch's complex kernels on CPU. The semantics follow `librosa.stft`
(periodic Hann, center=True, zero padding), `librosa.phase_vocoder` and `librosa.istft`.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import soxr
import torch


@lru_cache(maxsize=8)
def hann(n_fft: int, win_length: int | None = None) -> np.ndarray:
    """Periodic Hann window, as `scipy.signal.get_window("hann", n, fftbins=True)`; with a
    shorter `win_length`, that window zero-padded to n_fft in the middle, as librosa."""
    n = win_length or n_fft
    window = (0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(n) / n)).astype(np.float32)
    left = (n_fft - n) // 2
    return np.pad(window, (left, n_fft - n - left))


def frame_count(n: int, frame_length: int, hop_length: int) -> int:
    """Frames of a centered analysis of `n` samples."""
    return 1 + (n + 2 * (frame_length // 2) - frame_length) // hop_length


def stft(waves: np.ndarray, n_fft: int, hop_length: int,
         win_length: int | None = None) -> np.ndarray:
    """`librosa.stft(center=True, pad_mode="constant")` as `(B, frames, bins)` complex64."""
    x = torch.from_numpy(np.ascontiguousarray(waves, dtype=np.float32))
    x = torch.nn.functional.pad(x, (n_fft // 2, n_fft // 2))
    frames = x.unfold(-1, n_fft, hop_length) * torch.from_numpy(hann(n_fft, win_length))
    return torch.fft.rfft(frames, dim=-1).numpy()


@lru_cache(maxsize=8)
def _window_envelope(n_frames: int, n_fft: int, hop_length: int) -> np.ndarray:
    """Overlap-added squared window (librosa's `window_sumsquare`), float32, with 1 where
    it is ~0 (librosa leaves those samples undivided)."""
    sq = np.broadcast_to(hann(n_fft) ** 2, (1, n_frames, n_fft))
    env = overlap_add(np.ascontiguousarray(sq), hop_length)[0]
    env[env <= np.finfo(np.float32).tiny] = 1.0
    return env


def overlap_add(frames: np.ndarray, hop_length: int) -> np.ndarray:
    """Sum `(B, T, n)` frames placed every `hop_length` samples into `(B, n + hop*(T-1))`."""
    b, t, n = frames.shape
    k = -(-n // hop_length)  # frame spans k hops; zero-pad it to exactly k hops
    if k * hop_length != n:
        frames = np.pad(frames, ((0, 0), (0, 0), (0, k * hop_length - n)))
    blocks = frames.reshape(b, t, k, hop_length)
    out = np.zeros((b, t + k - 1, hop_length), dtype=frames.dtype)
    for j in range(k):
        out[:, j : j + t] += blocks[:, :, j]
    return out.reshape(b, -1)[:, : n + hop_length * (t - 1)]


def istft(spec: np.ndarray, n_fft: int, hop_length: int, length: int) -> np.ndarray:
    """`librosa.istft(center=True, length=length)` of `(B, frames, bins)` -> `(B, length)`."""
    frames = torch.fft.irfft(torch.from_numpy(spec), n=n_fft, dim=-1).numpy()
    frames *= hann(n_fft)
    y = overlap_add(frames, hop_length)
    env = _window_envelope(spec.shape[1], n_fft, hop_length)
    start = n_fft // 2
    y = y[:, start : start + length] / env[start : start + length]
    return fix_length(y, length)


def fix_length(waves: np.ndarray, length: int) -> np.ndarray:
    """Crop or zero-pad the last axis to `length` (librosa.util.fix_length)."""
    n = waves.shape[-1]
    if n >= length:
        return waves[..., :length]
    pad = [(0, 0)] * (waves.ndim - 1) + [(0, length - n)]
    return np.pad(waves, pad)


def phase_vocoder(spec: np.ndarray, rate: float, n_fft: int, hop_length: int) -> np.ndarray:
    """`librosa.phase_vocoder` on `(B, frames, bins)`, vectorised over frames.

    The only sequential part is the float32 phase accumulator, kept as a loop over
    output frames (cheap row adds) so its rounding matches librosa's loop exactly.
    """
    n_frames = spec.shape[1]
    steps = np.arange(0, n_frames, rate, dtype=np.float64)
    idx = steps.astype(np.int64)
    alpha = (steps % 1.0).astype(np.float32)[None, :, None]
    padded = np.zeros((spec.shape[0], n_frames + 2, spec.shape[2]), dtype=spec.dtype)
    padded[:, :n_frames] = spec  # two zero frames past the end
    # torch's FFT can give -0.0 where numpy's gives +0.0, and the sign decides angle() of
    # a digitally silent frame, whose phase the vocoder carries on: add 0 to clear it
    padded += np.complex64(0)
    mag, ang = np.abs(padded), np.angle(padded)
    out_mag = (1.0 - alpha) * mag[:, idx] + alpha * mag[:, idx + 1]

    # phase advance between input frames t and t + 1, wrapped: computed once per input
    # frame (output frames reuse them), in float64 like librosa
    phi = hop_length * np.fft.rfftfreq(n_fft, d=1.0 / (2 * np.pi))  # expected advance
    dphase = ang[:, 1:] - ang[:, :-1] - phi
    dphase -= 2.0 * np.pi * np.round(dphase / (2.0 * np.pi))
    advance = (phi + dphase)[:, idx]

    phase = np.empty(out_mag.shape, dtype=np.float32)
    acc = ang[:, 0].copy()
    for t in range(len(steps)):
        phase[:, t] = acc
        acc += advance[:, t]  # float32 += float64, rounded like librosa's in-place add
    # torch's cos/sin stay vectorised for phases ~1e5 rad, where numpy's float32 ones
    # fall back to a scalar loop (5x slower); both are accurate to ~1e-7
    angle, radius = torch.from_numpy(phase), torch.from_numpy(out_mag)
    return torch.complex(radius * torch.cos(angle), radius * torch.sin(angle)).numpy()


def time_stretch(
    waves: np.ndarray, rate: float, n_fft: int = 2048, hop_length: int | None = None
) -> np.ndarray:
    """`librosa.effects.time_stretch`: (B, n) -> (B, round(n / rate))."""
    hop_length = hop_length or n_fft // 4
    spec = phase_vocoder(stft(waves, n_fft, hop_length), rate, n_fft, hop_length)
    return istft(spec, n_fft, hop_length, int(round(waves.shape[-1] / rate)))


def pitch_shift(
    waves: np.ndarray, sr: int, n_steps: float, bins_per_octave: int = 12, n_fft: int = 2048
) -> np.ndarray:
    """`librosa.effects.pitch_shift` (soxr_hq resampling): (B, n) -> (B, n) float32."""
    waves = np.atleast_2d(waves)
    rate = 2.0 ** (-float(n_steps) / bins_per_octave)
    stretched = time_stretch(waves, rate, n_fft)
    orig_sr = float(sr) / rate
    shifted = [soxr.resample(w, orig_sr, sr, quality="HQ") for w in stretched]
    return np.stack([fix_length(w, waves.shape[-1]) for w in shifted]).astype(np.float32)
