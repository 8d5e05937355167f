"""ser.features: parity with librosa (the seed's code), augmentation, the on-disk cache.

Tolerances against librosa (float32 throughout, FFTs from MKL instead of pocketfft):
- ZCR: exact (atol 1e-6); RMS: 1e-5 of the block's max; MFCC: 1e-4 of the block's
  max |value| (~0.08 dB; seen: 2e-6).
- pitch shift / time stretch waveforms: max |diff| <= 1e-3 of the peak and RMS error
  <= 1e-3 of the signal's RMS (seen: 2e-4).
- features of the pitched clip: those waveform differences flip a few zero crossings
  (ZCR atol 16/2048; seen over all 1440 RAVDESS clips: 10/2048) and move quiet mel bins
  (MFCC 2e-3 of the block's max; seen: 8e-4).
"""

from __future__ import annotations

import re
from pathlib import Path

import librosa
import numpy as np
import pytest
import soundfile as sf

from ser.data.audio import AudioConfig, AudioError, load_audio
from ser.data.clip import Clip
from ser.features import dsp
from ser.features.augment import VERSIONS, AugmentConfig, make_versions
from ser.features.extract import FeatureSpec, cache_key, featurise
from ser.features.hand import HandFeatureConfig, feature_dim, hand_features
from tests.conftest import ravdess_name, write_tone

SR = 22050
N = 55125  # 2.5 s
SEED_AUDIO = AudioConfig(sample_rate=SR, offset=0.6, duration=2.5)
SPEC = FeatureSpec(SEED_AUDIO, HandFeatureConfig(), AugmentConfig())
FOUR = ["original", "noise", "pitch", "pitch_noise"]
BLOCKS = {"zcr": slice(0, 108), "rms": slice(108, 216), "mfcc": slice(216, 2376)}


def seed_extract(data: np.ndarray, sr: int = SR) -> np.ndarray:
    """The seed's extract_features (its notebook), with keyword arguments for librosa 0.11."""
    zcr = librosa.feature.zero_crossing_rate(data, frame_length=2048, hop_length=512)
    rms = librosa.feature.rms(y=data, frame_length=2048, hop_length=512)
    mfcc = librosa.feature.mfcc(y=data, sr=sr)
    return np.hstack((np.squeeze(zcr), np.squeeze(rms), np.ravel(mfcc.T)))


def assert_blocks_close(ours: np.ndarray, ref: np.ndarray) -> None:
    assert ours.shape == ref.shape == (2376,)
    np.testing.assert_allclose(ours[BLOCKS["zcr"]], ref[BLOCKS["zcr"]], rtol=0, atol=1e-6)
    for name, rel in (("rms", 1e-5), ("mfcc", 1e-4)):
        block = BLOCKS[name]
        scale = np.abs(ref[block]).max()
        np.testing.assert_allclose(ours[block], ref[block], rtol=0, atol=rel * scale, err_msg=name)


def assert_wave_close(ours: np.ndarray, ref: np.ndarray) -> None:
    assert ours.shape == ref.shape
    assert np.abs(ours - ref).max() <= 1e-3 * np.abs(ref).max()
    assert np.sqrt(np.mean((ours - ref) ** 2)) <= 1e-3 * np.sqrt(np.mean(ref**2))


