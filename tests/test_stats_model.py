"""Utterance statistics, speed perturbation, speaker normalisation and the LDA + logistic
regression family: units on generated audio, then tiny end-to-end fits."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from sklearn.discriminant_analysis import LinearDiscriminantAnalysis

from ser.features.augment import change_speed, check_versions, speed_factor
from ser.features.speaker_norm import SpeakerNormConfig, normalise_by_group
from ser.features.utterance import (
    UtteranceStatsConfig,
    frame_descriptors,
    n_descriptors,
    stats_dim,
    utterance_stats,
)
from ser.models.stats_linear import StatsLinearEnsemble, shrinkage_lda
from ser.training.checkpoint import load_classifier
from ser.training.train import train
from tests.conftest import (
    CONF_DIR,
    make_ravdess_tree,
    needs_opensmile,
    scramble_fold1_test_labels,
    train_cfg,
)

SR = 16000
CFG = UtteranceStatsConfig()
CONF = CONF_DIR


def harmonic_tone(f0: float, seconds: float = 1.5, seed: int = 0) -> np.ndarray:
    """A voiced-like tone: 5 harmonics of f0 and a little noise."""
    t = np.arange(int(seconds * SR)) / SR
    wave = sum(0.2 / k * np.sin(2 * np.pi * k * f0 * t) for k in range(1, 6))
    return (wave + 0.005 * np.random.default_rng(seed).standard_normal(t.size)).astype(np.float32)


def stats_of(wave: np.ndarray) -> np.ndarray:
    return utterance_stats(frame_descriptors(wave, SR, CFG), SR, CFG)


# --- features ----------------------------------------------------------------------------


def test_stats_vector_has_the_documented_length_and_is_finite():
    vector = stats_of(harmonic_tone(200.0))
    assert vector.shape == (stats_dim(CFG),) == (992,)
    assert np.isfinite(vector).all() and vector.dtype == np.float32


def test_extra_functionals_extend_the_vector_after_the_default_one():
    rich = replace(CFG, extra=["moments", "voicing", "slow"])
    assert rich.extra == ("moments", "voicing", "slow")  # a tuple: it keys caches
    wave = harmonic_tone(200.0)
    frames = frame_descriptors(wave, SR, rich)
    vector = utterance_stats(frames, SR, rich)
    n = n_descriptors(CFG) - 1
    assert vector.shape == (stats_dim(rich),) == (992 + 8 * n,)
    assert np.isfinite(vector).all()
    np.testing.assert_array_equal(vector[:992], stats_of(wave))  # the default part unchanged
    skew, kurt = vector[992:992 + n], vector[992 + n:992 + 2 * n]
    log_rms = CFG.n_mels + CFG.n_mfcc
    active = frames[frames[:, log_rms] > frames[:, log_rms].max() - 40 / 20 * np.log(10)]
    others = np.delete(active, -2, axis=1)
    from scipy.stats import kurtosis
    from scipy.stats import skew as scipy_skew

    np.testing.assert_allclose(skew[log_rms], scipy_skew(others[:, log_rms]), atol=1e-3)
    np.testing.assert_allclose(kurt[log_rms], kurtosis(others[:, log_rms]), atol=1e-3)


def test_voicing_functionals_summarise_voiced_and_unvoiced_frames_apart():
    """A tone then noise: the voiced part's mean ZCR is the tone's, the unvoiced one's the
    noise's; the slow changes see the switch."""
    rich = replace(CFG, extra=["voicing", "slow"])
    tone = harmonic_tone(200.0, seconds=1.0)
    noise = 0.05 * np.random.default_rng(3).standard_normal(SR).astype(np.float32)
    vector = utterance_stats(frame_descriptors(np.concatenate([tone, noise]), SR, rich),
                             SR, rich)
    n, zcr = n_descriptors(CFG) - 1, CFG.n_mels + CFG.n_mfcc + 1
    voiced_mean, unvoiced_mean = vector[992 + zcr], vector[992 + 2 * n + zcr]
    tone_zcr = stats_of(tone)[zcr]  # mean ZCR of the tone alone
    assert voiced_mean == pytest.approx(tone_zcr, rel=0.2)
    assert unvoiced_mean > 3 * voiced_mean
    slow_size = vector[992 + 4 * n:992 + 5 * n]
    assert (slow_size >= 0).all() and slow_size[zcr] > 0


