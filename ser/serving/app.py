"""FastAPI app: a record/upload page and a JSON prediction API for one trained model.

    ser-serve CKPT_OR_ONNX [--host 127.0.0.1] [--port 8000]

POST /api/predict takes the raw audio as the request body (what MediaRecorder or a file
input gives, with its content type) and answers the prediction as JSON (`?segments=1`: an
emotion timeline of the recording's speech segments). Bad input gets
`{"error": code, "detail": message}` with a 4xx status, never a made-up emotion. Only
requests for the host names it serves are answered (421 otherwise: no DNS rebinding).

For a speaker-normalised model, POST /api/enrol adds a clip of the visitor's own voice
(audio only) to their enrolment, DELETE /api/enrol forgets it. Enrolments live in memory
only, per browser session (an unguessable id in an HttpOnly, SameSite=Strict cookie),
bounded in number, clips and time; a request is answered with its own session's
statistics through a per-request copy of the predictor, never by changing the shared one.
"""

from __future__ import annotations

import argparse
import ipaddress
import logging
import math
import secrets
import sys
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import anyio
import numpy as np
from fastapi import FastAPI, Request, Response
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles

from ser.data.audio import AudioError, resample
from ser.serving import segments as timeline
from ser.serving.decode import InputError, check_not_silent, decode_audio
from ser.serving.predict import Prediction, Predictor

log = logging.getLogger(__name__)
STATIC = Path(__file__).parent / "static"
# containers MediaRecorder, <input type=file> and curl send for audio; the decoder sniffs
# the actual format, so the type only has to say "audio" (or "unknown bytes")
AUDIO_TYPES = ("audio/",)
OTHER_AUDIO_TYPES = frozenset({
    "video/webm", "video/ogg", "video/mp4", "video/quicktime", "application/ogg",
    "application/octet-stream",
})
# InputError codes that are not 422 (Unprocessable Content)
STATUS = {"empty": 400, "too_long": 413, "unsupported_format": 415}
LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "[::1]"})
SESSION_COOKIE = "ser_session"
MIN_ENROL_CLIPS = 2  # Predictor.enrolment_statistics needs two clips for a spread


@dataclass(frozen=True)
class Limits:
    max_bytes: int = 10 * 1024 * 1024  # request body
    max_seconds: float = 60.0  # decoded recording
    concurrency: int = 2  # predictions at once; more wait (the CPU is the limit anyway)
    # enrolment, kept in memory: at most sessions x clips x seconds of audio at the model's
    # rate (16 x 8 x 15 s at 16 kHz, float32: 123 MB)
    sessions: int = 16  # visitors enrolled at once; the least recently used is forgotten
    enrol_clips: int = 8  # clips per visitor
    enrol_seconds: float = 15.0  # longest enrolment clip
    session_ttl: float = 1800.0  # s unused before a visitor's enrolment is forgotten

    def __post_init__(self) -> None:
        # 0 predictions at once would make every request (and shutdown) wait forever
        for name in ("max_bytes", "max_seconds", "concurrency", "sessions", "enrol_clips",
                     "enrol_seconds", "session_ttl"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"Limits.{name} must be positive, got {value}")


class ApiError(Exception):
    def __init__(self, status: int, code: str, detail: str) -> None:
        super().__init__(detail)
        self.status, self.code, self.detail = status, code, detail


@dataclass(frozen=True)
class HostPolicy:
    """The Host headers the server answers. A page on loopback must not answer a DNS name
    that an attacker's site has pointed at 127.0.0.1 (DNS rebinding): the browser would
    treat the server as part of that site."""

    names: frozenset[str]
    any_address: bool = False  # bound to all interfaces: any IP literal (no DNS to rebind)

    @classmethod
    def serving(cls, host: str, extra: Iterable[str] = ()) -> HostPolicy:
        """The bound host, `extra` names, and localhost/127.0.0.1/[::1] on loopback."""
        names = {n for n in map(host_name, [host, *extra]) if n}
        if _is_loopback(host):
            names |= LOOPBACK_NAMES
        return cls(frozenset(names), any_address=host in ("0.0.0.0", "::", ""))

    def allows(self, header: str | None) -> bool:
        name = host_name(header) if header else None
        if name is None:
            return False
        return name in self.names or (self.any_address and _is_address(name.strip("[]")))


def host_name(value: str) -> str | None:
    """A Host header's (or bind address's) name, lower case, without port; IPv6 in
    brackets: 'LocalHost:8000' -> 'localhost', '::1' -> '[::1]'. None if malformed."""
    value = value.strip().lower()
    if value.startswith("["):
        name, _, port = value[1:].partition("]")
        if port and not (port.startswith(":") and port[1:].isdigit()):
            return None
        return f"[{name}]"
    if value.count(":") > 1:  # a bare IPv6 address
        return f"[{value}]"
    name, colon, port = value.partition(":")
    if colon and not port.isdigit():
        return None
    return name.rstrip(".") or None


