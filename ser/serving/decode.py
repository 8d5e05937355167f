"""Decode any audio a user or a browser sends: bytes or a file in, mono float32 out.

Only a fixed list of containers is read, recognised by their first bytes: WAV, FLAC, Ogg,
WebM/Matroska, MP4/M4A and MP3. ffmpeg is never asked to guess a format, because its
guesses include playlists and concat scripts that open other files (and URLs) on the
server. libsndfile (soundfile) reads what training reads (wav, flac, ogg, mp3), so those
decode exactly as in training; webm, mp4, Ogg codecs libsndfile lacks and FLAC streams of
unknown length go to ffmpeg through PyAV, with the demuxer named explicitly. Every failure
is an `InputError` whose `code` says what was wrong, for the CLI's message and the HTTP
status.

Decoders stream: a second of samples at a time is checked and mixed down to mono, so
neither the file's bytes (WAV and FLAC are read from the file as they decode) nor its
channels are ever held whole. `decode_audio` keeps the mono samples in memory (uploads,
clips); `spool_audio` writes them to a temporary file that windows are read from, so a
recording of hours costs no more memory than a clip.
"""

from __future__ import annotations

import io
import re
import tempfile
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
import soundfile as sf

from ser.data.audio import AudioError

ACCEPTED = "WAV, FLAC, Ogg (Vorbis, Opus), WebM/Matroska, MP4/M4A and MP3"
NAMES = {"wav": "WAV", "flac": "FLAC", "ogg": "Ogg", "matroska": "WebM/Matroska",
         "mp4": "MP4/M4A", "mp3": "MP3"}
# libsndfile's major formats for the containers it reads; ffmpeg's demuxer for each kind
_SNDFILE = {"wav": ("WAV", "WAVEX", "RF64"), "flac": ("FLAC",), "ogg": ("OGG",),
            "mp3": ("MP3", "MPEG")}
_DEMUXER = {"flac": "flac", "ogg": "ogg", "matroska": "matroska", "mp4": "mp4", "mp3": "mp3"}
_DEMUXER_OPTIONS = {"mp4": {"enable_drefs": "0"}}  # never follow references to other files
MAX_AMPLITUDE = 1e3  # float PCM's full scale is 1.0; far beyond it is garbage, not audio