def test_unknown_extra_functionals_are_refused():
    for bad in (["kurtosis"], ["slow", "slow"]):
        with pytest.raises(ValueError, match="features.stats.extra"):
            UtteranceStatsConfig(extra=bad)


def test_the_default_vector_keeps_its_cache_keys():
    """Vectors without extras are keyed as before `extra` existed (the warm caches stay
    valid); extras change the key."""
    from ser.data.audio import AudioConfig
    from ser.features.augment import AugmentConfig
    from ser.features.extract import FeatureSpec, HandFeatureConfig, cache_key

    def spec(stats):
        return FeatureSpec(audio=AudioConfig(sample_rate=16000, duration=None),
                           hand=HandFeatureConfig(),
                           augment=AugmentConfig(), kind="utterance_stats", stats=stats)

    # the key the stats recipes' warm caches were written under before `extra` existed
    assert cache_key(spec(CFG), "original") == "original-65941405a6c0e81e"
    assert cache_key(spec(replace(CFG, extra=("slow",))), "original") != cache_key(
        spec(CFG), "original")


def test_pitch_of_a_harmonic_tone_is_found_and_voiced():
    frames = frame_descriptors(harmonic_tone(220.0), SR, CFG)
    log_f0 = frames[:, -2]
    voiced = np.isfinite(log_f0)
    assert voiced.mean() > 0.9
    assert np.exp(np.median(log_f0[voiced])) == pytest.approx(220.0, rel=0.02)


