"""FastAPI app: a record/upload page and a JSON prediction API for one trained model.

    ser-serve CKPT_OR_ONNX [--host 127.0.0.1] [--port 8000]

POST /api/predict takes the raw audio as the request body (what MediaRecorder or a file
input gives, with its content type) and answers the prediction as JSON. Bad input gets
`{"error": code, "detail": message}` with a 4xx status, never a made-up emotion. Only
requests for the host names it serves are answered (421 otherwise: no DNS rebinding).
"""

from __future__ import annotations

import argparse
import ipaddress
import logging
import math
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import anyio
from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles

from ser.serving.decode import InputError
from ser.serving.predict import Predictor

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


@dataclass(frozen=True)
class Limits:
    max_bytes: int = 10 * 1024 * 1024  # request body
    max_seconds: float = 60.0  # decoded recording
    concurrency: int = 2  # predictions at once; more wait (the CPU is the limit anyway)

    def __post_init__(self) -> None:
        # 0 predictions at once would make every request (and shutdown) wait forever
        for name in ("max_bytes", "max_seconds", "concurrency"):
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


def create_app(
    predictor: Predictor, limits: Limits | None = None, hosts: HostPolicy | None = None
) -> FastAPI:
    """The page and the API; `hosts` defaults to the loopback names."""
    limits = limits or Limits()
    predictor.warm_up()
    app = FastAPI(title="ser", docs_url=None, redoc_url=None)
    app.add_middleware(_HostCheck, policy=hosts or HostPolicy.serving("127.0.0.1"))
    app.state.predictor, app.state.limits = predictor, limits
    app.state.limiter = None  # an anyio CapacityLimiter, made inside the event loop
    _add_error_handlers(app)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/", include_in_schema=False)
    def index() -> FileResponse:
        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})

    @app.get("/api/model")
    def model() -> dict[str, Any]:
        return {**predictor.info, "limits": {"max_bytes": limits.max_bytes,
                                             "max_seconds": limits.max_seconds}}

    @app.get("/api/health")
    def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.post("/api/predict")
    async def predict(request: Request) -> dict[str, Any]:
        _check_content_type(request.headers.get("content-type"))
        body = await _read_body(request, limits.max_bytes)
        if not body:
            raise ApiError(400, "empty", "the request body is empty: send the audio file's "
                                         "bytes as the body")
        name = unquote(request.headers.get("x-filename") or "upload")  # the page encodes it
        start = time.perf_counter()
        if app.state.limiter is None:
            app.state.limiter = anyio.CapacityLimiter(limits.concurrency)
        pred = await anyio.to_thread.run_sync(
            lambda: predictor.predict(body, name=name, max_seconds=limits.max_seconds),
            limiter=app.state.limiter,
        )
        return {**pred.to_dict(), "elapsed_ms": round(1e3 * (time.perf_counter() - start), 1)}

    return app


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
    limits = Limits(math.ceil(args.max_mb * 2**20), args.max_seconds, args.concurrency)
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