class InputError(AudioError):
    """Audio that can't be classified; `code` names the problem for machines."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


Source = bytes | Path  # a whole file's bytes, or a file to read


@dataclass(frozen=True)
class Decoded:
    """A recording decoded into memory: the mean of its channels, at its own rate."""

    samples: np.ndarray  # (frames,) float32
    sample_rate: int
    decoder: str  # "libsndfile" or "ffmpeg"
    format: str  # container/codec as the decoder names it
    channels: int = 1  # of the file; `samples` is their mean

    @property
    def frames(self) -> int:
        return len(self.samples)

    @property
    def duration(self) -> float:
        return self.frames / self.sample_rate

    def read(self, start: int, stop: int) -> np.ndarray:
        return self.samples[start:stop]


class Spooled:
    """A recording decoded into a temporary file of float32 mono samples, read by span.

    So a long recording costs disk, not memory: `read` brings in only the span asked for.
    The file is deleted when closed (a context manager closes it).
    """

    def __init__(self, file: BinaryIO, frames: int, sample_rate: int, decoder: str,
                 format: str, channels: int) -> None:
        self._file = file
        self.frames, self.sample_rate = frames, sample_rate
        self.decoder, self.format, self.channels = decoder, format, channels

    @property
    def duration(self) -> float:
        return self.frames / self.sample_rate

    def read(self, start: int, stop: int) -> np.ndarray:
        start, stop = max(0, start), min(stop, self.frames)
        if stop <= start:
            return np.zeros(0, np.float32)
        self._file.seek(start * 4)
        return np.fromfile(self._file, dtype=np.float32, count=stop - start)

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> Spooled:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


Audio = Decoded | Spooled  # what the predictor reads windows from


@dataclass(frozen=True)
class _Header:
    sample_rate: int
    decoder: str
    format: str
    channels: int


def decode_audio(source: Source, *, max_seconds: float | None = None) -> Decoded:
    """Decode a whole file (its bytes, or a path) into memory; raises `InputError`
    naming what was wrong."""
    header, chunks = _open_stream(source, max_seconds)
    parts = list(chunks)
    samples = parts[0] if len(parts) == 1 else np.concatenate(parts)
    return Decoded(samples, **asdict(header))


def spool_audio(source: Source, *, max_seconds: float | None = None,
                directory: str | Path | None = None) -> Spooled:
    """Decode a file into a temporary file (in `directory`, default the system's temporary
    folder) a second at a time: memory stays flat however long the recording is."""
    header, chunks = _open_stream(source, max_seconds)
    file = tempfile.TemporaryFile(dir=directory)  # unlinked at once: gone when closed
    frames = 0
    try:
        for chunk in chunks:
            file.write(chunk.tobytes())
            frames += len(chunk)
    except OSError as err:
        file.close()
        raise InputError("no_space", f"cannot keep the decoded audio in a temporary file "
                                     f"({err.strerror or err})") from None
    except BaseException:
        file.close()
        raise
    return Spooled(file, frames, **asdict(header))


def _open_stream(source: Source, max_seconds: float | None
                 ) -> tuple[_Header, Iterator[np.ndarray]]:
    """The recording's header and its mono float32 samples, a second at a time, each
    block checked; failures are `InputError`s, raised as the stream reaches them."""
    head = _prefix(source)
    if not head:
        raise InputError("empty", "no audio: the input is empty (0 bytes)")
    kind = sniff(head)
    if kind is None:
        raise InputError("unsupported_format", f"not a supported audio file: only {ACCEPTED} "
                                               "are read (recognised by their first bytes)")
    if kind in _STRUCTURE_CHECKS:  # compressed: small enough to hold, and needed whole
        source = _read_all(source)
        cut = _STRUCTURE_CHECKS[kind](source)
        if cut:
            raise InputError("truncated", f"the {NAMES[kind]} data is truncated: {cut}")
    if kind == "flac" and _flac_total_samples(head) == 0:
        stream = _ffmpeg_stream(source, kind, max_seconds)  # a stream of unknown length
    elif kind in _SNDFILE:
        try:
            stream = _sndfile_stream(source, kind, max_seconds)
        except _NotForSndfile:
            stream = _ffmpeg_stream(source, kind, max_seconds)
    else:
        stream = _ffmpeg_stream(source, kind, max_seconds)
    header = next(stream)  # the generators yield their header first, then the samples
    return header, _not_empty(stream, header.format)


def _not_empty(blocks: Iterator[np.ndarray], fmt: str) -> Iterator[np.ndarray]:
    """The blocks; `no_samples` at their end if they held no sample at all."""
    frames = 0
    for block in blocks:
        frames += len(block)
        yield block
    if frames == 0:
        raise InputError("no_samples", f"the {fmt} data holds no audio samples")


def _prefix(source: Source, size: int = 65536) -> bytes:
    """The first bytes, enough to sniff the container (past ID3 tags, however long)."""
    if isinstance(source, bytes):
        return source[:size]
    try:
        with open(source, "rb") as f:
            head = f.read(size)
            end = _id3_end(head)
            if end + 4096 > len(head) == size:  # a long tag: read past it
                head += f.read(end + 4096 - len(head))
            return head
    except OSError as err:
        raise _unreadable(err) from None


def _read_all(source: Source) -> bytes:
    if isinstance(source, bytes):
        return source
    try:
        return Path(source).read_bytes()
    except OSError as err:
        raise _unreadable(err) from None


def _open_binary(source: Source) -> BinaryIO:
    """A file object (never a name: ffmpeg would read `concat:` or `http:` as a protocol)."""
    if isinstance(source, bytes):
        return io.BytesIO(source)
    try:
        return open(source, "rb")  # noqa: SIM115 - the decoder's stream closes it
    except OSError as err:
        raise _unreadable(err) from None


def _unreadable(err: OSError) -> InputError:
    return InputError("unreadable", f"cannot read file ({err.strerror or err})")


def _mono(block: np.ndarray, channel_axis: int) -> np.ndarray:
    """The channels' mean, float32; a mono block as it is."""
    if block.shape[channel_axis] == 1:
        return np.ascontiguousarray(block.reshape(-1), dtype=np.float32)
    return block.mean(axis=channel_axis, dtype=np.float32)


