"""One on-disk array cache: `.npy` files in a directory named by what the values depend on.

Layout: `root/<slug>-<16 hex of sha1(identity)>/<key>.npy`, plus `spec.json` holding the
identity, so a folder says what made it. The identity must hold a `format` entry, bumped
whenever the cached values change meaning. Writes are atomic (a unique temp file, then
`os.replace`), so concurrent writers (worker processes, DDP ranks) and readers only ever
see a whole file; anything unreadable is a miss, and an unwritable disk is a warning.
Kept free of imports from ser.features/models/training: it is the lowest layer.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import re
import uuid
from contextlib import suppress
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
_KEY = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]*")  # a plain file name, never hidden


def cache_dir_name(name: str, identity: dict[str, Any]) -> str:
    """`<readable slug>-<hash of the identity>`: equal identities share a folder."""
    if "format" not in identity:
        raise ValueError("a cache identity needs a 'format' version")
    blob = json.dumps(identity, sort_keys=True, default=str).encode()
    slug = _UNSAFE.sub("_", name).strip("_")[-40:] or "cache"
    return f"{slug}-{hashlib.sha1(blob).hexdigest()[:16]}"


class ArrayCache:
    """Arrays by key under one identity; optionally only of one `dtype` and `shape`."""

    def __init__(
        self,
        root: str | Path,
        name: str,
        identity: dict[str, Any],
        *,
        dtype: np.dtype | str | None = None,
        shape: tuple[int, ...] | None = None,
    ) -> None:
        self.identity = identity
        self.dir = Path(root) / cache_dir_name(name, identity)
        self.dtype = np.dtype(dtype) if dtype is not None else None
        self.shape = tuple(shape) if shape is not None else None
        self.hits = 0
        self.misses = 0
        self._ready = False  # folder and spec.json written by this instance
        self._warned = False

    def path(self, key: str) -> Path:
        if not _KEY.fullmatch(key):
            raise ValueError(f"cache key must be a plain file name, got {key!r}")
        return self.dir / f"{key}.npy"

    def keys(self) -> set[str]:
        """Keys with an entry: one listing is cheaper than a failed open per miss."""
        try:
            names = os.listdir(self.dir)
        except OSError:
            return set()
        return {name[:-4] for name in names if name.endswith(".npy")}

    def load(self, key: str) -> np.ndarray | None:
        """The cached array, or None (counted as a miss) if absent, unreadable or off-spec."""
        value = self._read(self.path(key))
        if value is None:
            self.misses += 1
        else:
            self.hits += 1
        return value

    def _read(self, path: Path) -> np.ndarray | None:
        try:
            value = np.load(path, allow_pickle=False)
        # a truncated or garbled file raises anything from ValueError to tokenize errors
        except Exception:
            return None
        if not isinstance(value, np.ndarray):  # an .npz archive under our name
            with suppress(Exception):
                value.close()
            return None
        if self.dtype is not None and value.dtype != self.dtype:
            return None
        if self.shape is not None and value.shape != self.shape:
            return None
        return value

    def save(self, key: str, value: np.ndarray) -> None:
        """Write atomically; a failed write (read-only disk, full disk) only warns, once."""
        path = self.path(key)
        buffer = io.BytesIO()
        np.save(buffer, np.asarray(value), allow_pickle=False)
        try:
            self._prepare()
            write_atomic(path, buffer.getvalue())
        except OSError as err:
            if not self._warned:
                log.warning("cache %s not written (later failures not reported): %s",
                            self.dir, err)
                self._warned = True

    def _prepare(self) -> None:
        if self._ready:
            return
        self.dir.mkdir(parents=True, exist_ok=True)
        spec = self.dir / "spec.json"
        if not spec.exists():  # concurrent writers write the same bytes: harmless
            text = json.dumps(self.identity, indent=2, sort_keys=True, default=str)
            write_atomic(spec, text.encode())
        self._ready = True


def write_atomic(path: Path, data: bytes) -> None:
    """Readers see the old file or the whole new one, never a partial write."""
    tmp = path.with_name(f"{path.name}.{uuid.uuid4().hex}.tmp")  # unique per writer
    try:
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        with suppress(OSError):
            os.unlink(tmp)
        raise
