"""Featurise clips: load, augment, hand features; cached on disk, computed in worker processes.

Cache layout: `cache_dir/<version>-<hash of the spec fields that version depends on>/
<sha1 of the file's bytes>.npy` (one `ser.cache.ArrayCache` per version), one
float32 vector per (clip, version). The key holds everything the values depend on, so a
changed config or a changed file is a miss, and the original's key ignores the
augmentation parameters. Random draws are seeded by (augment seed, file content,
version), so an entry never depends on what else was featurised with it.
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import multiprocessing as mp
import numbers
import os
import signal
import threading
import time
import traceback
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from contextlib import closing
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from ser.cache import ArrayCache, cache_dir_name
from ser.data.audio import AudioConfig, AudioError, load_audio
from ser.data.clip import Clip
from ser.features.augment import (
    VERSIONS,
    AugmentConfig,
    check_versions,
    make_versions,
    speed_factor,
)
from ser.features.hand import HandFeatureConfig, feature_dim, hand_features, mel_bands
from ser.features.opensmile_functionals import (
    NonFiniteFunctionalsError,
    OpenSmileConfig,
    opensmile_vector,
    opensmile_version,
)
from ser.features.utterance import UtteranceStatsConfig, stats_dim, utterance_vector

log = logging.getLogger(__name__)

CACHE_FORMAT = 1  # bump whenever the computed values change
BATCH = 8  # waveforms per hand_features call: bigger batches fall out of the CPU cache
# augmentation fields each version depends on (besides audio and hand settings)
_AUGMENT_FIELDS = {
    "original": (),
    "noise": ("noise_amplitude", "seed"),
    "pitch": ("pitch_steps",),
    "pitch_noise": ("pitch_steps", "noise_amplitude", "seed"),
    "stretch": ("stretch_rate",),
    "shift": ("shift_max", "seed"),
}
assert set(_AUGMENT_FIELDS) == set(VERSIONS)
FEATURE_KINDS = ("hand", "utterance_stats", "opensmile")
# kinds that summarise the whole clip, whatever its length, into one vector
WHOLE_CLIP_KINDS = ("utterance_stats", "opensmile")


@dataclass(frozen=True)
class FeatureSpec:
    """Everything that decides a clip's feature vectors.

    `kind="hand"`: the seed's frame-stacked ZCR/RMS/MFCC vector of a fixed-length crop;
    `kind="utterance_stats"`: statistics of the whole clip's frame descriptors;
    `kind="opensmile"`: openSMILE's functionals of the whole clip, then ours if
    `opensmile.with_stats` (the optional extra; without it this stops here).
    """

    audio: AudioConfig
    hand: HandFeatureConfig
    augment: AugmentConfig
    kind: str = "hand"
    stats: UtteranceStatsConfig = field(default_factory=UtteranceStatsConfig)
    opensmile: OpenSmileConfig = field(default_factory=OpenSmileConfig)

    def __post_init__(self) -> None:
        if self.kind not in FEATURE_KINDS:
            raise ValueError(f"features.kind must be one of {FEATURE_KINDS}, got {self.kind!r}")
        if self.kind == "opensmile":
            opensmile_version()  # a run without the extra stops before any work

    @property
    def n_samples(self) -> int:
        """Waveform length the hand-feature vectors are sized for."""
        if self.audio.duration is None:
            raise ValueError("hand features need a fixed audio.duration (got None)")
        return round(self.audio.duration * self.audio.sample_rate)

    @property
    def dim(self) -> int:
        if self.kind == "utterance_stats":
            return stats_dim(self.stats)
        if self.kind == "opensmile":
            return self.opensmile.dim + (stats_dim(self.stats) if self.opensmile.with_stats else 0)
        return feature_dim(self.hand, self.audio.sample_rate, self.n_samples)


@dataclass
class FeatureTable:
    """Rows clip by clip, versions in the order asked; `clip_index` points into the clips."""

    features: np.ndarray  # (rows, D) float32
    clip_index: np.ndarray  # (rows,) int64
    versions: list[str]
    skipped: list[tuple[Path, str]] = field(default_factory=list)
    n_computed: int = 0  # (clip, version) vectors computed by this call
    n_cached: int = 0  # vectors read from the cache
    n_loaded: int = 0  # audio files decoded


@dataclass(frozen=True)
class _Job:
    """One distinct file content to compute some versions of."""

    path: Path
    digest: str
    versions: tuple[str, ...]


def clip_vector(wave: np.ndarray, spec: FeatureSpec) -> np.ndarray:
    """One waveform's vector for a whole-clip kind, in training and serving alike."""
    sr = spec.audio.sample_rate
    if spec.kind == "utterance_stats":
        return utterance_vector(wave, sr, spec.stats)
    if spec.kind != "opensmile":
        raise ValueError(f"features.kind {spec.kind!r} is not a whole-clip kind")
    vector = opensmile_vector(wave, sr, spec.opensmile)
    if spec.opensmile.with_stats:
        vector = np.concatenate([vector, utterance_vector(wave, sr, spec.stats)])
    return vector


