"""Fetch and unpack the RAVDESS speech archive when it is not already on disk.

Only the standard library is used for HTTP (no ``requests``): downloads stream into a ``.part``
file that survives interruptions and is resumed with an HTTP Range request on the next call.
In multi-process training call :func:`ensure_ravdess` from one process only (e.g. Lightning's
``prepare_data``), since concurrent writers would share the same ``.part`` file.
"""

import hashlib
import http.client
import os
import re
import shutil
import sys
import tempfile
import urllib.error
import urllib.request
import zipfile
from pathlib import Path
from typing import BinaryIO

from tqdm import tqdm

RAVDESS_RECORD_URL = "https://zenodo.org/records/1188976"
RAVDESS_ARCHIVE = "Audio_Speech_Actors_01-24.zip"
RAVDESS_URL = f"{RAVDESS_RECORD_URL}/files/{RAVDESS_ARCHIVE}?download=1"
# Zenodo's listed md5 for this file; size and md5 agree across several projects that verified
# their downloads. The archive holds 1440 WAV files under Actor_01/ .. Actor_24/.
RAVDESS_SIZE = 208_468_073
RAVDESS_MD5 = "bc696df654c87fed845eb13823edef8a"

AUDIO_SUFFIXES = (".wav", ".flac")
DEFAULT_CHUNK_SIZE = 1 << 20
DEFAULT_TIMEOUT_S = 60.0
_USER_AGENT = "ser-dataset-downloader/1.0 (+python-urllib)"


class DownloadError(RuntimeError):
    """A download failed or produced a file that does not match its expected size/checksum."""


class NetworkError(DownloadError):
    """The server could not be reached or the transfer broke off; the ``.part`` file is kept."""


class UnsafeArchiveError(ValueError):
    """An archive member would be written outside the extraction folder (zip slip)."""


class DatasetNotFoundError(FileNotFoundError):
    """The dataset is not on disk and was not (or could not be) downloaded."""


class _RangeNotSatisfiableError(Exception):
    """HTTP 416: the requested resume offset is at or past the end of the remote file."""

    def __init__(self, total: int | None) -> None:
        super().__init__(total)
        self.total = total


# --------------------------------------------------------------------------- download


def download_file(
    url: str,
    dest: Path,
    *,
    expected_size: int | None = None,
    md5: str | None = None,
    progress: bool = True,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    timeout: float = DEFAULT_TIMEOUT_S,
) -> Path:
    """Download ``url`` to ``dest``, resuming a previous ``.part`` file, and verify it.

    ``dest`` only appears (atomic rename) once size and md5 checks pass. A checksum or size
    mismatch deletes the part file and raises :class:`DownloadError`; a network failure raises
    :class:`NetworkError` and keeps the part file so the next call resumes it.
    """
    dest = Path(dest)
    if dest.exists():
        try:  # a finished download from an earlier run: reuse it if it is still intact
            _verify(dest, url, expected_size, md5)
            return dest
        except DownloadError:
            dest.unlink()
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_suffix(dest.suffix + ".part")
    _fetch(url, part, expected_size, progress, chunk_size, timeout)
    try:
        _verify(part, url, expected_size, md5)
    except DownloadError:
        part.unlink(missing_ok=True)  # corrupt bytes cannot be resumed; start over next time
        raise
    os.replace(part, dest)
    return dest


def _fetch(
    url: str,
    part: Path,
    expected_size: int | None,
    progress: bool,
    chunk_size: int,
    timeout: float,
) -> None:
    """Bring ``part`` up to the full remote content, appending where the server allows it."""
    offset = part.stat().st_size if part.exists() else 0
    if expected_size is not None and offset > expected_size:
        offset = 0  # longer than the real file: cannot be a prefix of it
    try:
        response = _open(url, offset, timeout)
    except _RangeNotSatisfiableError as exc:
        if _already_complete(offset, exc.total, expected_size):
            return  # the part file already holds every byte; _verify decides if they are right
        part.unlink(missing_ok=True)
        offset = 0
        response = _open(url, 0, timeout)
    with response:
        start, total = _response_span(response, offset)
        if start > offset:
            raise NetworkError(
                f"{url}: server resumed at byte {start}, but only {offset} are on disk"
            )
        _stream(response, part, start, total, url, progress, chunk_size)


