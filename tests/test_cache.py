"""ser.cache.ArrayCache: round trip, misses, identity folders, atomic concurrent writes."""

from __future__ import annotations

import errno
import json
import logging
import multiprocessing as mp
from pathlib import Path

import numpy as np
import pytest

from ser import cache as cache_mod
from ser.cache import ArrayCache, cache_dir_name

IDENTITY = {"format": 1, "backbone": "tiny", "layer": -1, "inputs": {"sr": 16000}}


def test_round_trip_keeps_values_dtype_and_shape(tmp_path):
    cache = ArrayCache(tmp_path, "tiny-layer-1", IDENTITY)
    value = np.random.default_rng(0).standard_normal((7, 3)).astype(np.float16)
    assert cache.load("abc") is None
    cache.save("abc", value)
    again = cache.load("abc")
    assert again.dtype == np.float16 and again.shape == (7, 3)
    np.testing.assert_array_equal(again, value)
    assert (cache.hits, cache.misses) == (1, 1)
    assert cache.keys() == {"abc"}
    assert json.loads((cache.dir / "spec.json").read_text()) == IDENTITY
    # a fresh instance (another run) finds the same entry
    np.testing.assert_array_equal(ArrayCache(tmp_path, "tiny-layer-1", IDENTITY).load("abc"), value)


def _valid_npy(tmp_path: Path) -> bytes:
    path = tmp_path / "valid.npy"
    np.save(path, np.arange(64, dtype=np.float32))
    return path.read_bytes()


@pytest.mark.parametrize("damage", ["garbage", "truncated_header", "truncated_data", "empty",
                                    "zip", "bad_header_syntax"])
def test_a_corrupt_or_partial_file_is_a_miss(tmp_path, damage):
    good = _valid_npy(tmp_path)
    data = {
        "garbage": b"\x93NUMPY garbage",
        "truncated_header": good[:20],
        "truncated_data": good[:-7],
        "empty": b"",
        "zip": b"PK\x03\x04 not really a zip",
        "bad_header_syntax": good.replace(b"False", b"Fa(se"),  # a tokenizer error
    }[damage]
    cache = ArrayCache(tmp_path, "x", IDENTITY)
    cache.save("k", np.zeros(3, np.float32))
    cache.path("k").write_bytes(data)
    assert cache.load("k") is None and cache.misses == 1
    cache.save("k", np.ones(3, np.float32))  # the next write repairs it
    np.testing.assert_array_equal(cache.load("k"), np.ones(3, np.float32))


def test_an_entry_of_another_dtype_or_shape_is_a_miss(tmp_path):
    loose = ArrayCache(tmp_path, "v", IDENTITY)
    loose.save("a", np.zeros(4, np.float64))
    loose.save("b", np.zeros(5, np.float32))
    strict = ArrayCache(tmp_path, "v", IDENTITY, dtype=np.float32, shape=(4,))
    assert strict.load("a") is None and strict.load("b") is None and strict.misses == 2


def test_identity_decides_the_folder(tmp_path):
    base = ArrayCache(tmp_path, "wav2vec2-base-layer-1", IDENTITY)
    reordered = ArrayCache(tmp_path, "wav2vec2-base-layer-1", dict(reversed(IDENTITY.items())))
    other_layer = ArrayCache(tmp_path, "wav2vec2-base-layer-1", {**IDENTITY, "layer": 3})
    assert reordered.dir == base.dir  # key order is not identity
    assert other_layer.dir != base.dir
    assert base.dir.parent == tmp_path and base.dir.name.startswith("wav2vec2-base-layer-1-")
    base.save("k", np.zeros(2))
    assert other_layer.load("k") is None


def test_the_format_version_is_part_of_the_identity(tmp_path):
    v1 = ArrayCache(tmp_path, "x", IDENTITY)
    v2 = ArrayCache(tmp_path, "x", {**IDENTITY, "format": 2})
    assert v1.dir != v2.dir
    with pytest.raises(ValueError, match="format"):
        cache_dir_name("x", {"layer": 1})


def test_slug_is_readable_and_a_safe_folder_name():
    name = cache_dir_name("facebook/wav2vec2 base-layer-1", IDENTITY)
    slug, digest = name.rsplit("-", 1)
    assert slug == "facebook_wav2vec2_base-layer-1" and len(digest) == 16


@pytest.mark.parametrize("key", ["../escape", "a/b", ".hidden", ""])
def test_keys_must_be_plain_file_names(tmp_path, key):
    with pytest.raises(ValueError, match="plain file name"):
        ArrayCache(tmp_path, "x", IDENTITY).save(key, np.zeros(1))


def _write_many(root: str, writer: int, keys: int) -> None:
    cache = ArrayCache(root, "shared", IDENTITY)
    for k in range(keys):
        cache.save(f"k{k}", np.full(1000, writer, dtype=np.int32))


def test_concurrent_writers_leave_whole_files_and_no_temp_files(tmp_path):
    context = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
    procs = [context.Process(target=_write_many, args=(str(tmp_path), w, 30)) for w in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=60)
    assert [p.exitcode for p in procs] == [0] * 4
    cache = ArrayCache(tmp_path, "shared", IDENTITY)
    assert cache.keys() == {f"k{k}" for k in range(30)}
    for k in range(30):
        value = cache.load(f"k{k}")
        assert value is not None and len(set(value.tolist())) == 1  # one writer's whole file
    names = {p.name for p in cache.dir.iterdir()}
    assert names == {"spec.json", *(f"k{k}.npy" for k in range(30))}  # no *.tmp left


def test_an_unwritable_disk_warns_once_and_does_not_raise(tmp_path, caplog):
    (tmp_path / "file").write_text("not a folder")
    cache = ArrayCache(tmp_path / "file", "x", IDENTITY)  # mkdir below a file fails
    with caplog.at_level(logging.WARNING, logger="ser.cache"):
        cache.save("a", np.zeros(2))
        cache.save("b", np.zeros(2))
    assert cache.load("a") is None
    assert len([r for r in caplog.records if "not written" in r.message]) == 1


def test_a_read_only_disk_warns_and_leaves_no_temp_file(tmp_path, monkeypatch, caplog):
    cache = ArrayCache(tmp_path, "x", IDENTITY)
    cache.save("first", np.zeros(2))

    def read_only(src, dst):
        raise OSError(errno.EROFS, "Read-only file system", str(dst))

    monkeypatch.setattr(cache_mod.os, "replace", read_only)
    with caplog.at_level(logging.WARNING, logger="ser.cache"):
        cache.save("second", np.zeros(2))
    assert "Read-only file system" in caplog.text
    assert sorted(p.name for p in cache.dir.iterdir()) == ["first.npy", "spec.json"]