class _HostCheck:
    """ASGI middleware: a request for a host the server does not serve is answered 421
    before any route runs (and before its body is read)."""

    def __init__(self, app: Callable, policy: HostPolicy) -> None:
        self.app, self.policy = app, policy

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] == "http":
            host = next((v.decode("latin-1") for k, v in scope["headers"] if k == b"host"), None)
            if not self.policy.allows(host):
                await _host_error(host, self.policy)(scope, receive, send)
                return
        await self.app(scope, receive, send)


def _host_error(host: str | None, policy: HostPolicy) -> JSONResponse:
    served = ", ".join(sorted(policy.names)) + (" or an IP address" if policy.any_address else "")
    if host is None:
        return _error(400, "bad_host", f"the request has no Host header; this server answers "
                                       f"for {served}")
    return _error(421, "bad_host", f"this server does not answer for host {host[:100]!r}, "
                                   f"only for {served}")


@dataclass
class Enrolment:
    """One visitor's clips (mono at the model's rate) and the statistics made from them.

    `state` is replaced whole, so a request reads clips and statistics that belong
    together; `lock` lets one enrolment change at a time (a double click)."""

    state: tuple[tuple[tuple[str, np.ndarray, int], ...], Any] = ((), None)
    used: float = 0.0
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def clips(self) -> int:
        return len(self.state[0])

    def describe(self) -> dict[str, Any]:
        return {**_mode(self.state), "clips": self.clips}


class Enrolments:
    """Visitors' enrolments, in memory only: at most `size` (the least recently used is
    dropped first), each forgotten `ttl` s after its last use. Thread-safe."""

    def __init__(self, size: int, ttl: float, clock: Callable[[], float] = time.monotonic
                 ) -> None:
        self.size, self.ttl, self.clock = size, ttl, clock
        self._items: OrderedDict[str, Enrolment] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, sid: str | None) -> Enrolment | None:
        with self._lock:
            self._expire()
            item = self._items.get(sid) if sid else None
            if item is not None:
                item.used = self.clock()
                self._items.move_to_end(sid)
            return item

    def add(self, item: Enrolment) -> str:
        """Keep a new session under a fresh 256-bit id (a client's own id is never
        adopted); the least recently used goes if the store is full."""
        sid = secrets.token_urlsafe(32)
        with self._lock:
            self._expire()
            while len(self._items) >= self.size:
                self._items.popitem(last=False)
            item.used = self.clock()
            self._items[sid] = item
        return sid

    def drop(self, sid: str | None) -> None:
        with self._lock:
            self._items.pop(sid or "", None)

    def __len__(self) -> int:
        with self._lock:
            self._expire()
            return len(self._items)

    def _expire(self) -> None:
        now = self.clock()
        while self._items and now - next(iter(self._items.values())).used > self.ttl:
            self._items.popitem(last=False)


def _mode(state: tuple[tuple, Any]) -> dict[str, Any]:
    """Which statistics answer: the visitor's (with how many clips) or the training pool's."""
    clips, stats = state
    if stats is None:
        return {"mode": "training_statistics", "enrolled_clips": 0}
    return {"mode": "enrolled", "enrolled_clips": len(clips)}