def _check_samples(block: np.ndarray, fmt: str, channel_axis: int, start: int, rate: int
                   ) -> None:
    """NaN, infinity or absurd amplitudes would turn into NaN probabilities downstream.

    `block` starts at sample `start` of the recording (for the message)."""
    if not block.size:
        return
    peak = float(np.abs(block).max())
    if np.isfinite(peak) and peak <= MAX_AMPLITUDE:
        return
    bad = ~np.isfinite(block) if not np.isfinite(peak) else np.abs(block) > MAX_AMPLITUDE
    at = (start + int(np.flatnonzero(bad.any(axis=channel_axis))[0])) / rate
    if not np.isfinite(peak):
        raise InputError("bad_audio", f"the {fmt} audio holds non-finite samples (NaN, "
                                      f"infinity, or beyond float32's range), from {at:.3f} s")
    raise InputError("bad_audio", f"the {fmt} audio holds samples of amplitude {peak:.3g}, "
                                  f"over the {MAX_AMPLITUDE:g} limit (full scale is 1.0), from "
                                  f"{at:.3f} s")


# -- what the bytes are -----------------------------------------------------------------


def sniff(data: bytes) -> str | None:
    """The container kind its first bytes say (a key of `NAMES`), or None."""
    start = _id3_end(data)
    if start:  # an ID3v2 tag: MP3, or (rarely) a tagged FLAC
        return "flac" if data.startswith(b"fLaC", start) else "mp3"
    if data[:4] in (b"RIFF", b"RIFX", b"RF64") and data[8:12] == b"WAVE":
        return "wav"
    if data.startswith(b"fLaC"):
        return "flac"
    if data.startswith(b"OggS"):
        return "ogg"
    if data.startswith(b"\x1a\x45\xdf\xa3"):  # EBML
        return "matroska"
    if data[4:8] == b"ftyp":
        return "mp4"
    first = _mp3_frame(data, 0)
    if first and (len(data) < first[0] + 4 or _mp3_frame(data, first[0], first[1])):
        return "mp3"  # a frame header followed by another one
    return None


def _id3_end(data: bytes) -> int:
    """Where the audio starts after ID3v2 tags (0 without one; past the end if cut)."""
    pos = 0
    while data.startswith(b"ID3", pos) and len(data) >= pos + 10:
        size = 0
        for byte in data[pos + 6 : pos + 10]:  # "syncsafe": 7 bits a byte
            size = size << 7 | byte & 0x7F
        pos += 10 + size + (10 if data[pos + 5] & 0x10 else 0)  # header, tag, footer
    return pos


def _flac_total_samples(data: bytes) -> int | None:
    """STREAMINFO's 36-bit sample count (0: unknown, a stream written to a pipe)."""
    start = _id3_end(data) + 8  # "fLaC" and the metadata block header
    info = data[start + 10 : start + 18]
    return int.from_bytes(info, "big") & (2**36 - 1) if len(info) == 8 else None


# MPEG audio frame headers: kbit/s by (MPEG-1?, layer) and bitrate index; Hz by version
_MP3_KBPS = {
    (True, 1): (0, 32, 64, 96, 128, 160, 192, 224, 256, 288, 320, 352, 384, 416, 448),
    (True, 2): (0, 32, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320, 384),
    (True, 3): (0, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320),
    (False, 1): (0, 32, 48, 56, 64, 80, 96, 112, 128, 144, 160, 176, 192, 224, 256),
    (False, 2): (0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160),
}
_MP3_KBPS[(False, 3)] = _MP3_KBPS[(False, 2)]
_MP3_HZ = {3: (44100, 48000, 32000), 2: (22050, 24000, 16000), 0: (11025, 12000, 8000)}