@dataclass
class _Result:
    digest: str
    path: str = ""
    vectors: dict[str, np.ndarray] = field(default_factory=dict)
    error: str | None = None
    bad_file: bool = False  # an AudioError (skippable) rather than a failure of ours


def featurise(
    clips: Sequence[Clip],
    versions: Sequence[str],
    spec: FeatureSpec,
    *,
    cache_dir: Path | None,
    n_jobs: int = 2,
    on_bad_file: str = "error",
    progress: bool = True,
) -> FeatureTable:
    """Feature vectors of `versions` of every clip, from the cache where possible.

    Only uncached (clip, version) pairs are computed, and a clip whose versions are all
    cached is not decoded. A bad file (`AudioError`) raises it, naming the file, or with
    `on_bad_file="skip"` drops the clip's rows and lists it in `skipped`.
    """
    if on_bad_file not in ("error", "skip"):
        raise ValueError(f"on_bad_file must be 'error' or 'skip', got {on_bad_file!r}")
    versions = check_versions(versions)
    dim = spec.dim  # fails early on a spec without a fixed duration
    start = time.perf_counter()
    cache = _Cache(Path(cache_dir), spec) if cache_dir is not None else None
    digests, bad = _hash_files(clips)
    if bad and on_bad_file == "error":
        raise AudioError(next(iter(bad.values())))
    found = _read_cache(cache, digests, versions)
    jobs = _jobs(clips, digests, versions, found)
    computed: dict[str, dict[str, np.ndarray]] = {}
    with closing(_run(jobs, spec, n_jobs, progress)) as results:  # closing stops the pool
        for result in results:
            if result.error is None:
                computed[result.digest] = result.vectors
                if cache is not None:
                    cache.save_all(result.digest, result.vectors)
            elif not result.bad_file:
                raise RuntimeError(result.error)
            elif on_bad_file == "error":
                raise AudioError(result.error)
            else:
                bad[result.digest] = result.error
    table = _assemble(clips, digests, versions, found, computed, bad, dim)
    table.n_loaded = len(jobs)
    log.info(
        "features: %d clips x %s: %d cached, %d computed (%d files decoded), %d skipped, %.1fs",
        len(clips),
        versions,
        table.n_cached,
        table.n_computed,
        table.n_loaded,
        len(table.skipped),
        time.perf_counter() - start,
    )
    return table


# -- planning ---------------------------------------------------------------------------


