"""FastAPI app: a record/upload page and a JSON prediction API for one trained model.

    ser-serve CKPT_OR_ONNX [--host 127.0.0.1] [--port 8000]

POST /api/predict takes the raw audio as the request body (what MediaRecorder or a file
input gives, with its content type) and answers the prediction as JSON. Bad input gets
`{"error": code, "detail": message}` with a 4xx status, never a made-up emotion.
"""

from __future__ import annotations

import argparse
import ipaddress
import logging
import sys
import time
from collections.abc import Sequence
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
STATUS = {"empty": 400, "too_long": 413}


@dataclass(frozen=True)
class Limits:
    max_bytes: int = 10 * 1024 * 1024  # request body
    max_seconds: float = 60.0  # decoded recording
    concurrency: int = 2  # predictions at once; more wait (the CPU is the limit anyway)


class ApiError(Exception):
    def __init__(self, status: int, code: str, detail: str) -> None:
        super().__init__(detail)
        self.status, self.code, self.detail = status, code, detail


def create_app(predictor: Predictor, limits: Limits | None = None) -> FastAPI:
    limits = limits or Limits()
    predictor.warm_up()
    app = FastAPI(title="ser", docs_url=None, redoc_url=None)
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
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--max-seconds", type=float, default=Limits.max_seconds,
                        help="longest recording accepted (seconds)")
    parser.add_argument("--max-mb", type=float, default=Limits.max_bytes / 2**20,
                        help="largest request body accepted (MiB)")
    parser.add_argument("--concurrency", type=int, default=Limits.concurrency,
                        help="predictions computed at once")
    parser.add_argument("--hop", type=float, default=None,
                        help="seconds between windows of long recordings (default: window length)")
    return parser


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
    limits = Limits(int(args.max_mb * 2**20), args.max_seconds, args.concurrency)
    log.info("serving %s on http://%s:%d/", predictor.name, args.host, args.port)
    uvicorn.run(create_app(predictor, limits), host=args.host, port=args.port, log_level="info")
    return 0


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


if __name__ == "__main__":
    sys.exit(main())
