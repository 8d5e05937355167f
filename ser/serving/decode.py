"""Decode any audio a user or a browser sends: bytes in, (samples, channels) float32 out.

libsndfile (soundfile) reads what training reads (wav, flac, ogg/vorbis, ogg/opus, mp3),
so those decode exactly as in training; anything else (webm/opus from Chrome's
MediaRecorder, mp4/aac from Safari) goes to ffmpeg through PyAV. Every failure is an
`InputError` whose `code` says what was wrong, for the CLI's message and the HTTP status.
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass

import numpy as np
import soundfile as sf

from ser.data.audio import AudioError

SILENCE_PEAK = 1e-3  # -60 dBFS: below this everywhere, a recording holds nothing to classify


class InputError(AudioError):
    """Audio that can't be classified; `code` names the problem for machines."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class Decoded:
    samples: np.ndarray  # (frames, channels) float32
    sample_rate: int
    decoder: str  # "libsndfile" or "ffmpeg"
    format: str  # container/codec as the decoder names it

    @property
    def duration(self) -> float:
        return len(self.samples) / self.sample_rate


def decode_audio(data: bytes, *, max_seconds: float | None = None) -> Decoded:
    """Decode a whole file's bytes; raises `InputError` naming what was wrong."""
    if not data:
        raise InputError("empty", "no audio: the input is empty (0 bytes)")
    try:
        decoded = _decode_sndfile(data, max_seconds)
    except _NotForSndfile:
        decoded = _decode_ffmpeg(data, max_seconds)
    if len(decoded.samples) == 0:
        raise InputError("no_samples", f"the {decoded.format} data holds no audio samples")
    if not np.isfinite(decoded.samples).all():
        raise InputError("bad_samples", "the audio holds NaN or infinite samples")
    return decoded


class _NotForSndfile(Exception):
    """libsndfile does not know the format: try ffmpeg."""


# -- libsndfile -------------------------------------------------------------------------


def _decode_sndfile(data: bytes, max_seconds: float | None) -> Decoded:
    try:
        f = sf.SoundFile(io.BytesIO(data))
    except sf.LibsndfileError as err:
        if "Format not recognised" in str(err) or "unknown format" in str(err).lower():
            raise _NotForSndfile from None
        raise InputError("not_audio", f"not readable audio: {_sf_reason(err)}") from None
    with f:
        fmt = f"{f.format}/{f.subtype}".lower()
        _check_length(f.frames / f.samplerate, max_seconds)
        _check_sndfile_header(f.extra_info, fmt)
        try:
            samples = f.read(dtype="float32", always_2d=True)
        except (sf.LibsndfileError, RuntimeError) as err:
            raise InputError(
                "truncated", f"the {fmt} data is truncated or corrupt: {_sf_reason(err)}"
            ) from None
        rate = f.samplerate
    if fmt.startswith("ogg") and _ogg_truncated(data):
        raise InputError("truncated", f"the {fmt} data is truncated: its last page is not the "
                                      "end of the stream")
    return Decoded(samples, rate, "libsndfile", fmt)


def _sf_reason(err: Exception) -> str:
    """libsndfile's words without the 'Error opening <_io.BytesIO ...>:' prefix."""
    return re.sub(r"^Error (opening )?<[^>]*>:\s*", "", str(err)).strip() or repr(err)


_SHOULD_BE = re.compile(r"(\w+)\s*:\s*(\d+) \(should be (\d+)\)")


def _check_sndfile_header(log: str, fmt: str) -> None:
    """A chunk longer than the bytes present means a cut file (libsndfile reads on silently).

    Streaming writers leave 0 or 0xFFFFFFFF as a placeholder size: that is no cut.
    """
    for chunk, declared, present in _SHOULD_BE.findall(log):
        declared_n, present_n = int(declared), int(present)
        if chunk.lower() in ("data", "riff") and 0 < declared_n < 0x7FFFFFFF:
            if declared_n > present_n:
                raise InputError(
                    "truncated", f"the {fmt} data is truncated: its header declares "
                    f"{declared_n} bytes of {chunk}, only {present_n} are present")