def file_digest(path: Path) -> str:
    """sha1 of a file's bytes: the cache key of its content."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha1").hexdigest()


def _hash_files(clips: Sequence[Clip]) -> tuple[list[str], dict[str, str]]:
    """Content digest per clip; an unreadable file gets a unique stand-in and an error."""
    digests, bad = [], {}
    for i, clip in enumerate(clips):
        try:
            digests.append(file_digest(clip.path))
        except OSError as err:
            digests.append(f"unreadable:{i}")
            bad[digests[-1]] = f"{clip.path}: cannot read file ({err})"
    return digests, bad


def _read_cache(
    cache: _Cache | None, digests: list[str], versions: list[str]
) -> dict[tuple[str, str], np.ndarray]:
    if cache is None:
        return {}
    found = {}
    for version in versions:
        store = cache.of(version)
        present = store.keys()  # one listing, not a failed open per miss
        for digest in dict.fromkeys(digests):
            vector = store.load(digest) if digest in present else None
            if vector is not None:
                found[digest, version] = vector
    return found


def _jobs(
    clips: Sequence[Clip],
    digests: list[str],
    versions: list[str],
    found: dict[tuple[str, str], np.ndarray],
) -> list[_Job]:
    """One job per distinct uncached content, with the versions it lacks."""
    jobs: dict[str, _Job] = {}
    for clip, digest in zip(clips, digests, strict=True):
        missing = tuple(v for v in versions if (digest, v) not in found)
        if missing and digest not in jobs and not digest.startswith("unreadable:"):
            jobs[digest] = _Job(Path(clip.path), digest, missing)
    return list(jobs.values())


def _assemble(
    clips: Sequence[Clip],
    digests: list[str],
    versions: list[str],
    found: dict[tuple[str, str], np.ndarray],
    computed: dict[str, dict[str, np.ndarray]],
    bad: dict[str, str],
    dim: int,
) -> FeatureTable:
    """The table in clip order; clips with an entry in `bad` are listed as skipped."""
    rows, index, names, skipped = [], [], [], []
    for i, (clip, digest) in enumerate(zip(clips, digests, strict=True)):
        if digest in bad:
            skipped.append((Path(clip.path), bad[digest]))
            continue
        for version in versions:
            vector = found.get((digest, version))
            rows.append(vector if vector is not None else computed[digest][version])
            index.append(i)
            names.append(version)
    n_cached = sum(1 for i, v in zip(index, names, strict=True) if (digests[i], v) in found)
    return FeatureTable(
        features=np.stack(rows) if rows else np.zeros((0, dim), np.float32),
        clip_index=np.asarray(index, dtype=np.int64),
        versions=names,
        skipped=skipped,
        n_computed=len(rows) - n_cached,
        n_cached=n_cached,
    )


# -- computing --------------------------------------------------------------------------


def _run(jobs: list[_Job], spec: FeatureSpec, n_jobs: int, progress: bool) -> Iterator[_Result]:
    """Results of all jobs, computed inline or by a pool of `n_jobs` processes."""
    if not jobs:
        return
    n_jobs = n_jobs if n_jobs > 0 else (os.cpu_count() or 1)
    size = max(1, min(16, -(-len(jobs) // (4 * n_jobs))))  # >= 4 chunks per worker
    chunks = [jobs[i : i + size] for i in range(0, len(jobs), size)]
    bar = _progress_bar(len(jobs), progress)
    try:
        if n_jobs == 1 or len(chunks) == 1:
            for chunk in chunks:
                yield from _compute_chunk(chunk, spec)
                bar.update(len(chunk))
            return
        yield from _run_pool(chunks, spec, min(n_jobs, len(chunks)), bar)
    finally:
        bar.close()


def worker_context() -> mp.context.BaseContext:
    """fork where the platform has it (no re-imports, and workers inherit what the parent
    computed), else spawn; chosen explicitly, whatever the process's default: a sweep
    launcher's worker (joblib's loky) defaults to one that must pickle everything."""
    return mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")


def _run_pool(chunks: list[list[_Job]], spec: FeatureSpec, n_jobs: int, bar) -> Iterator[_Result]:
    mel_bands(spec.audio.sample_rate, spec.hand.n_fft, spec.hand.n_mels)  # forked workers inherit
    context = worker_context()
    with ProcessPoolExecutor(
        n_jobs, mp_context=context, initializer=_init_worker, initargs=(os.getpid(),)
    ) as pool:
        futures = {pool.submit(_compute_chunk, chunk, spec): chunk for chunk in chunks}
        try:
            for future in as_completed(futures):
                try:
                    results = future.result()
                except BrokenProcessPool:
                    paths = ", ".join(str(job.path) for job in futures[future])
                    raise RuntimeError(f"a feature worker died while on: {paths}") from None
                yield from results
                bar.update(len(futures[future]))
        finally:
            pool.shutdown(wait=True, cancel_futures=True)


def _init_worker(parent_pid: int) -> None:
    """One thread per worker (the parallelism is across processes); die with the parent."""
    _die_with_parent(parent_pid)
    torch.set_num_threads(1)
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(1)  # numpy's BLAS
    except ImportError:  # pragma: no cover - librosa brings it in
        pass
    _keep_freed_memory()


PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>
PARENT_POLL_S = 0.5


def _die_with_parent(parent_pid: int) -> None:
    """Exit when `parent_pid` dies, even by SIGKILL.

    A killed parent cannot shut its pool down, and forked workers hold the task pipe's
    write end themselves, so they would wait for work forever. Linux kills them at once
    (PR_SET_PDEATHSIG); elsewhere, and as a backstop, a thread notices the reparenting.
    `parent_pid` is passed in, not read here: the parent may die before this runs.
    """
    _set_pdeathsig()
    if os.getppid() != parent_pid:  # died before the signal was armed
        os._exit(1)
    threading.Thread(target=_watch_parent, args=(parent_pid,), daemon=True,
                     name="ser-parent-watch").start()


def _set_pdeathsig() -> bool:
    """SIGKILL this process when its parent dies (Linux only); True if armed.

    The kernel ties it to the forking thread: `_run_pool` forks from featurise's thread,
    which outlives the pool.
    """
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) == 0
    except (OSError, AttributeError, TypeError):  # not Linux
        return False


def _watch_parent(parent_pid: int) -> None:
    while os.getppid() == parent_pid:
        time.sleep(PARENT_POLL_S)
    os._exit(1)  # no cleanup: the parent that would collect results is gone


def _keep_freed_memory() -> None:
    """Let glibc reuse freed blocks instead of returning them to the OS.

    Each clip allocates and frees a few MB of short-lived arrays; by default glibc maps
    them fresh every time, and the page faults cost ~5% of a worker's time.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-3, 32 << 20)  # M_MMAP_THRESHOLD, at its maximum
        libc.mallopt(-1, 512 << 20)  # M_TRIM_THRESHOLD
    except (OSError, AttributeError):  # not glibc: keep the defaults
        pass


