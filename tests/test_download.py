"""Tests for ser.data.download against a loopback HTTP server (no real network)."""

import hashlib
import io
import re
import socket
import threading
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from ser.data import download as dl
from ser.data.download import (
    DatasetNotFoundError,
    DownloadError,
    UnsafeArchiveError,
    download_file,
    ensure_ravdess,
    extract_zip,
)

WAV_NAMES = ("Actor_01/03-01-01-01-01-01-01.wav", "Actor_01/03-01-05-02-01-01-01.wav")


def make_zip(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in members.items():
            zf.writestr(zipfile.ZipInfo(name), data)
    return buf.getvalue()


# Padding makes the archive large enough to be split into several chunks and halves.
PAYLOAD = make_zip({**{n: b"RIFF" + bytes(8) for n in WAV_NAMES}, "README.txt": bytes(4000)})
PAYLOAD_MD5 = hashlib.md5(PAYLOAD).hexdigest()


@dataclass
class Server:
    """Serves ``payload`` at any path; ``mode`` selects how it treats Range requests."""

    payload: bytes = PAYLOAD
    mode: str = "range"  # "range" | "ignore-range" | "truncate" | "unavailable"
    ranges: list[str | None] = field(default_factory=list)
    base_url: str = ""

    @property
    def url(self) -> str:
        return f"{self.base_url}/{dl.RAVDESS_ARCHIVE}"


def _handler(state: Server) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:  # keep pytest output quiet
            pass

        def do_GET(self) -> None:
            data, rng = state.payload, self.headers.get("Range")
            state.ranges.append(rng)
            if state.mode == "unavailable":
                self.send_error(503)
                return
            match = re.fullmatch(r"bytes=(\d+)-", rng or "")
            if match and state.mode != "ignore-range":
                start = int(match.group(1))
                if start >= len(data):
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{len(data)}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(206)
                self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
            else:
                start = 0
                self.send_response(200)
            body = data[start:]
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if state.mode == "truncate":  # simulate a dropped connection halfway through
                self.wfile.write(body[: len(body) // 2])
                self.close_connection = True
                return
            self.wfile.write(body)

    return Handler


@pytest.fixture
def server() -> Iterator[Server]:
    state = Server()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    state.base_url = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield state
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


@pytest.fixture
def closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/{dl.RAVDESS_ARCHIVE}"


def fetch(server: Server, dest: Path, **kwargs: object) -> Path:
    opts: dict = {"expected_size": len(PAYLOAD), "md5": PAYLOAD_MD5, "progress": False}
    opts.update(kwargs)
    return download_file(server.url, dest, chunk_size=512, timeout=5, **opts)


def part_of(dest: Path) -> Path:
    return dest.with_name(dest.name + ".part")


# --------------------------------------------------------------------------- download_file


def test_full_download_checks_size_and_md5(server: Server, tmp_path: Path) -> None:
    dest = tmp_path / "dl" / "a.zip"
    assert fetch(server, dest) == dest
    assert dest.read_bytes() == PAYLOAD
    assert not part_of(dest).exists()
    assert server.ranges == [None]


def test_resume_sends_range_and_yields_identical_file(server: Server, tmp_path: Path) -> None:
    dest = tmp_path / "a.zip"
    half = len(PAYLOAD) // 2
    part_of(dest).write_bytes(PAYLOAD[:half])
    fetch(server, dest, progress=True)  # also exercises the tqdm bar starting at `half`
    assert server.ranges == [f"bytes={half}-"]
    assert dest.read_bytes() == PAYLOAD
    assert not part_of(dest).exists()


def test_dropped_connection_keeps_part_then_resumes(server: Server, tmp_path: Path) -> None:
    dest = tmp_path / "a.zip"
    server.mode = "truncate"
    with pytest.raises(DownloadError, match="resume"):
        fetch(server, dest)
    partial = part_of(dest).read_bytes()
    assert 0 < len(partial) < len(PAYLOAD)
    assert PAYLOAD.startswith(partial)
    assert not dest.exists()

    server.mode = "range"
    fetch(server, dest)
    assert server.ranges[-1] == f"bytes={len(partial)}-"
    assert dest.read_bytes() == PAYLOAD


def test_checksum_mismatch_raises_and_removes_part(server: Server, tmp_path: Path) -> None:
    dest = tmp_path / "a.zip"
    with pytest.raises(DownloadError) as err:
        fetch(server, dest, md5="0" * 32)
    msg = str(err.value)
    assert server.url in msg
    assert "0" * 32 in msg
    assert PAYLOAD_MD5 in msg
    assert not part_of(dest).exists()
    assert not dest.exists()


def test_size_mismatch_raises_and_removes_part(server: Server, tmp_path: Path) -> None:
    dest = tmp_path / "a.zip"
    with pytest.raises(DownloadError) as err:
        fetch(server, dest, expected_size=len(PAYLOAD) + 1, md5=None)
    assert str(len(PAYLOAD) + 1) in str(err.value)
    assert str(len(PAYLOAD)) in str(err.value)
    assert not part_of(dest).exists()
    assert not dest.exists()


def test_server_ignoring_range_restarts_cleanly(server: Server, tmp_path: Path) -> None:
    server.mode = "ignore-range"
    dest = tmp_path / "a.zip"
    part_of(dest).write_bytes(PAYLOAD[:100])
    fetch(server, dest)
    assert server.ranges == ["bytes=100-"]
    assert dest.read_bytes() == PAYLOAD


def test_complete_part_answered_with_416_is_accepted(server: Server, tmp_path: Path) -> None:
    dest = tmp_path / "a.zip"
    part_of(dest).write_bytes(PAYLOAD)
    fetch(server, dest)
    assert server.ranges == [f"bytes={len(PAYLOAD)}-"]
    assert dest.read_bytes() == PAYLOAD


def test_oversized_part_is_discarded(server: Server, tmp_path: Path) -> None:
    dest = tmp_path / "a.zip"
    part_of(dest).write_bytes(PAYLOAD + b"junk")
    fetch(server, dest)
    assert server.ranges == [None]
    assert dest.read_bytes() == PAYLOAD


def test_oversized_part_without_known_size_restarts_after_416(
    server: Server, tmp_path: Path
) -> None:
    dest = tmp_path / "a.zip"
    part_of(dest).write_bytes(PAYLOAD + b"junk")
    fetch(server, dest, expected_size=None)
    assert server.ranges == [f"bytes={len(PAYLOAD) + 4}-", None]
    assert dest.read_bytes() == PAYLOAD


def test_server_outage_is_a_network_error_and_keeps_part(server: Server, tmp_path: Path) -> None:
    server.mode = "unavailable"
    dest = tmp_path / "a.zip"
    part_of(dest).write_bytes(PAYLOAD[:10])
    with pytest.raises(dl.NetworkError, match="503"):
        fetch(server, dest)
    assert part_of(dest).read_bytes() == PAYLOAD[:10]


def test_existing_valid_file_is_not_downloaded_again(server: Server, tmp_path: Path) -> None:
    dest = tmp_path / "a.zip"
    dest.write_bytes(PAYLOAD)
    fetch(server, dest)
    assert server.ranges == []


def test_unreachable_server_raises_network_error(closed_port_url: str, tmp_path: Path) -> None:
    dest = tmp_path / "a.zip"
    part_of(dest).write_bytes(b"keep me")
    with pytest.raises(dl.NetworkError, match="network"):
        download_file(closed_port_url, dest, progress=False, timeout=5)
    assert part_of(dest).read_bytes() == b"keep me"


# --------------------------------------------------------------------------- extract_zip


def test_extract_zip(tmp_path: Path) -> None:
    archive = tmp_path / "a.zip"
    archive.write_bytes(PAYLOAD)
    extract_zip(archive, tmp_path / "out")
    assert (tmp_path / "out" / WAV_NAMES[0]).read_bytes() == b"RIFF" + bytes(8)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.zip", "out"]


@pytest.mark.parametrize("evil", ["../evil.wav", "Actor_01/../../evil.wav", "/tmp/evil.wav"])
def test_zip_slip_member_rejected(tmp_path: Path, evil: str) -> None:
    archive = tmp_path / "evil.zip"
    archive.write_bytes(make_zip({WAV_NAMES[0]: b"ok", evil: b"pwned"}))
    work = tmp_path / "work"
    work.mkdir()
    with pytest.raises(UnsafeArchiveError):
        extract_zip(archive, work / "out")
    assert list(work.iterdir()) == []  # neither the target nor a temp folder is left behind
    assert not (tmp_path / "evil.wav").exists()


def test_extract_refuses_non_empty_target(tmp_path: Path) -> None:
    archive = tmp_path / "a.zip"
    archive.write_bytes(PAYLOAD)
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "other.txt").write_text("x")
    with pytest.raises(FileExistsError):
        extract_zip(archive, tmp_path / "out")


# --------------------------------------------------------------------------- ensure_ravdess


def ensure(server: Server, data_dir: Path, **kwargs: object) -> Path:
    opts: dict = {"url": server.url, "progress": False, "expected_size": len(PAYLOAD)}
    opts.update({"md5": PAYLOAD_MD5, **kwargs})
    return ensure_ravdess(data_dir, **opts)


def test_ensure_ravdess_downloads_and_extracts(server: Server, tmp_path: Path) -> None:
    root = ensure(server, tmp_path, download=True)
    assert root == tmp_path / "ravdess"
    assert (root / WAV_NAMES[1]).is_file()
    assert (tmp_path / "downloads" / dl.RAVDESS_ARCHIVE).read_bytes() == PAYLOAD
    # Second call finds the data and touches no network.
    assert ensure(server, tmp_path, download=False) == root
    assert len(server.ranges) == 1


def test_ensure_ravdess_accepts_existing_flac(tmp_path: Path) -> None:
    actor = tmp_path / "ravdess" / "Actor_07"
    actor.mkdir(parents=True)
    (actor / "03-01-01-01-01-01-07.flac").write_bytes(b"fLaC")
    assert ensure_ravdess(tmp_path, download=False) == tmp_path / "ravdess"


def test_ensure_ravdess_without_download_explains_layout(tmp_path: Path) -> None:
    with pytest.raises(DatasetNotFoundError) as err:
        ensure_ravdess(tmp_path, download=False)
    msg = str(err.value)
    assert str(tmp_path / "ravdess") in msg
    assert "SER_DATA_DIR" in msg
    assert "paths.data_dir=" in msg
    assert "Actor_01" in msg
    assert dl.RAVDESS_URL in msg
    assert isinstance(err.value, FileNotFoundError)


def test_ensure_ravdess_offline_reports_network(closed_port_url: str, tmp_path: Path) -> None:
    with pytest.raises(DatasetNotFoundError) as err:
        ensure_ravdess(tmp_path, download=True, url=closed_port_url, progress=False)
    msg = str(err.value)
    assert "network" in msg
    assert "SER_DATA_DIR" in msg
    assert str(tmp_path) in msg


def test_ensure_ravdess_non_tty_does_not_prompt(
    server: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO("y\n"))  # StringIO.isatty() is False
    monkeypatch.setattr("builtins.input", lambda _: pytest.fail("must not prompt"))
    with pytest.raises(DatasetNotFoundError):
        ensure(server, tmp_path)
    assert server.ranges == []


@pytest.mark.parametrize(("answer", "downloads"), [("y", True), ("", False), ("no", False)])
def test_ensure_ravdess_tty_prompt(
    server: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, answer: str, downloads: bool
) -> None:
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    prompts: list[str] = []
    monkeypatch.setattr("sys.stdin", Tty())
    monkeypatch.setattr("builtins.input", lambda q: prompts.append(q) or answer)
    if downloads:
        assert (ensure(server, tmp_path) / WAV_NAMES[0]).is_file()
    else:
        with pytest.raises(DatasetNotFoundError):
            ensure(server, tmp_path)
    assert len(prompts) == 1
    assert "208 MB" in prompts[0]
    assert "[y/N]" in prompts[0]