def create_app(
    predictor: Predictor, limits: Limits | None = None, hosts: HostPolicy | None = None
) -> FastAPI:
    """The page and the API; `hosts` defaults to the loopback names."""
    limits = limits or Limits()
    predictor.warm_up()
    timeline.warm_up()
    app = FastAPI(title="ser", docs_url=None, redoc_url=None)
    app.add_middleware(_HostCheck, policy=hosts or HostPolicy.serving("127.0.0.1"))
    app.state.predictor, app.state.limits = predictor, limits
    app.state.limiter = None  # an anyio CapacityLimiter, made inside the event loop
    enrolments = app.state.enrolments = Enrolments(limits.sessions, limits.session_ttl)
    uses_enrolment = predictor.pipeline.uses_enrolment
    _add_error_handlers(app)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    async def in_worker(fn: Callable[[], Any]) -> Any:
        if app.state.limiter is None:
            app.state.limiter = anyio.CapacityLimiter(limits.concurrency)
        return await anyio.to_thread.run_sync(fn, limiter=app.state.limiter)

    def session_of(request: Request) -> Enrolment | None:
        return enrolments.get(request.cookies.get(SESSION_COOKIE)) if uses_enrolment else None

    def require_enrolment() -> None:
        if not uses_enrolment:
            raise ApiError(409, "enrolment_not_used", "this model was not trained with "
                           "speaker normalisation: it has no use for enrolment clips")

    @app.get("/", include_in_schema=False)
    def index() -> FileResponse:
        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})

    @app.get("/api/model")
    def model() -> dict[str, Any]:
        return {**predictor.info, "limits": {"max_bytes": limits.max_bytes,
                                             "max_seconds": limits.max_seconds},
                "enrolment": {"available": uses_enrolment, "min_clips": MIN_ENROL_CLIPS,
                              "max_clips": limits.enrol_clips,
                              "max_seconds": limits.enrol_seconds}}

    @app.get("/api/health")
    def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.post("/api/predict")
    async def predict(request: Request, segments: bool = False) -> dict[str, Any]:
        body = await _audio_body(request, limits.max_bytes)
        name = unquote(request.headers.get("x-filename") or "upload")  # the page encodes it
        session = session_of(request)
        state = session.state if session else ((), None)  # read once: clips and stats agree
        if uses_enrolment:  # a per-request copy: the shared predictor is never changed
            served, mode = predictor.with_enrolment(state[1], len(state[0])), _mode(state)
        else:
            served, mode = predictor, {"mode": "none", "enrolled_clips": 0}

        def run() -> Prediction:
            if segments:
                return timeline.predict_segments_of(served, body, name=name,
                                                    max_seconds=limits.max_seconds)
            return served.predict(body, name=name, max_seconds=limits.max_seconds)

        start = time.perf_counter()
        pred = await in_worker(run)
        return {**pred.to_dict(), **mode,
                "elapsed_ms": round(1e3 * (time.perf_counter() - start), 1)}

    @app.get("/api/enrol")
    def enrolment(request: Request) -> dict[str, Any]:
        require_enrolment()
        session = session_of(request)
        return session.describe() if session else Enrolment().describe()

    @app.post("/api/enrol")
    async def enrol(request: Request, response: Response) -> dict[str, Any]:
        require_enrolment()
        body = await _audio_body(request, limits.max_bytes)
        name = unquote(request.headers.get("x-filename") or "clip")
        session = session_of(request)
        new = Enrolment() if session is None else None  # kept once its first clip is
        answer = await in_worker(lambda: _add_clip(predictor, session or new, body, name,
                                                   limits))
        if new is not None:
            response.set_cookie(SESSION_COOKIE, enrolments.add(new), httponly=True,
                                samesite="strict", secure=request.url.scheme == "https",
                                path="/")
        return answer

    @app.delete("/api/enrol")
    def forget(request: Request, response: Response) -> dict[str, Any]:
        require_enrolment()
        enrolments.drop(request.cookies.get(SESSION_COOKIE))
        response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="strict")
        return Enrolment().describe()

    return app


def _add_clip(predictor: Predictor, session: Enrolment, body: bytes, name: str,
              limits: Limits) -> dict[str, Any]:
    """Decode and check one enrolment clip, then recompute the session's statistics with
    `Predictor.enrolment_statistics` (which refuses duplicates and degenerate spread)."""
    if session.clips >= limits.enrol_clips:
        raise _enrolment_full(session.clips)
    try:
        decoded = decode_audio(body, max_seconds=limits.enrol_seconds)
        mono = decoded.samples
        predictor.pipeline.windows(len(mono), decoded.sample_rate)  # too_short
        check_not_silent(mono, decoded.sample_rate)
    except AudioError as err:
        raise InputError(getattr(err, "code", "bad_audio"), f"{name}: {err}") from None
    rate = predictor.pipeline.audio.sample_rate  # stored at the rate the pipeline resamples to
    with session.lock:
        clips, stats = session.state
        if len(clips) >= limits.enrol_clips:  # again: another request may have added one
            raise _enrolment_full(len(clips))
        clip = (f"clip {len(clips) + 1} ({name})", resample(mono, decoded.sample_rate, rate),
                rate)
        clips = (*clips, clip)
        if len(clips) >= MIN_ENROL_CLIPS:
            stats = predictor.enrolment_statistics(clips)
        session.state = (clips, stats)
    return session.describe()


def _enrolment_full(clips: int) -> ApiError:
    return ApiError(409, "enrolment_full", f"{clips} clips are enrolled, the most this server "
                    "keeps for a visitor: delete the enrolment to start again")


async def _audio_body(request: Request, max_bytes: int) -> bytes:
    _check_content_type(request.headers.get("content-type"))
    body = await _read_body(request, max_bytes)
    if not body:
        raise ApiError(400, "empty", "the request body is empty: send the audio file's "
                                     "bytes as the body")
    return body