def _compute_chunk(jobs: list[_Job], spec: FeatureSpec) -> list[_Result]:
    """Load and augment each job's file, then featurise all the waveforms in batches."""
    results, waves = [], []
    for job in jobs:
        result = _Result(job.digest, str(job.path))
        results.append(result)
        try:
            wave = load_audio(job.path, spec.audio)
            rng = clip_rng(spec.augment.seed, job.digest)
            versions = make_versions(wave, spec.audio.sample_rate, job.versions, spec.augment, rng)
        except AudioError as err:
            result.error, result.bad_file = str(err), True
            continue
        except Exception as err:
            result.error = _failure(job.path, err)
            continue
        waves += [(result, v, w) for v, w in versions.items()]
    try:
        _featurise_waves(waves, spec)
    except Exception as err:
        what = f"{len(jobs)} files from {jobs[0].path}"
        for result in results:
            result.error = result.error or _failure(what, err)
    return results


def _failure(what: Path | str, err: Exception) -> str:
    """A failure of ours (not a bad file), with the worker's traceback for debugging."""
    return f"featurising {what} failed: {err!r}\n{traceback.format_exc()}"


def _featurise_waves(waves: list[tuple[_Result, str, np.ndarray]], spec: FeatureSpec) -> None:
    """Each wave's vector into its result: hand features in equal-length batches."""
    if spec.kind in WHOLE_CLIP_KINDS:
        for result, version, wave in waves:
            if result.error is not None:
                continue
            try:
                result.vectors[version] = clip_vector(wave, spec)
            except NonFiniteFunctionalsError as err:  # this file's audio, not our bug
                result.error = f"{result.path} ({version}): {err}"
                result.bad_file = True
        return
    n = spec.n_samples
    by_length: dict[int, list[tuple[_Result, str, np.ndarray]]] = {}
    for item in waves:
        by_length.setdefault(min(len(item[2]), n), []).append(item)
    for length, group in by_length.items():
        for i in range(0, len(group), BATCH):
            batch = group[i : i + BATCH]
            stacked = np.stack([w[:length] for _, _, w in batch])
            feats = hand_features(stacked, spec.audio.sample_rate, spec.hand, n)
            for (result, version, _), vector in zip(batch, feats, strict=True):
                result.vectors[version] = vector