def _open(url: str, offset: int, timeout: float) -> http.client.HTTPResponse:
    headers = {"User-Agent": _USER_AGENT}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    request = urllib.request.Request(url, headers=headers)
    try:
        return urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and offset:
            exc.close()
            raise _RangeNotSatisfiableError(
                _content_range_total(exc.headers.get("Content-Range"))
            ) from exc
        # Overload/outage answers are transient like a lost connection: keep the part file.
        error = NetworkError if exc.code == 429 or exc.code >= 500 else DownloadError
        raise error(f"Downloading {url} failed: HTTP {exc.code} {exc.reason}") from exc
    except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
        reason = getattr(exc, "reason", None) or exc
        raise NetworkError(f"network error while connecting to {url}: {reason}") from exc


def _already_complete(offset: int, remote_total: int | None, expected_size: int | None) -> bool:
    if remote_total is not None:
        return remote_total == offset
    # No Content-Range on the 416: trust the part file unless it contradicts the known size.
    return expected_size is None or expected_size == offset


def _response_span(response: http.client.HTTPResponse, offset: int) -> tuple[int, int | None]:
    """Return (byte offset the body starts at, total remote size if known)."""
    length = response.headers.get("Content-Length")
    body_len = int(length) if length and length.isdigit() else None
    if offset and response.status == 206:
        match = re.match(r"bytes (\d+)-\d+/(\d+|\*)", response.headers.get("Content-Range", ""))
        start = int(match.group(1)) if match else offset
        if match and match.group(2) != "*":
            return start, int(match.group(2))
        return start, None if body_len is None else start + body_len
    # 200 means the server ignored (or never got) our Range header: the body is the whole file.
    return 0, body_len


def _content_range_total(header: str | None) -> int | None:
    match = re.match(r"bytes \*/(\d+)", header or "")
    return int(match.group(1)) if match else None


def _stream(
    response: http.client.HTTPResponse,
    part: Path,
    start: int,
    total: int | None,
    url: str,
    progress: bool,
    chunk_size: int,
) -> None:
    # "r+b" + truncate keeps the first `start` bytes and drops anything after them.
    mode = "r+b" if start and part.exists() else "wb"
    with (
        part.open(mode) as out,
        tqdm(
            total=total,
            initial=start,
            unit="B",
            unit_scale=True,
            unit_divisor=1024,
            desc=part.name.removesuffix(".part"),
            disable=not progress,
        ) as bar,
    ):
        out.seek(start)
        out.truncate()
        written = _copy(response, out, bar, url, part, chunk_size)
    # http.client silently returns b"" when a connection drops mid-body; catch it here so the
    # partial file is kept for resuming instead of failing the checksum and being deleted.
    if total is not None and start + written < total:
        raise NetworkError(
            f"connection to {url} closed after {start + written} of {total} bytes; "
            f"partial download kept at {part}, run again to resume"
        )


def _copy(
    response: http.client.HTTPResponse,
    out: BinaryIO,
    bar: tqdm,
    url: str,
    part: Path,
    chunk_size: int,
) -> int:
    written = 0
    try:
        while chunk := response.read(chunk_size):
            out.write(chunk)
            written += len(chunk)
            bar.update(len(chunk))
    except (OSError, http.client.HTTPException) as exc:
        raise NetworkError(
            f"network error while downloading {url}: {exc}; "
            f"partial download kept at {part}, run again to resume"
        ) from exc
    return written


def _verify(path: Path, url: str, expected_size: int | None, md5: str | None) -> None:
    size = path.stat().st_size
    if expected_size is not None and size != expected_size:
        raise DownloadError(
            f"Size mismatch for {url}: expected {expected_size} bytes, got {size} bytes"
        )
    if md5 is not None:
        actual = file_md5(path)
        if actual != md5.lower():
            raise DownloadError(f"MD5 mismatch for {url}: expected {md5.lower()}, got {actual}")


def file_md5(path: Path, chunk_size: int = DEFAULT_CHUNK_SIZE) -> str:
    digest = hashlib.md5(usedforsecurity=False)  # integrity check only; keeps FIPS builds happy
    with Path(path).open("rb") as fh:
        while chunk := fh.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


# --------------------------------------------------------------------------- extract