@pytest.mark.parametrize("actor", [3, 12, 19])
def test_pitch_follows_librosa_yin_on_real_speech(real_ravdess, actor):
    """The one-FFT pitch gives librosa.yin's f0 (within 1%: another FFT's rounding moves
    the parabolic refinement of short periods, and breaks near-ties in near-silent
    frames the other way) and the windowed autocorrelation at its period."""
    import librosa
    import soundfile as sf

    from ser.features.utterance import _pitch

    wave, sr = sf.read(real_ravdess / f"Actor_{actor:02d}" /
                       f"03-01-05-02-01-01-{actor:02d}.flac", dtype="float32")
    n, hop = CFG.f0_frame_length, CFG.hop_length
    log_f0, periodicity = _pitch(wave, sr, CFG)
    f0 = librosa.yin(wave, fmin=CFG.f0_min, fmax=CFG.f0_max, sr=sr, frame_length=n,
                     hop_length=hop)
    frames = librosa.util.frame(np.pad(wave, n // 2), frame_length=n, hop_length=hop).T
    acf = np.fft.irfft(np.abs(np.fft.rfft(frames * np.hanning(n), n=2 * n)) ** 2)
    lag = np.clip(np.round(sr / f0).astype(int), 1, n - 1)
    expected = acf[np.arange(len(f0)), lag] / (acf[:, 0] + 1e-9)
    same = np.isclose(np.exp(log_f0), f0, rtol=1e-2)
    assert log_f0.shape == f0.shape and same.mean() > 0.99
    np.testing.assert_allclose(periodicity[same], expected[same], atol=1e-4)


@pytest.mark.parametrize("actor", [5, 16])
def test_spectrogram_shape_and_zero_crossings_follow_librosa(real_ravdess, actor):
    """ser's own STFT power, spectral shape and zero-crossing rate give librosa's
    figures, on speech, on silence and on speech after silence."""
    import librosa
    import soundfile as sf

    from ser.features.hand import zero_crossing_rate
    from ser.features.utterance import _power_spectrogram, _spectral_shape

    speech, sr = sf.read(real_ravdess / f"Actor_{actor:02d}" /
                         f"03-01-03-01-02-01-{actor:02d}.flac", dtype="float32")
    silence = np.zeros(8000, np.float32)
    n_fft, win, hop = CFG.n_fft, CFG.win_length, CFG.hop_length
    for wave in (speech, silence, np.concatenate([silence, speech[:8000]])):
        power = np.abs(librosa.stft(wave, n_fft=n_fft, win_length=win, hop_length=hop)) ** 2
        # float32 FFTs: rounding is relative to the frame's loudest bin
        error = np.abs(_power_spectrogram(wave, CFG) - power)
        assert (error <= 1e-5 * power.max(axis=0) + 1e-12).all()
        mag = np.sqrt(power)
        expected = [
            librosa.feature.spectral_centroid(S=mag, sr=sr)[0] / 1000,
            librosa.feature.spectral_bandwidth(S=mag, sr=sr)[0] / 1000,
            librosa.feature.spectral_rolloff(S=mag, sr=sr)[0] / 1000,
            np.log(librosa.feature.spectral_flatness(S=mag)[0] + 1e-6),
        ]
        for got, want in zip(_spectral_shape(mag, power, sr, n_fft), expected, strict=True):
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
        zcr = librosa.feature.zero_crossing_rate(wave, frame_length=win, hop_length=hop)[0]
        np.testing.assert_allclose(zero_crossing_rate(wave[None], win, hop)[0], zcr, atol=1e-6)


def test_noise_is_mostly_unvoiced():
    noise = 0.1 * np.random.default_rng(1).standard_normal(SR).astype(np.float32)
    frames = frame_descriptors(noise, SR, CFG)
    assert np.isfinite(frames[:, -2]).mean() < 0.2


def test_silence_around_a_clip_leaves_its_statistics_alone():
    """Active frames only: padding a clip with silence changes just its duration stat."""
    tone = harmonic_tone(180.0)
    padded = np.concatenate([np.zeros(SR // 2, np.float32), tone, np.zeros(SR, np.float32)])
    a, b = stats_of(tone), stats_of(padded)
    n_mel = CFG.n_mels
    np.testing.assert_allclose(a[:n_mel], b[:n_mel], atol=0.3)  # mean log-mel per band
    assert b[-1] == pytest.approx(a[-1] + 1.5, abs=0.02)  # seconds


def test_speed_versions_parse_and_change_duration_and_pitch():
    assert check_versions(["original", "speed0.9", "speed1.15"]) == [
        "original", "speed0.9", "speed1.15"]
    assert speed_factor("speed1.1") == 1.1 and speed_factor("noise") is None
    for bad in (["speed3"], ["speedy"], ["original", "original"]):
        with pytest.raises(ValueError, match="speed<factor>"):
            check_versions(bad)
    tone = harmonic_tone(200.0)
    fast = change_speed(tone, SR, 1.25)
    assert len(fast) == pytest.approx(len(tone) / 1.25, abs=2)
    f0 = np.exp(np.nanmedian(frame_descriptors(fast, SR, CFG)[:, -2]))
    assert f0 == pytest.approx(250.0, rel=0.03)


# --- speaker normalisation -----------------------------------------------------------------


def test_each_group_is_standardised_by_its_own_rows():
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(5, 2, (30, 4)), rng.normal(-1, 0.5, (20, 4))])
    groups = ["a"] * 30 + ["b"] * 20
    z = normalise_by_group(x, groups)
    for g in ("a", "b"):
        rows = np.array(groups) == g
        np.testing.assert_allclose(z[rows].mean(axis=0), 0, atol=1e-5)
        np.testing.assert_allclose(z[rows].std(axis=0), 1, atol=1e-4)


def test_speaker_norm_config_rejects_unknown_modes():
    with pytest.raises(ValueError, match="speaker_norm.mode"):
        SpeakerNormConfig(mode="gender")
    with pytest.raises(ValueError, match="speaker_norm.test"):
        SpeakerNormConfig(mode="speaker", test="labels")


# --- model ---------------------------------------------------------------------------------


def test_shrinkage_lda_matches_sklearn_with_equal_priors():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 4, 400)
    x = rng.normal(size=(400, 30)) + 0.7 * np.eye(4, 30)[y]
    weight, bias = shrinkage_lda(x, y, 4)
    ref = LinearDiscriminantAnalysis(solver="lsqr", shrinkage="auto", priors=np.ones(4) / 4)
    ref.fit(x, y)
    np.testing.assert_allclose(weight, ref.coef_, atol=1e-5)
    np.testing.assert_allclose(bias, ref.intercept_, atol=1e-5)


@pytest.mark.parametrize("shrinkage", [0.0, 0.1, 0.5])
def test_fixed_shrinkage_lda_shrinks_each_class_covariance_of_standardised_columns(shrinkage):
    from sklearn.covariance import empirical_covariance, shrunk_covariance

    rng = np.random.default_rng(2)
    y = rng.integers(0, 4, 300)
    x = rng.normal(size=(300, 20)) * rng.uniform(0.5, 3, 20) + 0.7 * np.eye(4, 20)[y]
    weight, bias = shrinkage_lda(x, y, 4, shrinkage)
    cov, means = np.zeros((20, 20)), np.stack([x[y == k].mean(axis=0) for k in range(4)])
    for k in range(4):
        std = x[y == k].std(axis=0)
        z = (x[y == k] - means[k]) / std
        cov += std[:, None] * shrunk_covariance(empirical_covariance(z), shrinkage) * std / 4
    expected = np.linalg.solve(cov, means.T).T
    np.testing.assert_allclose(weight, expected, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(bias, -0.5 * (means * expected).sum(axis=1) + np.log(0.25),
                               rtol=1e-4, atol=1e-5)
    if shrinkage == 0.0:  # no shrinkage: plain LDA, as sklearn fits it
        ref = LinearDiscriminantAnalysis(solver="lsqr", priors=np.ones(4) / 4).fit(x, y)
        np.testing.assert_allclose(weight, ref.coef_, atol=1e-5)
    else:  # the intensity is used: it changes the discriminant
        auto, _ = shrinkage_lda(x, y, 4)
        assert not np.allclose(weight, auto, atol=1e-3)


def test_lda_shrinkage_is_checked_and_kept_in_the_checkpoint_meta():
    for bad in (-0.1, 1.5, "ledoit", None):
        with pytest.raises(ValueError, match="lda_shrinkage"):
            StatsLinearEnsemble(6, 3, lda_shrinkage=bad)
    net = StatsLinearEnsemble(6, 3, lda_shrinkage="0.1")
    assert net.meta()["lda_shrinkage"] == 0.1
    assert StatsLinearEnsemble.from_meta(net.meta()).lda_shrinkage == 0.1
    old = {k: v for k, v in net.meta().items() if k != "lda_shrinkage"}
    assert StatsLinearEnsemble.from_meta(old).lda_shrinkage == "auto"  # older checkpoints


def test_absent_class_never_wins_the_lda_head():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 3, 200)  # class 3 of 4 absent
    weight, bias = shrinkage_lda(rng.normal(size=(200, 5)) + np.eye(4, 5)[y], y, 4)
    scores = rng.normal(size=(50, 5)) @ weight.T + bias
    assert (scores.argmax(axis=1) != 3).all()


def test_ensemble_trains_the_logistic_head_and_averages_both_in_eval():
    net = StatsLinearEnsemble(n_features=6, n_classes=3)
    x = torch.randn(40, 6)
    with pytest.raises(RuntimeError, match="never fit"):
        net.eval()(x)
    net.fit_closed_form(x, torch.arange(40) % 3)
    net.train()
    torch.testing.assert_close(net(x), net.logreg(x))
    net.eval()
    expected = (net.lda(x).softmax(-1) + net.logreg(x).softmax(-1)) / 2
    torch.testing.assert_close(net(x).exp(), expected)
    state = StatsLinearEnsemble(6, 3)
    state.load_state_dict(net.state_dict())
    torch.testing.assert_close(state.eval()(x), net(x))  # fitted LDA survives a checkpoint


# --- end to end ------------------------------------------------------------------------------

TINY = ["trainer.max_epochs=3", "logger=none", "data.progress=false",
        "trainer.enable_progress_bar=false", "augment.versions=[original,speed0.9]",
        "augment.test_versions=[original,speed1.1]"]


@pytest.fixture(scope="module")
def tone_corpus(tmp_path_factory) -> Path:
    data = tmp_path_factory.mktemp("stats_data")
    make_ravdess_tree(data / "ravdess", emotions=range(1, 9))
    return data


@pytest.fixture(scope="module")
def stats_cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("stats_cache")


def stats_cfg(name: str, data: Path, cache: Path, out: Path, *overrides: str):
    from omegaconf import open_dict

    cfg = train_cfg(out, data, f"experiment={name}", f"paths.cache_dir={cache}", *TINY,
                    *overrides)
    with open_dict(cfg):
        cfg.paths.output_dir = str(out)
    return cfg


def test_speaker_norm_group_overrides_an_experiment():
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        cfg = compose("train", overrides=["experiment=stats_ravdess_to_tess",
                                          "speaker_norm=speaker"])
    assert cfg.data.speaker_norm.mode == "speaker"
    assert list(cfg.data.split.test_corpora) == ["tess"]
    assert list(cfg.augment.test_versions) == ["original"]


@pytest.mark.slow
def test_single_clip_fit_learns_and_reports(tone_corpus, stats_cache, tmp_path):
    cfg = stats_cfg("stats_ravdess", tone_corpus, stats_cache, tmp_path)
    metrics = train(cfg)
    assert metrics["test/ua"] > 0.5  # tones differ by emotion: learnable
    report = json.loads((tmp_path / "metrics.json").read_text())
    assert report["protocol"] == "speaker-independent, fold 1"
    assert "no_enrolment" not in report
    rows = (tmp_path / "predictions.csv").read_text().splitlines()[1:]
    assert len(rows) == 32 and rows[0].split(",")[2] == "original+speed1.1"
    model = load_classifier(tmp_path / "checkpoints" / "best.ckpt")
    assert bool(model.net.lda_fitted) and model.pipeline.kind == "utterance_stats"
    assert model.pipeline.test_versions == ["original", "speed1.1"]


@pytest.mark.slow
def test_speaker_normalised_fit_reports_both_protocols_and_evaluates(
        tone_corpus, stats_cache, tmp_path):
    from omegaconf import open_dict

    from ser.training.evaluate import evaluate

    cfg = stats_cfg("stats_ravdess_speaker_norm", tone_corpus, stats_cache, tmp_path / "train")
    metrics = train(cfg)
    assert {"test/ua", "no_enrolment/ua"} <= set(metrics)
    report = json.loads((tmp_path / "train" / "metrics.json").read_text())
    assert report["protocol"].endswith("speaker-normalised (test speakers' own unlabelled clips)")
    assert report["no_enrolment"]["protocol"].endswith("without enrolment (training statistics)")
    assert sum(map(sum, report["no_enrolment"]["confusion"])) == 32

    ckpt = tmp_path / "train" / "checkpoints" / "best.ckpt"
    pipeline = load_classifier(ckpt).pipeline
    assert pipeline.speaker_norm.mode == "speaker" and pipeline.fallback.mean.shape == (992,)
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        ecfg = compose("eval", overrides=[f"ckpt_path={ckpt}", f"paths.data_dir={tone_corpus}",
                                          f"paths.cache_dir={stats_cache}"])
    with open_dict(ecfg):
        ecfg.paths.output_dir = str(tmp_path / "eval")
    evaluated = evaluate(ecfg)
    assert evaluated["ua"] == pytest.approx(report["ua"])
    assert evaluated["no_enrolment"]["ua"] == pytest.approx(report["no_enrolment"]["ua"])


@pytest.mark.slow
@pytest.mark.parametrize("options", [
    (),
    # the richer recipe's options: fixed LDA shrinkage, extra functionals
    ("model.net.lda_shrinkage=0.2", "features.stats.extra=[moments,voicing,slow]"),
    # openSMILE's functionals followed by ours (the optional extra)
    pytest.param(("features=opensmile", "features.opensmile.with_stats=true"),
                 marks=needs_opensmile),
], ids=["recipe", "rich", "opensmile"])
def test_test_speakers_labels_never_reach_training_or_selection(
        tone_corpus, stats_cache, tmp_path, monkeypatch, options):
    """Scramble the test actors' labels: the fitted weights and the chosen epoch must not
    move (features, speaker statistics, LDA, early stopping and checkpointing see no test
    label); only the test score may."""
    runs = {}
    for name, patch in (("real", False), ("scrambled", True)):
        if patch:
            scramble_fold1_test_labels(monkeypatch)
        cfg = stats_cfg("stats_ravdess_speaker_norm", tone_corpus, stats_cache, tmp_path / name,
                        *options)
        metrics = train(cfg)
        weights = load_classifier(tmp_path / name / "checkpoints" / "best.ckpt").state_dict()
        runs[name] = metrics, weights
    (m_real, w_real), (m_scr, w_scr) = runs["real"], runs["scrambled"]
    assert m_real["val/ua_best"] == m_scr["val/ua_best"]
    for key in w_real:
        torch.testing.assert_close(w_real[key], w_scr[key], msg=key)
    assert m_real["test/ua"] != m_scr["test/ua"]


@pytest.mark.slow
def test_serving_with_enrolment_matches_evaluation_and_onnx(tone_corpus, stats_cache, tmp_path):
    """ser-predict on a speaker-normalised model: with the test speaker's clips enrolled it
    gives evaluation's probabilities; without, the training statistics; ONNX agrees."""
    import csv

    from ser.serving.onnx_export import export_onnx
    from ser.serving.predict import Predictor, main

    cfg = stats_cfg("stats_ravdess_speaker_norm", tone_corpus, stats_cache, tmp_path)
    train(cfg)
    ckpt = tmp_path / "checkpoints" / "best.ckpt"
    with open(tmp_path / "predictions.csv") as f:
        rows = [r for r in csv.DictReader(f) if r["speaker"] == "ravdess:02"]
    classes = load_classifier(ckpt).class_names

    predictor = Predictor.load(ckpt)
    fallback = predictor.predict(rows[0]["path"])
    assert len(fallback.windows) == 1
    assert sum(fallback.probabilities.values()) == pytest.approx(1, abs=1e-4)
    predictor.enrol([r["path"] for r in rows])  # the speaker's 8 clips, as evaluation did
    for row in rows[:3]:
        probs = predictor.predict(row["path"]).probabilities
        np.testing.assert_allclose([probs[c] for c in classes],
                                   [float(row[c]) for c in classes], atol=1e-4)
    assert predictor.predict(rows[0]["path"]).probabilities != fallback.probabilities

    onnx_predictor = Predictor.load(export_onnx(ckpt, tmp_path / "model.onnx"))
    onnx_probs = onnx_predictor.predict(rows[0]["path"]).probabilities
    np.testing.assert_allclose(list(onnx_probs.values()), list(fallback.probabilities.values()),
                               atol=1e-5)

    assert main([str(ckpt), rows[0]["path"], "--enrol", rows[0]["path"]]) == 2  # one clip
    with pytest.raises(ValueError, match="same audio as"):  # a clip enrolled twice
        Predictor.load(ckpt).enrol([rows[0]["path"], rows[1]["path"], rows[0]["path"]])
    single = Predictor.load(ckpt)
    single.pipeline.speaker_norm = SpeakerNormConfig()  # as a single-clip model is
    with pytest.raises(ValueError, match="not trained with speaker normalisation"):
        single.enrol([r["path"] for r in rows])


def test_reports_name_the_normalisation_protocol():
    from ser.evaluation.report import fallback_label, protocol_label

    base = {"protocol": "speaker_independent", "fold": 3, "tested_corpora": ["ravdess"]}
    assert protocol_label(base) == "speaker-independent, fold 3"
    emobox = {**base, "protocol": "emobox"}
    assert protocol_label(emobox) == "speaker-independent, EmoBox fold 3"
    norm = {**base, "speaker_norm": "speaker", "speaker_norm_test": "speaker"}
    assert protocol_label(norm).endswith("speaker-normalised (test speakers' own unlabelled clips)")
    assert fallback_label(norm).endswith("without enrolment (training statistics)")
    cross = {"protocol": "cross_corpus", "trained_corpora": ["ravdess"],
             "tested_corpora": ["tess"], "speaker_norm": "speaker"}
    assert protocol_label(cross).startswith("cross-corpus, trained on ravdess, tested on tess, "
                                            "speaker-normalised")