def clip_rng(seed: int, digest: str) -> np.random.Generator:
    """The generator for one file's augmentations: seeded by the config seed and content."""
    return np.random.default_rng([seed, int(digest[:16], 16)])


def _progress_bar(total: int, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, desc="features", unit="clip", disable=not enabled, leave=False)


# -- cache ------------------------------------------------------------------------------


class _Cache:
    """One `ArrayCache` per version: a version's vectors depend on its own spec fields."""

    def __init__(self, root: Path, spec: FeatureSpec) -> None:
        self.root = root
        self.spec = spec
        self.caches: dict[str, ArrayCache] = {}

    def of(self, version: str) -> ArrayCache:
        if version not in self.caches:
            self.caches[version] = ArrayCache(
                self.root, version, _key_fields(self.spec, version),
                dtype=np.float32, shape=(self.spec.dim,),
            )
        return self.caches[version]

    def save_all(self, digest: str, vectors: dict[str, np.ndarray]) -> None:
        for version, vector in vectors.items():
            self.of(version).save(digest, vector)


def _key_fields(spec: FeatureSpec, version: str) -> dict:
    """What a version's vectors depend on (speed versions carry their factor in the name)."""
    augment = {name: getattr(spec.augment, name) for name in _AUGMENT_FIELDS.get(version, ())}
    assert version in _AUGMENT_FIELDS or speed_factor(version) is not None, version
    fields = {
        "format": CACHE_FORMAT,
        "version": version,
        "audio": asdict(spec.audio),
        "augment": augment,
    }
    if spec.kind == "hand":  # keys of hand features are as before the other kinds came
        fields["hand"] = asdict(spec.hand)
        if fields["hand"]["short_clips"] == "seed":  # the seed's padding: keys as before
            del fields["hand"]["short_clips"]
        return _canonical(fields)
    stats = asdict(spec.stats)
    if not stats["extra"]:  # vectors without extra functionals: keys as before
        del stats["extra"]
    fields.update(kind=spec.kind, stats=stats)
    if spec.kind == "opensmile":
        fields["opensmile"] = {**asdict(spec.opensmile), "package": opensmile_version()}
        if not spec.opensmile.with_stats:
            del fields["stats"]
    return _canonical(fields)


def _canonical(value):
    """Numbers as floats, so `duration: 3` from a YAML file keys like `3.0`."""
    if isinstance(value, dict):
        return {k: _canonical(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_canonical(v) for v in value]
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        return float(value)
    return value


def cache_key(spec: FeatureSpec, version: str) -> str:
    """Directory name for one version's vectors under a spec."""
    return cache_dir_name(version, _key_fields(spec, version))

