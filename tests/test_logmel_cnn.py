"""The log-mel frame CNN (model=logmel_cnn): its front end, padding, augmentation, and
that the test actors' labels reach neither its weights nor its chosen epoch."""

from __future__ import annotations

import librosa
import numpy as np
import pytest
import torch

from ser.models.logmel_cnn import (
    LogMel,
    LogMelCNN,
    log_floored,
    normalise_frames,
    spec_augment,
)
from ser.models.masks import sample_mask
from ser.training.checkpoint import load_classifier
from ser.training.train import train
from tests.conftest import make_ravdess_tree, scramble_fold1_test_labels, train_cfg

SMALL = dict(n_mels=16, channels=[8, 8], kernels=[3, 3], dilations=[1, 2], embedding=16,
             attention_hidden=8, head_hidden=8)


def test_log_mel_is_librosas_centred_power_mel():
    rng = np.random.default_rng(0)
    wave = rng.standard_normal(8000).astype(np.float32) * 0.1
    ours = LogMel(16000, n_fft=512, win_length=400, hop_length=160, n_mels=40)(
        torch.from_numpy(wave)[None])[0].numpy()
    mel = librosa.feature.melspectrogram(y=wave, sr=16000, n_fft=512, win_length=400,
                                         hop_length=160, n_mels=40, fmin=50.0, center=True,
                                         pad_mode="constant", power=2.0)
    assert ours.shape == mel.shape == (40, 1 + 8000 // 160)
    np.testing.assert_allclose(ours, mel, rtol=1e-3, atol=1e-4 * mel.max())
    mask = torch.ones(1, ours.shape[1], dtype=torch.bool)
    floored = log_floored(torch.from_numpy(ours)[None], mask, top_db=60.0)[0].numpy()
    np.testing.assert_allclose(floored, np.log(np.maximum(ours, ours.max() * 1e-6)), rtol=1e-6)
    half_silent = torch.cat([torch.from_numpy(wave), torch.zeros(8000)])[None]
    silent, gain = LogMel(16000, n_mels=40)(half_silent), LogMel(16000, n_mels=40)(3 * half_silent)
    mask = torch.ones(1, silent.shape[2], dtype=torch.bool)
    quiet, loud = log_floored(silent, mask, 60.0), log_floored(gain, mask, 60.0)
    floor = float(torch.log(silent.max() * 1e-6))
    assert quiet[0, :, -10:].numpy() == pytest.approx(floor, rel=1e-5)  # digital silence
    torch.testing.assert_close(loud - quiet, torch.full_like(quiet, float(np.log(9.0))))


def test_a_clip_scores_the_same_alone_and_padded_in_a_batch():
    torch.manual_seed(0)
    net = LogMelCNN(n_classes=4, **SMALL).eval()
    short, long = torch.randn(1, 9000) * 0.1, torch.randn(1, 16000) * 0.1
    batch = torch.cat([torch.nn.functional.pad(short, (0, 7000)), long])
    with torch.no_grad():
        together = net(batch, torch.tensor([9000, 16000]))
        alone = net(short, torch.tensor([9000]))
    torch.testing.assert_close(together[0], alone[0], atol=1e-5, rtol=1e-4)


def test_cmn_removes_each_clips_band_means_over_its_own_frames():
    x = torch.randn(2, 3, 10) + 5.0
    mask = sample_mask(torch.tensor([10, 6]), 10)
    out = normalise_frames(x, mask, "cmn")
    torch.testing.assert_close(out[1, :, :6].mean(dim=1), torch.zeros(3), atol=1e-5, rtol=0)
    assert (out[1, :, 6:] == 0).all()
    cmvn = normalise_frames(x, mask, "cmvn")
    torch.testing.assert_close(cmvn[0].std(dim=1, unbiased=False), torch.ones(3), atol=1e-3,
                               rtol=0)


def test_spec_augment_masks_inside_each_clip_and_only_in_training():
    torch.manual_seed(0)
    x = torch.ones(64, 16, 50)
    lengths = torch.full((64,), 30)
    times = spec_augment(x, lengths, freq_masks=0, freq_width=4, time_masks=1, time_width=10)
    masked = (times == 0).all(dim=1)  # (clips, frames): whole frames zeroed
    assert masked[:, :30].any() and not masked[:, 30:].any()  # inside each clip's frames
    assert masked.sum(dim=1).max() <= 6  # at most a fifth of a 30-frame clip
    bands = spec_augment(x, lengths, freq_masks=1, freq_width=4, time_masks=0, time_width=10)
    zeroed = (bands == 0).all(dim=2)  # (clips, bands)
    assert zeroed.any() and zeroed.sum(dim=1).max() <= 4
    net = LogMelCNN(n_classes=4, **SMALL)
    waves, lens = torch.randn(4, 8000), torch.full((4,), 8000)
    net.eval()
    with torch.no_grad():
        torch.testing.assert_close(net(waves, lens), net(waves, lens))


def test_bad_settings_stop_with_a_message():
    with pytest.raises(ValueError, match="normalisation must be one of"):
        LogMelCNN(normalisation="global")
    with pytest.raises(ValueError, match="one entry per layer"):
        LogMelCNN(channels=[8], kernels=[3, 3], dilations=[1])


TINY = ["experiment=logmel_ravdess", "model.net.n_mels=16", "model.net.channels=[8,8]",
        "model.net.kernels=[3,3]", "model.net.dilations=[1,2]", "model.net.embedding=16",
        "model.net.head_hidden=8", "data.batch_size=16", "data.n_jobs=0", "logger=none",
        "trainer.max_epochs=3", "features.audio.duration=1.0",
        "model.net.normalisation=none"]  # per-clip mean removal would erase the tones


@pytest.mark.slow
def test_test_speakers_labels_never_reach_training_or_selection(tmp_path, monkeypatch):
    """Scramble the test actors' labels: the weights and the chosen epoch must not move;
    only the test score may."""
    data = make_ravdess_tree(tmp_path / "data" / "ravdess").parent
    runs = {}
    for name, patch in (("real", False), ("scrambled", True)):
        if patch:
            scramble_fold1_test_labels(monkeypatch)
        metrics = train(train_cfg(tmp_path / name, data, *TINY))
        weights = load_classifier(tmp_path / name / "run" / "checkpoints" / "best.ckpt")
        runs[name] = metrics, weights.state_dict()
    (m_real, w_real), (m_scr, w_scr) = runs["real"], runs["scrambled"]
    assert m_real["val/ua_best"] == m_scr["val/ua_best"]
    for key in w_real:
        torch.testing.assert_close(w_real[key], w_scr[key], msg=key)
    assert m_real["test/ua"] != m_scr["test/ua"]