def _check_content_type(header: str | None) -> None:
    media = (header or "application/octet-stream").split(";")[0].strip().lower()
    if media.startswith(AUDIO_TYPES) or media in OTHER_AUDIO_TYPES:
        return
    raise ApiError(415, "unsupported_media_type",
                   f"content type {media!r} is not audio: send audio/* (wav, flac, ogg, webm, "
                   "mp4, ...) or application/octet-stream")


async def _read_body(request: Request, max_bytes: int) -> bytes:
    """The body, refused with 413 as soon as it passes `max_bytes` (declared or streamed)."""
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise ApiError(400, "bad_content_length", f"bad Content-Length {declared!r}")
        if int(declared) > max_bytes:
            raise _too_large(int(declared), max_bytes)
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_bytes:
            raise _too_large(size, max_bytes)
        chunks.append(chunk)
    return b"".join(chunks)


def _too_large(size: int, max_bytes: int) -> ApiError:
    return ApiError(413, "body_too_large", f"the request body is over the size limit: "
                                           f"{size} bytes > {max_bytes} bytes")


def _error(status: int, code: str, detail: str) -> JSONResponse:
    return JSONResponse({"error": code, "detail": detail, "status": status}, status_code=status)


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def api_error(request: Request, err: ApiError) -> JSONResponse:
        return _error(err.status, err.code, err.detail)

    @app.exception_handler(InputError)
    async def input_error(request: Request, err: InputError) -> JSONResponse:
        return _error(STATUS.get(err.code, 422), err.code, str(err))

    @app.exception_handler(Exception)
    async def internal(request: Request, err: Exception) -> JSONResponse:
        log.exception("prediction failed")  # ours, not the client's: keep the traceback
        return _error(500, "internal", f"the server failed: {type(err).__name__}")


# --- command line --------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ser-serve", description="Serve a trained ser model: a record/upload web page and "
        "a JSON API (POST /api/predict with the audio as the body).")
    parser.add_argument("model", type=Path, help="checkpoint (.ckpt) or ONNX export (.onnx)")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on (default: loopback only)")
    parser.add_argument("--allowed-host", action="append", default=[], metavar="NAME",
                        help="another host name the server is reached by (repeatable); it "
                        "answers only for --host and these (and loopback names on loopback)")
    parser.add_argument("--port", type=_port, default=8000)
    parser.add_argument("--max-seconds", type=_positive(float), default=Limits.max_seconds,
                        help="longest recording accepted (seconds)")
    parser.add_argument("--max-mb", type=_positive(float), default=Limits.max_bytes / 2**20,
                        help="largest request body accepted (MiB)")
    parser.add_argument("--concurrency", type=_positive(int), default=Limits.concurrency,
                        help="predictions computed at once")
    parser.add_argument("--hop", type=_positive(float), default=None,
                        help="seconds between windows of long recordings (default: window length)")
    parser.add_argument("--sessions", type=_positive(int), default=Limits.sessions,
                        help="visitors whose enrolment is kept in memory at once (a "
                        "speaker-normalised model); the least recently used is forgotten")
    return parser


def _positive(kind: type) -> Callable[[str], float]:
    """An argparse type: a finite number above 0 (0 workers or a 0 s hop never finish)."""
    what = "whole number" if kind is int else "number"

    def parse(text: str) -> float:
        try:
            value = kind(text)
        except ValueError:
            value = math.nan
        if not (math.isfinite(value) and value > 0):
            raise argparse.ArgumentTypeError(f"must be a positive {what}, got {text!r}")
        return value

    return parse


def _port(text: str) -> int:
    if not (text.isdigit() and 1 <= int(text) <= 65535):
        raise argparse.ArgumentTypeError(f"must be a port number 1-65535, got {text!r}")
    return int(text)


def main(argv: Sequence[str] | None = None) -> int:
    import uvicorn

    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        predictor = Predictor.load(args.model, hop=args.hop)
    except (OSError, ValueError, KeyError) as err:
        print(f"ser-serve: cannot load model {args.model}: {err}", file=sys.stderr)
        return 2
    if not _is_loopback(args.host):
        log.warning("listening on %s: reachable beyond this machine, and browsers allow the "
                    "microphone only on https or localhost", args.host)
    limits = Limits(math.ceil(args.max_mb * 2**20), args.max_seconds, args.concurrency,
                    sessions=args.sessions)
    hosts = HostPolicy.serving(args.host, args.allowed_host)
    log.info("serving %s on http://%s:%d/", predictor.name, args.host, args.port)
    uvicorn.run(create_app(predictor, limits, hosts), host=args.host, port=args.port,
                log_level="info")
    return 0


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return host.lower() == "localhost"


def _is_address(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


if __name__ == "__main__":
    sys.exit(main())
