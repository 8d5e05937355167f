"""features=opensmile: the optional openSMILE functionals, alone or followed by ours.

Without the package a run stops at start-up with the install line and the licence; with
it (CI installs the extra) the vectors are openSMILE's functionals, cached under keys
that hold the set and the package's version, and a file whose functionals are not
finite is a bad file named in the error, not a NaN row in the training table.
"""

from __future__ import annotations

import sys

import numpy as np
import pytest

from ser.data.audio import AudioConfig, AudioError
from ser.data.clip import Clip
from ser.features import extract
from ser.features.augment import AugmentConfig
from ser.features.extract import FeatureSpec, cache_key, featurise
from ser.features.hand import HandFeatureConfig
from ser.features.opensmile_functionals import (
    OPENSMILE_SETS,
    OpenSmileClashError,
    OpenSmileConfig,
    OpenSmileMissingError,
    _smile,
    opensmile_vector,
    opensmile_version,
)
from ser.features.pipelines import VectorPipeline, pipeline_from_meta
from ser.features.speaker_norm import Moments
from ser.features.utterance import UtteranceStatsConfig, stats_dim, utterance_vector
from ser.training.config_check import ConfigError, check_config
from tests.conftest import needs_opensmile, train_cfg, write_tone

AUDIO = AudioConfig(sample_rate=16000, duration=None)


def _spec(feature_set: str = "eGeMAPSv02", with_stats: bool = False,
          stats: UtteranceStatsConfig | None = None) -> FeatureSpec:
    return FeatureSpec(AUDIO, HandFeatureConfig(), AugmentConfig(), kind="opensmile",
                       stats=stats or UtteranceStatsConfig(),
                       opensmile=OpenSmileConfig(feature_set, with_stats))


def test_without_the_package_a_run_stops_at_start_up_naming_the_extra_and_licence(
        monkeypatch, tmp_path, generated_data_dir):
    monkeypatch.setitem(sys.modules, "opensmile", None)  # import opensmile -> ImportError
    with pytest.raises(OpenSmileMissingError, match="research and education"):
        opensmile_version()
    cfg = train_cfg(tmp_path, generated_data_dir, "experiment=stats_ravdess_rich",
                    "features=opensmile")
    with pytest.raises(ConfigError, match=r'pip install -e "\.\[opensmile\]"'):
        check_config(cfg)


def test_unknown_sets_and_non_boolean_switches_are_refused():
    with pytest.raises(ValueError, match="ComParE_2016"):
        OpenSmileConfig("GeMAPS")
    with pytest.raises(ValueError, match="with_stats"):
        OpenSmileConfig(with_stats="yes")
    assert OpenSmileConfig("ComParE_2016").dim == OPENSMILE_SETS["ComParE_2016"] == 6373


def test_non_finite_functionals_make_a_bad_file_named_in_the_error(monkeypatch, tmp_path):
    class NaNSmile:
        def process_signal(self, wave, sr):
            return np.full((1, 88), np.nan, np.float32)

    monkeypatch.setattr(extract, "opensmile_version", lambda: "test")
    monkeypatch.setattr("ser.features.opensmile_functionals._smile", lambda name: NaNSmile())
    path = write_tone(tmp_path / "Actor_01" / "03-01-05-01-01-01-01.wav", 220.0)
    clip = Clip(path, "ravdess", "ravdess:01", "male", "angry")
    with pytest.raises(AudioError, match=r"03-01-05-01-01-01-01\.wav.*non-finite"):
        featurise([clip], ["original"], _spec(), cache_dir=None, n_jobs=1, progress=False)
    table = featurise([clip], ["original"], _spec(), cache_dir=None, n_jobs=1,
                      progress=False, on_bad_file="skip")
    assert len(table.features) == 0 and table.skipped[0][0] == path


@needs_opensmile
def test_egemaps_functionals_alone_and_followed_by_our_statistics(tmp_path):
    path = write_tone(tmp_path / "tone.wav", 180.0, seconds=2.0)
    clip = Clip(path, "ravdess", "ravdess:01", "male", "angry")
    stats = UtteranceStatsConfig(extra=("moments",))
    alone = featurise([clip], ["original", "speed1.1"], _spec(), cache_dir=None, n_jobs=1,
                      progress=False).features
    both = featurise([clip], ["original"], _spec(with_stats=True, stats=stats),
                     cache_dir=None, n_jobs=1, progress=False).features
    assert alone.shape == (2, 88) and np.isfinite(alone).all()
    assert not np.allclose(alone[0], alone[1])  # the speed version is its own clip
    assert both.shape == (1, 88 + stats_dim(stats)) == (1, _spec(with_stats=True, stats=stats).dim)
    np.testing.assert_allclose(both[0, :88], alone[0], rtol=1e-6)
    wave = extract.load_audio(path, AUDIO)
    np.testing.assert_allclose(both[0, 88:], utterance_vector(wave, 16000, stats), rtol=1e-5)


@needs_opensmile
def test_cache_keys_hold_the_set_and_our_statistics_only_when_appended():
    base = cache_key(_spec(), "original")
    assert cache_key(_spec("ComParE_2016"), "original") != base
    assert cache_key(_spec(with_stats=True), "original") != base
    other_stats = UtteranceStatsConfig(n_mfcc=13)
    assert cache_key(_spec(stats=other_stats), "original") == base  # not part of the vector
    assert (cache_key(_spec(with_stats=True, stats=other_stats), "original")
            != cache_key(_spec(with_stats=True), "original"))
    assert opensmile_version() in str(extract._key_fields(_spec(), "original"))


@needs_opensmile
def test_a_model_of_opensmile_features_without_the_package_is_refused_with_the_hint(
        monkeypatch):
    meta = VectorPipeline(_spec(), ["original"], ["original"],
                          standardise=Moments(np.zeros(88), np.ones(88))).meta()
    assert pipeline_from_meta(meta).spec.opensmile == OpenSmileConfig()
    monkeypatch.setitem(sys.modules, "opensmile", None)
    with pytest.raises(ValueError, match=r"input pipeline 'opensmile'.*research and educ"):
        pipeline_from_meta(meta)


def test_a_process_with_tensorflow_loaded_is_refused_rather_than_crashed(monkeypatch):
    monkeypatch.setattr("ser.features.opensmile_functionals.opensmile_version", lambda: "x")
    monkeypatch.setitem(sys.modules, "tensorflow", object())
    _smile.cache_clear()
    with pytest.raises(OpenSmileClashError, match="TensorFlow"):
        opensmile_vector(np.zeros(16000, np.float32), 16000, OpenSmileConfig())


def test_serving_answers_non_finite_functionals_with_a_bad_audio_error(monkeypatch, tmp_path):
    from ser.serving.decode import InputError
    from ser.serving.predict import Predictor

    monkeypatch.setattr(extract, "opensmile_version", lambda: "test")
    monkeypatch.setattr("ser.features.opensmile_functionals._smile",
                        lambda name: type("NaNSmile", (), {"process_signal": lambda self, w, sr:
                                                            np.full((1, 88), np.nan)})())
    pipeline = VectorPipeline(_spec(), ["original"], ["original"],
                              standardise=Moments(np.zeros(88), np.ones(88)))
    predictor = Predictor(lambda inputs: np.full((1, 2), 0.5), ["a", "b"], pipeline)
    path = write_tone(tmp_path / "clip.wav", 200.0, seconds=1.0)
    with pytest.raises(InputError, match="non-finite") as err:
        predictor.predict(path)
    assert err.value.code == "bad_audio"