def _ogg_truncated(data: bytes) -> bool:
    """True unless the last Ogg page is complete and flagged end-of-stream."""
    last = data.rfind(b"OggS")
    if last < 0 or len(data) < last + 27:
        return True
    n_segments = data[last + 26]
    table = data[last + 27 : last + 27 + n_segments]
    if len(table) < n_segments or last + 27 + n_segments + sum(table) > len(data):
        return True  # a partial page
    return not data[last + 5] & 0x04


# -- ffmpeg (PyAV) ----------------------------------------------------------------------

_FFMPEG_TRUNCATION = ("ended prematurely", "truncat", "invalid data", "error while decoding")


def _decode_ffmpeg(data: bytes, max_seconds: float | None) -> Decoded:
    import av  # imported on first use: ~0.1 s, and most inputs never need it
    import av.logging

    if av.logging.get_level() is None or av.logging.get_level() > av.logging.WARNING:
        av.logging.set_level(av.logging.WARNING)  # so ffmpeg's warnings reach the capture
    with av.logging.Capture(local=True) as logs:
        try:
            with av.open(io.BytesIO(data), mode="r") as container:
                return _decode_container(container, logs, max_seconds)
        except av.error.FFmpegError as err:
            raise InputError("not_audio", f"not audio that libsndfile or ffmpeg can decode "
                                          f"({err.strerror or err})") from None


def _decode_container(container, logs: list, max_seconds: float | None) -> Decoded:
    import av

    if not container.streams.audio:
        kinds = ", ".join(s.type for s in container.streams) or "no streams"
        raise InputError("not_audio", f"the {container.format.name} data has no audio stream "
                                      f"({kinds})")
    stream = container.streams.audio[0]
    fmt = f"{container.format.name}/{stream.codec_context.name}"
    declared = container.duration / 1e6 if container.duration else None  # µs
    if declared is not None:
        _check_length(declared, max_seconds)
    resampler = av.AudioResampler(format="fltp")  # planar float, native rate and layout
    chunks, frames, rate = [], 0, stream.rate
    for frame in container.decode(stream):
        for out in resampler.resample(frame):
            chunks.append(out.to_ndarray())
            frames += out.samples
            rate = out.sample_rate
        if rate:
            _check_length(frames / rate, max_seconds)
    for out in resampler.resample(None):
        chunks.append(out.to_ndarray())
        frames += out.samples
    _check_ffmpeg_truncation(logs, fmt, frames / rate if rate else 0.0, declared)
    channels = stream.codec_context.channels or 1
    samples = np.concatenate(chunks, axis=1).T if chunks else np.zeros((0, channels))
    return Decoded(np.ascontiguousarray(samples, dtype=np.float32), rate, "ffmpeg", fmt)


def _check_ffmpeg_truncation(
    logs: list, fmt: str, decoded: float, declared: float | None
) -> None:
    warned = [msg.strip() for _, _, msg in logs
              if any(word in msg.lower() for word in _FFMPEG_TRUNCATION)]
    if warned:
        raise InputError("truncated", f"the {fmt} data is truncated or corrupt ({warned[0]})")
    # a container that declares its length (not a live recording) must deliver it
    if declared is not None and decoded < declared - 0.1:
        raise InputError("truncated", f"the {fmt} data is truncated: {decoded:.2f} s decoded "
                                      f"of the {declared:.2f} s it declares")


def _check_length(seconds: float, max_seconds: float | None) -> None:
    if max_seconds is not None and seconds > max_seconds:
        raise InputError("too_long", f"the recording is longer than the limit: {seconds:.1f} s > "
                                     f"{max_seconds:g} s")


def check_not_silent(mono: np.ndarray) -> None:
    """Reject a recording that is digital silence (peak below -60 dBFS)."""
    peak = float(np.abs(mono).max()) if mono.size else 0.0
    if peak < SILENCE_PEAK:
        level = f"{20 * np.log10(peak):.0f} dBFS" if peak > 0 else "all zeros"
        raise InputError("silence", f"the recording is silent (peak {level}, "
                                    f"below {20 * np.log10(SILENCE_PEAK):.0f} dBFS)")