def extract_zip(archive: Path, target: Path) -> None:
    """Extract ``archive`` so that ``target`` appears only once every member is written.

    Members go to a hidden sibling temp folder that is renamed to ``target`` at the end, so an
    interrupted run never leaves a half-filled ``target``. ``target`` must be absent or empty.
    Members that would land outside the folder raise :class:`UnsafeArchiveError`.
    """
    target = Path(target)
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise FileExistsError(f"Cannot extract {archive}: {target} exists and is not empty")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".partial", dir=target.parent))
    try:
        with zipfile.ZipFile(archive) as zf:
            _check_members(zf, tmp)
            zf.extractall(tmp)
        if target.exists():
            target.rmdir()  # empty (checked above); Windows cannot rename onto a directory
        tmp.rename(target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _check_members(zf: zipfile.ZipFile, root: Path) -> None:
    # zipfile.extractall already strips ".." and leading "/", which would silently misplace
    # files; refuse such archives outright instead.
    base = root.resolve()
    for name in zf.namelist():
        resolved = (base / name).resolve()
        if name.startswith(("/", "\\")) or ":" in name or not resolved.is_relative_to(base):
            raise UnsafeArchiveError(f"Refusing to extract {name!r}: it points outside {root}")


# --------------------------------------------------------------------------- RAVDESS


def has_ravdess_audio(root: Path) -> bool:
    """True if ``root`` holds at least one ``Actor_*`` folder containing .wav/.flac files."""
    root = Path(root)
    if not root.is_dir():
        return False
    return any(
        actor.is_dir() and any(f.suffix.lower() in AUDIO_SUFFIXES for f in actor.iterdir())
        for actor in root.glob("Actor_*")
    )


def ensure_ravdess(
    data_dir: Path,
    *,
    download: bool | None = None,
    url: str = RAVDESS_URL,
    progress: bool = True,
    expected_size: int | None = RAVDESS_SIZE,
    md5: str | None = RAVDESS_MD5,
) -> Path:
    """Return ``data_dir/"ravdess"``, downloading and extracting it first if allowed.

    ``download=None`` asks on an interactive terminal and declines otherwise. The default size and
    md5 are those of the official archive; pass ``None`` for a URL serving a different file.
    """
    data_dir = Path(data_dir).expanduser()
    root = data_dir / "ravdess"
    if has_ravdess_audio(root):
        return root
    if download is None:
        download = _ask_to_download(root)
    if not download:
        raise DatasetNotFoundError(_missing_message(data_dir, url))
    archive = data_dir / "downloads" / RAVDESS_ARCHIVE
    try:
        download_file(url, archive, expected_size=expected_size, md5=md5, progress=progress)
    except NetworkError as exc:
        raise DatasetNotFoundError(
            f"{_missing_message(data_dir, url)}\n\nAutomatic download failed ({exc})."
        ) from exc
    extract_zip(archive, root)
    if not has_ravdess_audio(root):
        raise DatasetNotFoundError(
            f"{archive} was extracted to {root} but holds no Actor_*/ audio files.\n\n"
            f"{_missing_message(data_dir, url)}"
        )
    return root


def _ask_to_download(root: Path) -> bool:
    # Never block a batch job, CI run or worker waiting for an answer nobody can give.
    if sys.stdin is None or not sys.stdin.isatty():
        return False
    question = f"RAVDESS not found in {root}. Download it from Zenodo now (~208 MB)? [y/N] "
    try:
        answer = input(question)
    except EOFError:
        return False
    return answer.strip().lower() in {"y", "yes"}


def _missing_message(data_dir: Path, url: str) -> str:
    root = data_dir / "ravdess"
    return (
        f"RAVDESS speech audio was not found in {root}.\n"
        f"Expected layout (1440 files, EE=emotion II=intensity SS=statement RR=repetition "
        f"AA=actor):\n"
        f"    {root}/Actor_01/03-01-EE-II-SS-RR-AA.wav\n"
        f"    ...\n"
        f"    {root}/Actor_24/03-01-EE-II-SS-RR-AA.wav\n"
        f"Download {RAVDESS_ARCHIVE} (~208 MB) from {url}\n"
        f"(record page {RAVDESS_RECORD_URL}) and unzip it into {root}, "
        f"or allow the automatic download.\n"
        f"If the data lives elsewhere, set SER_DATA_DIR=/path/to/data or pass "
        f"paths.data_dir=/path/to/data (the folder containing ravdess/)."
    )