def _mp3_frame(data: bytes, pos: int, stream: tuple | None = None) -> tuple[int, tuple] | None:
    """(length, stream signature) of a valid MPEG audio frame header at `pos`, else None;
    with `stream`, only a header of that stream (version, layer and rate never change)."""
    header = data[pos : pos + 4]
    if len(header) < 4 or header[0] != 0xFF or header[1] & 0xE0 != 0xE0:
        return None
    version, layer = header[1] >> 3 & 3, 4 - (header[1] >> 1 & 3)
    index, rate_index, padding = header[2] >> 4, header[2] >> 2 & 3, header[2] >> 1 & 1
    if version == 1 or layer == 4 or index in (0, 15) or rate_index == 3:
        return None  # reserved values (and free-format bitrate)
    signature = (version, layer, rate_index, header[3] >> 6 == 3)  # ..., mono
    if stream is not None and signature != stream:
        return None
    kbps, rate = _MP3_KBPS[(version == 3, layer)][index], _MP3_HZ[version][rate_index]
    if layer == 1:
        return (12000 * kbps // rate + padding) * 4, signature
    per_frame = 144000 if version == 3 or layer == 2 else 72000
    return per_frame * kbps // rate + padding, signature


# -- truncation visible in the bytes ------------------------------------------------------


def _mp3_cut(data: bytes) -> str | None:
    """The last frame incomplete, or fewer frames than the Xing/Info/VBRI header declares."""
    pos = _id3_end(data)
    if pos > len(data):
        return f"its ID3 tag declares {pos} bytes, only {len(data)} are present"
    pos = _mp3_sync(data, pos)
    if pos is None:
        return None  # no frames: the decoder will say so
    first, frames = pos, 0
    _, stream = _mp3_frame(data, pos)
    while (frame := _mp3_frame(data, pos, stream)) is not None:
        if pos + frame[0] > len(data):
            return (f"its last MPEG frame needs {frame[0]} bytes, only {len(data) - pos} are "
                    "present")
        pos, frames = pos + frame[0], frames + 1
    if 0 < len(data) - pos < 4 and data[pos] == 0xFF:
        return "it ends inside a frame header"
    declared = _mp3_declared_frames(data, first)
    # LAME does not count its header frame, others may: a frame of leeway either way
    if declared is not None and frames < declared:
        return f"{frames} MPEG frames present of the {declared} its header declares"
    return None


def _mp3_sync(data: bytes, pos: int, search: int = 65536) -> int | None:
    """The first frame header that another one follows, within `search` bytes of `pos`."""
    end = min(len(data), pos + search)
    while (pos := data.find(b"\xff", pos, end)) >= 0:
        frame = _mp3_frame(data, pos)
        if frame and (pos + frame[0] >= len(data) or _mp3_frame(data, pos + frame[0], frame[1])):
            return pos
        pos += 1
    return None


def _mp3_declared_frames(data: bytes, first: int) -> int | None:
    """The frame count of a Xing/Info (LAME) or VBRI (Fraunhofer) header in the first frame."""
    head = data[first : first + 200]
    for tag in (b"Xing", b"Info"):
        at = head.find(tag, 4, 40)
        if at > 0 and len(head) >= at + 12 and head[at + 7] & 1:  # flags: frame count
            return int.from_bytes(head[at + 8 : at + 12], "big")
    if head[36:40] == b"VBRI" and len(head) >= 54:
        return int.from_bytes(head[50:54], "big")
    return None


def _mp4_cut(data: bytes) -> str | None:
    """A top-level box (moov, mdat, moof, ...) that declares more bytes than are present."""
    pos = 0
    while pos < len(data):
        if pos + 8 > len(data):
            return f"it ends inside a box header at byte {pos}"
        size, header = int.from_bytes(data[pos : pos + 4], "big"), 8
        name = data[pos + 4 : pos + 8].decode("latin-1")
        if size == 1:  # a 64-bit size follows
            size, header = int.from_bytes(data[pos + 8 : pos + 16], "big"), 16
        if size == 0:
            return None  # "to the end of the file"
        if size < header:
            return None  # not a box structure: ffmpeg will say what it is
        if pos + size > len(data):
            return f"its {name!r} box declares {size} bytes, only {len(data) - pos} are present"
        pos += size
    return None


def _ogg_cut(data: bytes) -> str | None:
    """Unless the last Ogg page is complete and flagged end-of-stream."""
    last = data.rfind(b"OggS")
    if last < 0 or len(data) < last + 27:
        return "its last page is cut"
    n_segments = data[last + 26]
    table = data[last + 27 : last + 27 + n_segments]
    if len(table) < n_segments or last + 27 + n_segments + sum(table) > len(data):
        return "its last page is cut"
    if not data[last + 5] & 0x04:
        return "its last page is not the end of the stream"
    return None


_STRUCTURE_CHECKS = {"mp3": _mp3_cut, "mp4": _mp4_cut, "ogg": _ogg_cut}


# -- libsndfile -------------------------------------------------------------------------


class _NotForSndfile(Exception):
    """libsndfile does not read this codec: try ffmpeg."""


def _sndfile_stream(source: Source, kind: str, max_seconds: float | None
                    ) -> Iterator[_Header | np.ndarray]:
    """Its header, then mono blocks of a second; the file's header is checked first."""
    file = _open_binary(source)
    try:
        f = sf.SoundFile(file)
    except sf.LibsndfileError as err:
        file.close()
        reason = _sf_reason(err)
        if kind in ("ogg", "mp3") and re.search(r"not recognised|unknown|unsupported",
                                                reason, re.IGNORECASE):
            raise _NotForSndfile from None
        raise InputError("not_audio", f"not readable {NAMES[kind]} data: {reason}") from None
    return _sndfile_blocks(file, f, kind, max_seconds)


def _sndfile_blocks(file: BinaryIO, f: sf.SoundFile, kind: str, max_seconds: float | None
                    ) -> Iterator[_Header | np.ndarray]:
    with file, f:
        fmt = f"{f.format}/{f.subtype}".lower()
        if f.format not in _SNDFILE[kind]:
            raise InputError("not_audio", f"not readable {NAMES[kind]} data: libsndfile reads "
                                          f"it as {fmt}")
        declared = f.frames if f.frames < 2**62 else None  # 2**63 - 1: unknown
        if declared is not None:
            _check_length(declared / f.samplerate, max_seconds)
        _check_sndfile_header(f.extra_info, fmt)
        yield _Header(f.samplerate, "libsndfile", fmt, f.channels)
        frames = 0
        while len(block := _read_block(f, fmt)):  # a header's frame count may be absurd
            _check_samples(block, fmt, 1, frames, f.samplerate)
            frames += len(block)
            _check_length(frames / f.samplerate, max_seconds, decoding=True)
            yield _mono(block, channel_axis=1)
    if kind == "flac" and declared is not None and frames < declared:
        raise InputError("truncated", f"the {fmt} data is truncated: {frames} samples "
                                      f"decoded of the {declared} its header declares")


def _read_block(f: sf.SoundFile, fmt: str) -> np.ndarray:
    """The next second of frames (frames, channels)."""
    try:
        return f.read(max(f.samplerate, 1024), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError) as err:
        reason = _sf_reason(err)
        if "fseek" in reason:  # soundfile seeks past what it read: the data ran out
            reason = f"it ends before the {f.frames} samples its header declares"
        raise InputError("truncated", f"the {fmt} data is truncated or corrupt: {reason}") \
            from None


def _sf_reason(err: Exception) -> str:
    """libsndfile's words without the 'Error opening <_io.BufferedReader ...>:' prefix."""
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


# -- ffmpeg (PyAV) ----------------------------------------------------------------------

_FFMPEG_TRUNCATION = ("ended prematurely", "truncat", "invalid data", "error while decoding")


def _ffmpeg_stream(source: Source, kind: str, max_seconds: float | None
                   ) -> Iterator[_Header | np.ndarray]:
    """Its header, then mono blocks as ffmpeg decodes them (PyAV)."""
    import av  # imported on first use: ~0.1 s, and most inputs never need it
    import av.logging

    if av.logging.get_level() is None or av.logging.get_level() > av.logging.WARNING:
        av.logging.set_level(av.logging.WARNING)  # so ffmpeg's warnings reach the capture
    with av.logging.Capture(local=True) as logs, _open_binary(source) as file:
        try:  # the demuxer named, never probed: no playlists, no concat scripts
            container = av.open(file, mode="r", format=_DEMUXER[kind],
                                container_options=_DEMUXER_OPTIONS.get(kind, {}),
                                metadata_errors="replace")  # tags of any bytes
        except av.error.FFmpegError as err:
            raise InputError("not_audio", f"not readable {NAMES[kind]} data "
                                          f"({err.strerror or type(err).__name__})") from None
        with container:
            yield from _container_blocks(container, logs, max_seconds)


def _container_blocks(container, logs: list, max_seconds: float | None
                      ) -> Iterator[_Header | np.ndarray]:
    if not container.streams.audio:
        kinds = ", ".join(s.type for s in container.streams) or "no streams"
        raise InputError("not_audio", f"the {container.format.name} data has no audio stream "
                                      f"({kinds})")
    stream = container.streams.audio[0]
    if stream.codec_context is None:  # a codec id ffmpeg has no decoder for
        raise InputError("not_audio", f"the {container.format.name} data's audio stream has a "
                                      "codec that cannot be decoded")
    fmt = f"{container.format.name}/{stream.codec_context.name}"
    declared = container.duration / 1e6 if container.duration else None  # µs
    if declared is not None:
        _check_length(declared, max_seconds)
    if not stream.rate:
        raise InputError("not_audio", f"the {fmt} audio stream declares no sample rate")
    yield _Header(stream.rate, "ffmpeg", fmt, stream.codec_context.channels or 1)
    frames = 0
    for block in _decoded_frames(container, stream, fmt):
        _check_samples(block, fmt, 0, frames, stream.rate)
        frames += block.shape[1]
        _check_length(frames / stream.rate, max_seconds, decoding=True)
        yield _mono(block, channel_axis=0)
    _check_ffmpeg_truncation(logs, fmt, frames / stream.rate, declared)


def _decoded_frames(container, stream, fmt: str) -> Iterator[np.ndarray]:
    """Planar float blocks (channels, frames) at the stream's own rate; a decoder error
    partway is a cut or corrupt file."""
    import av

    resampler = av.AudioResampler(format="fltp")  # planar float, native rate and layout
    channels = None
    try:
        for frame in container.decode(stream):
            for out in resampler.resample(frame):
                block = out.to_ndarray()
                channels = channels or block.shape[0]
                if block.shape[0] != channels:
                    raise ValueError("the channel count changes")
                yield block
        for out in resampler.resample(None):
            yield out.to_ndarray()
    except InputError:
        raise  # too long (an InputError is a ValueError too)
    except (av.error.FFmpegError, ValueError) as err:
        reason = getattr(err, "strerror", None) or str(err)
        raise InputError("truncated", f"the {fmt} data is truncated or corrupt ({reason})") \
            from None


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


def _check_length(seconds: float, max_seconds: float | None, decoding: bool = False) -> None:
    """`decoding`: `seconds` is what has been decoded so far, not the whole length."""
    if max_seconds is None or seconds <= max_seconds:
        return
    if decoding:
        raise InputError("too_long", f"the recording is longer than the limit: over "
                                     f"{max_seconds:g} s (stopped decoding at {seconds:.1f} s)")
    raise InputError("too_long", f"the recording is longer than the limit: {seconds:.1f} s > "
                                 f"{max_seconds:g} s")


# -- is there anything to classify ------------------------------------------------------

FRAME_SECONDS = 0.025
FLOOR_DBFS = -70.0  # a frame quieter than this never counts as speech
LOUD_DBFS = -30.0  # a frame this loud always counts (a tone, speech over steady noise)
RISE_DB = 6.0  # ... otherwise a frame counts if it rises this far above the clip's floor
FLOOR_PERCENTILE = 2  # the clip's floor: its quietest frames
SPEECH_FRAMES = 8  # 0.2 s of counted frames


def frame_levels(mono: np.ndarray, sample_rate: int) -> np.ndarray:
    """RMS in dBFS of each whole 25 ms frame, each frame's own mean (DC) removed."""
    n = max(1, round(FRAME_SECONDS * sample_rate))
    frames = mono[: len(mono) // n * n].reshape(-1, n)
    power = np.empty(len(frames))
    for i in range(0, len(frames), 4096):  # float64 a block at a time: long recordings
        power[i : i + 4096] = frames[i : i + 4096].astype(np.float64).var(axis=1)
    return 10 * np.log10(np.maximum(power, 1e-20))


def audio_levels(audio: Audio, start: int = 0, frames_per_read: int = 4096) -> np.ndarray:
    """`frame_levels` of a decoded recording from sample `start`, read a block at a time
    (blocks of whole frames, so the levels are those of the samples read at once)."""
    step = max(1, round(FRAME_SECONDS * audio.sample_rate)) * frames_per_read
    blocks = [frame_levels(audio.read(s, s + step), audio.sample_rate)
              for s in range(max(0, start), audio.frames, step)]
    return np.concatenate(blocks) if blocks else np.zeros(0)


def check_not_silent(mono: np.ndarray, sample_rate: int | None = None) -> None:
    """Reject a recording without speech-like energy: silence, a DC offset, a quiet hum,
    steady noise. Speech rises and falls by tens of dB from frame to frame; those don't.

    A frame counts if it is above -70 dBFS and either reaches -30 dBFS or rises 6 dB above
    the recording's floor (its 2nd-percentile frame); 8 such frames (0.2 s) are needed.
    Every RAVDESS and TESS clip passes (smallest margin 2.3 dB, a TESS word cut by a 0.6 s
    offset; 13.8 dB for RAVDESS); white noise varies by about 2 dB between frames.
    `sample_rate` sets the 25 ms frames; without it frames are 400 samples (25 ms at 16 kHz).
    """
    check_levels(frame_levels(mono, sample_rate or 16000))


def check_levels(levels: np.ndarray) -> None:
    """`check_not_silent` on a recording's frame levels (`frame_levels`, `audio_levels`)."""
    loudest = float(levels.max()) if levels.size else -200.0
    if loudest < FLOOR_DBFS:
        level = f"{loudest:.0f} dBFS" if loudest > -200 else "digital silence"
        raise InputError("no_speech", f"no speech: the recording is silent (its loudest 25 ms "
                         f"frame, DC offset removed, is {level}; speech needs {FLOOR_DBFS:g} dBFS)")
    floor = max(float(np.percentile(levels, FLOOR_PERCENTILE)), -100.0)
    counted = (levels >= FLOOR_DBFS) & ((levels >= LOUD_DBFS) | (levels >= floor + RISE_DB))
    if np.count_nonzero(counted) < SPEECH_FRAMES:
        raise InputError(
            "no_speech", f"no speech: the recording is a steady sound around "
            f"{np.median(levels):.0f} dBFS (noise, a hum or a tone) - only "
            f"{np.count_nonzero(counted)} of its 25 ms frames rise {RISE_DB:g} dB above its "
            f"floor or reach {LOUD_DBFS:g} dBFS, speech gives at least {SPEECH_FRAMES}")