def real_files(root: Path, n: int) -> list[Path]:
    files = sorted(root.glob("Actor_*/*.flac"))
    return files[:: max(1, len(files) // n)][:n]


def make_clips(root: Path, n: int, seconds: float = 3.5) -> list[Clip]:
    """RAVDESS-named 48 kHz tones (every third one stereo), one per actor."""
    clips = []
    for i in range(n):
        name = f"Actor_{i + 1:02d}/{ravdess_name(5, 1, 1, 1, i + 1)}.wav"
        path = write_tone(
            root / name,
            200.0 + 35 * i,
            seconds=seconds,
            sr=48000,
            channels=2 if i % 3 == 0 else 1,
            seed=i,
        )
        clips.append(Clip(path, "ravdess", f"ravdess:{i + 1:02d}", "male", "angry"))
    return clips


# -- parity with librosa on real recordings ------------------------------------------------


@pytest.mark.real_data
def test_hand_features_match_the_seeds_librosa_code(real_ravdess):
    waves = [librosa.load(p, duration=2.5, offset=0.6)[0] for p in real_files(real_ravdess, 10)]
    full = np.stack([w for w in waves if len(w) == N])
    assert len(full) >= 8
    ours = hand_features(full, SR, HandFeatureConfig(), N)
    assert ours.shape == (len(full), 2376) and ours.dtype == np.float32
    for row, wave in zip(ours, full, strict=True):
        assert_blocks_close(row, seed_extract(wave))


@pytest.mark.real_data
def test_pitch_shift_and_stretch_match_librosa(real_ravdess):
    for path in real_files(real_ravdess, 4):
        wave, sr = librosa.load(path, duration=2.5, offset=0.6)
        ref = librosa.effects.pitch_shift(wave, sr=sr, n_steps=0.7)
        assert_wave_close(dsp.pitch_shift(wave[None], sr, 0.7)[0], ref)
        ref = librosa.effects.time_stretch(wave, rate=0.8)
        assert_wave_close(dsp.time_stretch(wave[None], 0.8)[0], ref)


@pytest.mark.real_data
def test_pitched_features_match_librosa(real_ravdess):
    wave, sr = librosa.load(real_files(real_ravdess, 1)[0], duration=2.5, offset=0.6)
    ref = seed_extract(librosa.effects.pitch_shift(wave, sr=sr, n_steps=0.7))
    ours = hand_features(dsp.pitch_shift(wave[None], sr, 0.7), sr, HandFeatureConfig(), N)[0]
    # tiny waveform differences flip a few zero crossings and move quiet mel bins
    np.testing.assert_allclose(ours[BLOCKS["zcr"]], ref[BLOCKS["zcr"]], atol=16 / 2048)
    mfcc = BLOCKS["mfcc"]
    np.testing.assert_allclose(ours[mfcc], ref[mfcc], atol=2e-3 * np.abs(ref[mfcc]).max())


@pytest.mark.real_data
def test_load_audio_matches_librosa_load(real_ravdess):
    for path in real_files(real_ravdess, 5):
        ref, _ = librosa.load(path, duration=2.5, offset=0.6)
        ours = load_audio(path, SEED_AUDIO)
        assert ours.shape == ref.shape
        np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-5)


# -- hand features ---------------------------------------------------------------------------


def test_feature_dim_is_the_seeds_2376():
    assert feature_dim(HandFeatureConfig(), SR, N) == 2376
    assert SPEC.n_samples == N and SPEC.dim == 2376


def test_hand_features_match_librosa_on_a_tone(tmp_path):
    wave = load_audio(write_tone(tmp_path / "t.wav", 330, sr=48000), SEED_AUDIO)
    assert_blocks_close(
        hand_features(wave[None], SR, HandFeatureConfig(), N)[0], seed_extract(wave)
    )


def test_longer_waves_are_cropped(tmp_path):
    wave = np.random.default_rng(0).standard_normal(N + 3000).astype(np.float32)
    cfg = HandFeatureConfig()
    np.testing.assert_array_equal(
        hand_features(wave, SR, cfg, N), hand_features(wave[:N], SR, cfg, N)
    )


def test_short_clip_is_zero_padded_like_the_seed(tmp_path):
    """short_clips=seed: a 2.0 s file: 1.4 s after the 0.6 s offset -> 61 frames (1342
    values), then zeros."""
    path = write_tone(
        tmp_path / "Actor_01" / "03-01-05-01-01-01-01.wav", 250, seconds=2.0, sr=48000
    )
    clip = Clip(path, "ravdess", "ravdess:01", "male", "angry")
    seed = FeatureSpec(SEED_AUDIO, HandFeatureConfig(short_clips="seed"), AugmentConfig())
    assert cache_key(seed, "original") != cache_key(SPEC, "original")
    table = featurise([clip], ["original"], seed, cache_dir=None, n_jobs=1, progress=False)
    row = table.features[0]
    assert row.shape == (2376,)
    short, _ = librosa.load(path, duration=2.5, offset=0.6)
    used = 22 * (1 + len(short) // 512)
    assert used == 1342 and not row[used:].any()
    ref = seed_extract(short)
    np.testing.assert_allclose(row[:used], ref, rtol=0, atol=1e-4 * np.abs(ref).max())


# -- augmentation ------------------------------------------------------------------------------


def test_versions_are_reproducible_and_independent_of_each_other():
    wave = np.sin(np.linspace(0, 900, N)).astype(np.float32)
    cfg = AugmentConfig()
    every = make_versions(wave, SR, VERSIONS, cfg, np.random.default_rng(7))
    again = make_versions(wave, SR, ["shift", "pitch_noise"], cfg, np.random.default_rng(7))
    for name in ("shift", "pitch_noise"):
        np.testing.assert_array_equal(again[name], every[name])
    np.testing.assert_array_equal(every["original"], wave)
    assert every["stretch"].shape == (round(N / 0.8),)
    assert all(every[v].shape == (N,) for v in VERSIONS if v != "stretch")
    assert all(every[v].dtype == np.float32 for v in VERSIONS)
    assert any(np.array_equal(every["shift"], np.roll(wave, k)) for k in range(-5000, 5001))
    noise = every["noise"] - wave
    assert 0 < noise.std() <= 0.035 * np.abs(wave).max() * 1.1


def test_pitch_is_shifted_once_for_pitch_and_pitch_noise(monkeypatch):
    calls = []
    real = dsp.pitch_shift
    monkeypatch.setattr(dsp, "pitch_shift", lambda *a, **k: calls.append(1) or real(*a, **k))
    wave = np.sin(np.linspace(0, 900, N)).astype(np.float32)
    out = make_versions(
        wave, SR, ["pitch", "pitch_noise"], AugmentConfig(), np.random.default_rng(0)
    )
    assert len(calls) == 1
    assert not np.array_equal(out["pitch"], out["pitch_noise"])


def test_unknown_or_repeated_versions_are_refused(tmp_path):
    wave = np.zeros(N, np.float32)
    for bad in (["wobble"], ["noise", "noise"], []):
        with pytest.raises(ValueError, match="versions"):
            make_versions(wave, SR, bad, AugmentConfig(), np.random.default_rng(0))


# -- featurise: rows, determinism, cache ---------------------------------------------------


def test_rows_are_clip_by_clip_in_the_asked_version_order(tmp_path):
    clips = make_clips(tmp_path, 3)
    versions = ["pitch", "original", "noise"]
    table = featurise(clips, versions, SPEC, cache_dir=None, n_jobs=1, progress=False)
    assert table.features.shape == (9, 2376) and table.features.dtype == np.float32
    assert table.clip_index.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    assert table.versions == versions * 3
    assert table.n_computed == 9 and table.n_loaded == 3 and table.skipped == []
    wave = load_audio(clips[1].path, SEED_AUDIO)
    np.testing.assert_array_equal(table.features[4], hand_features(wave, SR, SPEC.hand, N)[0])


def test_random_draws_do_not_depend_on_the_other_clips(tmp_path):
    clips = make_clips(tmp_path, 3)
    together = featurise(clips, FOUR, SPEC, cache_dir=None, n_jobs=1, progress=False)
    alone = featurise(clips[2:], ["pitch_noise", "noise"], SPEC, cache_dir=None, progress=False)
    rows = together.features[together.clip_index == 2]
    # batches differ, so allow float noise; different draws would differ by far more
    np.testing.assert_allclose(alone.features, rows[[3, 1]], rtol=1e-5, atol=1e-5)


def test_worker_pool_gives_the_inline_result(tmp_path):
    clips = make_clips(tmp_path, 6)
    inline = featurise(clips, FOUR, SPEC, cache_dir=None, n_jobs=1, progress=False)
    pooled = featurise(clips, FOUR, SPEC, cache_dir=None, n_jobs=2, progress=False)
    np.testing.assert_allclose(pooled.features, inline.features, rtol=1e-5, atol=1e-5)
    assert pooled.versions == inline.versions


def test_second_call_hits_the_cache_and_decodes_nothing(tmp_path):
    clips = make_clips(tmp_path / "data", 4)
    cache = tmp_path / "cache"
    first = featurise(clips, FOUR, SPEC, cache_dir=cache, n_jobs=2, progress=False)
    assert (first.n_computed, first.n_cached, first.n_loaded) == (16, 0, 4)
    second = featurise(clips, FOUR, SPEC, cache_dir=cache, n_jobs=2, progress=False)
    assert (second.n_computed, second.n_cached, second.n_loaded) == (0, 16, 0)
    np.testing.assert_array_equal(second.features, first.features)
    assert second.versions == first.versions
    assert not list(cache.rglob("*.tmp"))  # atomic writes leave no temp files


def test_config_changes_miss_only_where_they_matter(tmp_path):
    clips = make_clips(tmp_path / "data", 2)
    cache = tmp_path / "cache"
    featurise(clips, FOUR, SPEC, cache_dir=cache, n_jobs=1, progress=False)

    louder = FeatureSpec(SPEC.audio, SPEC.hand, AugmentConfig(noise_amplitude=0.05))
    table = featurise(clips, FOUR, louder, cache_dir=cache, n_jobs=1, progress=False)
    assert table.n_computed == 4  # noise and pitch_noise of both clips
    assert table.n_cached == 4  # original and pitch don't depend on the noise

    fewer = FeatureSpec(SPEC.audio, HandFeatureConfig(n_mfcc=13), SPEC.augment)
    table = featurise(clips, ["original"], fewer, cache_dir=cache, n_jobs=1, progress=False)
    assert table.n_computed == 2 and table.features.shape == (2, 108 * 15)

    later = FeatureSpec(AudioConfig(SR, offset=0.7, duration=2.5), SPEC.hand, SPEC.augment)
    assert featurise(clips, ["original"], later, cache_dir=cache, progress=False).n_computed == 2


def test_cache_key_of_original_ignores_augmentation():
    other = FeatureSpec(SPEC.audio, SPEC.hand, AugmentConfig(noise_amplitude=0.1, seed=3))
    assert cache_key(other, "original") == cache_key(SPEC, "original")
    assert cache_key(other, "pitch") == cache_key(SPEC, "pitch")
    assert cache_key(other, "noise") != cache_key(SPEC, "noise")
    as_ints = FeatureSpec(
        AudioConfig(SR, offset=0.6, duration=2.5, min_duration=1), SPEC.hand, SPEC.augment
    )
    assert cache_key(as_ints, "original") == cache_key(
        FeatureSpec(AudioConfig(SR, 0.6, 2.5, min_duration=1.0), SPEC.hand, SPEC.augment),
        "original",
    )


def test_changed_file_content_misses(tmp_path):
    clips = make_clips(tmp_path / "data", 2)
    cache = tmp_path / "cache"
    before = featurise(clips, ["original"], SPEC, cache_dir=cache, n_jobs=1, progress=False)
    write_tone(clips[1].path, 999.0, seconds=3.5, sr=48000)
    after = featurise(clips, ["original"], SPEC, cache_dir=cache, n_jobs=1, progress=False)
    assert (after.n_cached, after.n_computed, after.n_loaded) == (1, 1, 1)
    np.testing.assert_array_equal(after.features[0], before.features[0])
    assert not np.array_equal(after.features[1], before.features[1])


def test_corrupt_cache_entry_is_recomputed(tmp_path):
    clips = make_clips(tmp_path / "data", 1)
    cache = tmp_path / "cache"
    first = featurise(clips, ["original"], SPEC, cache_dir=cache, progress=False)
    (entry,) = cache.rglob("*.npy")
    entry.write_bytes(b"\x93NUMPY garbage")
    again = featurise(clips, ["original"], SPEC, cache_dir=cache, progress=False)
    assert again.n_computed == 1
    np.testing.assert_array_equal(again.features, first.features)


# -- bad files ---------------------------------------------------------------------------------


def add_bad_files(root: Path, clips: list[Clip]) -> list[Clip]:
    empty = root / "Actor_30" / f"{ravdess_name(3, 1, 1, 1, 30)}.wav"
    corrupt = root / "Actor_31" / f"{ravdess_name(4, 1, 1, 1, 31)}.wav"
    short = root / "Actor_32" / f"{ravdess_name(6, 1, 1, 1, 32)}.wav"  # nothing after 0.6 s
    for path in (empty, corrupt, short):
        path.parent.mkdir(parents=True)
    empty.write_bytes(b"")
    corrupt.write_bytes(b"RIFF\x00\x00\x00\x00WAVEfmt garbage" + bytes(100))
    sf.write(short, np.zeros(24000, np.float32), 48000)
    bad = [Clip(p, "ravdess", "ravdess:3x", "male", "calm") for p in (empty, corrupt, short)]
    return [clips[0], bad[0], clips[1], bad[1], bad[2], clips[2]]


@pytest.mark.parametrize("n_jobs", [1, 2])
def test_bad_files_are_skipped_and_listed(tmp_path, n_jobs):
    clips = add_bad_files(tmp_path, make_clips(tmp_path, 3))
    cache = tmp_path / "cache"
    table = featurise(
        clips, FOUR, SPEC, cache_dir=cache, n_jobs=n_jobs, on_bad_file="skip", progress=False
    )
    assert table.clip_index.tolist() == [0] * 4 + [2] * 4 + [5] * 4
    assert [path for path, _ in table.skipped] == [clips[1].path, clips[3].path, clips[4].path]
    assert all(str(path) in reason for path, reason in table.skipped)
    assert table.n_computed == 12 and len(list(cache.rglob("*.npy"))) == 12


@pytest.mark.parametrize("n_jobs", [1, 2])
def test_bad_file_raises_naming_it(tmp_path, n_jobs):
    clips = add_bad_files(tmp_path, make_clips(tmp_path, 3))
    with pytest.raises(AudioError, match=re.escape(str(clips[1].path))) as err:
        featurise([clips[0], clips[1]], FOUR, SPEC, cache_dir=None, n_jobs=n_jobs, progress=False)
    assert "Traceback" not in str(err.value)


def test_missing_file_is_a_bad_file(tmp_path):
    clips = make_clips(tmp_path, 1)
    gone = Clip(tmp_path / "Actor_02" / "nope.wav", "ravdess", "ravdess:02", "female", "sad")
    with pytest.raises(AudioError, match="nope.wav"):
        featurise([gone], ["original"], SPEC, cache_dir=None, progress=False)
    table = featurise(
        [gone, *clips], ["original"], SPEC, cache_dir=None, on_bad_file="skip", progress=False
    )
    assert table.clip_index.tolist() == [1] and table.skipped[0][0] == gone.path


def test_bad_arguments_are_refused(tmp_path):
    clips = make_clips(tmp_path, 1)
    with pytest.raises(ValueError, match="on_bad_file"):
        featurise(clips, ["original"], SPEC, cache_dir=None, on_bad_file="ignore")
    with pytest.raises(ValueError, match="versions"):
        featurise(clips, ["original", "echo"], SPEC, cache_dir=None)
    no_duration = FeatureSpec(AudioConfig(SR), SPEC.hand, SPEC.augment)
    with pytest.raises(ValueError, match="duration"):
        featurise(clips, ["original"], no_duration, cache_dir=None)
