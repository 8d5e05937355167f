"""EmoBox's frozen-encoder zoo: wav2vec2, HuBERT, WavLM, data2vec-audio and Whisper's encoder.

Tiny random configs of each architecture, saved as hub folders are; for each a real short
fit through its EmoBox recipe on real RAVDESS clips, served back by `Predictor`; padding
invariance; the cache; Whisper's encoder against transformers' own forward; old
checkpoints' meta; the start-up checks; the offline message; ONNX for Whisper.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import WhisperFeatureExtractor, WhisperModel

from ser.data.labels import EMOTIONS
from ser.models import backbone as bb
from ser.models.frozen import (
    FrozenBackbone,
    LightHead,
    build_light_frozen,
    build_wav2vec2_cnn,
)
from ser.serving.onnx_export import export_onnx
from ser.serving.predict import Predictor
from ser.training.config_check import ConfigError, check_config
from ser.training.train import train
from tests.conftest import CLIPS_PER_ACTOR, save_tiny_whisper, train_cfg
from tests.test_transformers import clip_batch


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models: one intra-op thread is much faster on a shared CPU (one fit: 20 s with
    torch's default, 3 s with one, measured on this 2-core machine under load)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def zoo(tiny_backbones) -> dict[str, Path]:
    """The tiny random backbones, one per architecture EmoBox reports (conftest)."""
    return tiny_backbones


KINDS = ("wav2vec2", "hubert", "wavlm", "data2vec-audio", "whisper")
# the EmoBox recipe each tiny architecture stands in for
RECIPES = {"wav2vec2": "emobox_wav2vec2_base", "hubert": "emobox_hubert_base",
           "wavlm": "emobox_wavlm_base_plus", "data2vec-audio": "emobox_data2vec_audio_base",
           "whisper": "emobox_whisper_base"}


def build(kind: str, folder: Path, **kwargs) -> FrozenBackbone:
    family = "whisper_frozen" if kind == "whisper" else "ssl_frozen"
    return build_light_frozen(EMOTIONS, {"name_or_path": str(folder)}, family, **kwargs)


# -- real fits, served back ------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.real_data
@pytest.mark.parametrize("kind", KINDS)
def test_each_recipe_fits_real_clips_and_the_served_model_reproduces_it(
        kind, zoo, real_subset, tmp_path):
    cfg = train_cfg(tmp_path, real_subset, f"experiment={RECIPES[kind]}",
                    f"model.net.backbone.name_or_path={zoo[kind]}", "trainer.max_epochs=1",
                    "data.batch_size=8", "data.n_jobs=0", "trainer.accelerator=cpu",
                    "logger=none", "data.fold=1")
    metrics = train(cfg)
    assert {"val/ua", "test/ua", "test/wa", "test/macro_f1"} <= set(metrics)
    run = tmp_path / "run"
    report = json.loads((run / "metrics.json").read_text())
    assert report["protocol"] == "speaker-independent, EmoBox fold 1"
    assert report["backbone"] == {"name_or_path": str(zoo[kind]), "pretrained": True}
    (cache,) = (tmp_path / "cache" / "hidden_states").iterdir()
    assert len(list(cache.glob("*.npy"))) == 24 * CLIPS_PER_ACTOR  # each clip once

    with open(run / "predictions.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 4 * CLIPS_PER_ACTOR  # EmoBox's fold 1: 4 test actors
    ckpt = run / "checkpoints" / "best.ckpt"
    predictor = Predictor.load(ckpt)
    assert predictor.info["network"] == ("whisper_frozen" if kind == "whisper" else "ssl_frozen")
    for row in rows:
        got = predictor.predict(row["path"]).probabilities
        np.testing.assert_allclose([got[c] for c in EMOTIONS], [float(row[c]) for c in EMOTIONS],
                                   atol=1e-5, err_msg=row["path"])

    if kind in ("hubert", "whisper"):  # one export per family: the light head, Whisper's STFT
        runtime = Predictor.load(export_onnx(ckpt, tmp_path / "m.onnx"))
        for row in rows[:3]:
            onnx_p = runtime.predict(row["path"]).probabilities
            torch_p = predictor.predict(row["path"]).probabilities
            np.testing.assert_allclose([onnx_p[c] for c in EMOTIONS],
                                       [torch_p[c] for c in EMOTIONS], atol=1e-4)


# -- one clip, one value -----------------------------------------------------------------------


@pytest.mark.parametrize("layer", [-1, "weighted"])
@pytest.mark.parametrize("kind", KINDS)
def test_a_clips_logits_do_not_depend_on_padding_or_batch_mates(zoo, kind, layer):
    net = build(kind, zoo[kind], layer=layer).eval()
    assert isinstance(net.head, LightHead)
    waves, lengths = clip_batch(3, (1.0, 1.7, 1.3))
    with torch.no_grad():
        batched = net(waves, lengths)
        alone = torch.cat([net(waves[i : i + 1, :n], lengths[i : i + 1])
                           for i, n in enumerate(lengths.tolist())])
    torch.testing.assert_close(batched, alone, atol=1e-5, rtol=1e-5)
    assert batched.shape == (3, len(EMOTIONS))


def test_whisper_runs_each_clip_at_its_length_as_transformers_runs_a_full_window(tmp_path):
    """On a whole window the per-clip path is transformers' own forward; shorter clips run
    at their own length, which WhisperEncoder.forward refuses."""
    folder = save_tiny_whisper(tmp_path / "w1s", seconds=1)  # a 1 s window: 100 mel frames
    net = build("whisper", folder, layer="weighted")
    assert net.inputs == bb.MelSpec(n_mels=80)
    reference = WhisperModel.from_pretrained(folder).encoder.eval()
    extractor = WhisperFeatureExtractor.from_pretrained(folder)
    wave = torch.from_numpy(np.random.default_rng(0).standard_normal(16000) * 0.1).float()
    mel = extractor(wave.numpy(), sampling_rate=16000, return_tensors="pt").input_features
    torch.testing.assert_close(net.encoder.log_mel(wave[None]), mel, atol=1e-5, rtol=1e-5)
    with torch.no_grad():
        theirs = reference(mel, output_hidden_states=True)
        (mine,) = net.hidden_states(wave[None], torch.tensor([16000]))
    assert mine.shape == (3, 50, 32)  # embeddings + 2 layers, 50 frames of 20 ms
    torch.testing.assert_close(mine, torch.stack(theirs.hidden_states)[:, 0], atol=1e-5,
                               rtol=1e-5)
    with pytest.raises(ValueError, match="3000|100"):
        reference(mel[..., :60])  # what the per-clip path avoids
    (short,) = net.hidden_states(wave[None, :9600], torch.tensor([9600]))
    assert short.shape == (3, 30, 32)


def test_the_hubs_whisper_layout_loads_its_encoder_weights(tmp_path):
    """Hub checkpoints are WhisperForConditionalGeneration (`model.encoder.*` keys)."""
    from transformers import WhisperConfig, WhisperForConditionalGeneration

    from tests.conftest import TINY_WHISPER

    torch.manual_seed(1)
    full = WhisperForConditionalGeneration(WhisperConfig(**TINY_WHISPER))
    full.save_pretrained(tmp_path / "hub")  # no preprocessor_config: the model's mel bins
    net = build("whisper", tmp_path / "hub")
    saved = full.model.encoder.state_dict()
    assert all(torch.equal(v, saved[k]) for k, v in net.backbone.state_dict().items())
    assert net.inputs == bb.MelSpec(n_mels=80)


def test_a_cache_hit_gives_the_head_the_same_input(zoo, tmp_path, monkeypatch):
    waves, lengths = clip_batch(2, (1.0, 1.4))
    keys = ["clip-a", "clip-b"]
    for kind in ("wavlm", "whisper"):
        net = build(kind, zoo[kind], cache_dir=tmp_path / kind)
        fresh = net.features(waves, lengths, keys)
        with monkeypatch.context() as m:
            m.setattr(FrozenBackbone, "hidden_states", _no_backbone)
            cached = build(kind, zoo[kind], cache_dir=tmp_path / kind).features(waves, lengths,
                                                                                keys)
        assert all(torch.equal(a, b) for a, b in zip(fresh, cached, strict=True))
        spec = json.loads(next((tmp_path / kind).glob("*/spec.json")).read_text())
        assert spec.get("encoder") == ("whisper" if kind == "whisper" else None)


def _no_backbone(*args, **kwargs):
    raise AssertionError("the backbone ran although every clip was cached")


def test_a_checkpoint_made_before_the_zoo_still_loads(tiny_backbones):
    """wav2vec2_cnn meta without `encoder` and `head_type`: the waveform encoder, CNN head."""
    net = build_wav2vec2_cnn(EMOTIONS, {"name_or_path": str(tiny_backbones["wav2vec2"])}).eval()
    old = {k: v for k, v in net.meta().items() if k not in ("encoder", "head_type")}
    again = FrozenBackbone.from_meta(old).eval()
    again.load_state_dict(net.state_dict())  # the same keys: nothing renamed
    assert again.meta() == net.meta() and again.kind == "wav2vec2_cnn"
    waves, lengths = clip_batch(2)
    with torch.no_grad():
        torch.testing.assert_close(again(waves, lengths), net(waves, lengths))


# -- start-up and offline ----------------------------------------------------------------------


def _composed(*overrides: str):
    from hydra import compose, initialize_config_dir

    from tests.conftest import CONF_DIR

    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return compose("train", overrides=list(overrides))


def test_a_backbone_under_the_wrong_family_stops_at_start_up(zoo):
    with pytest.raises(ConfigError) as err:
        check_config(_composed("model=whisper_frozen",
                               f"model.net.backbone.name_or_path={zoo['wavlm']}"))
    assert str(err.value) == (f"model=whisper_frozen can't run backbone {zoo['wavlm']} "
                              "(wavlm): use model=ssl_frozen (or another waveform model)")
    with pytest.raises(ConfigError, match="can't run backbone openai/whisper-base "
                       r"\(whisper\): use model=whisper_frozen"):
        check_config(_composed("experiment=emobox_wavlm_large",
                               "model.net.backbone.name_or_path=openai/whisper-base"))
    for recipe in RECIPES.values():  # every recipe as shipped passes
        check_config(_composed(f"experiment={recipe}"))


def test_an_uncached_whisper_id_offline_names_the_ways_out(monkeypatch, tmp_path,
                                                             generated_data_dir):
    monkeypatch.setattr(bb, "hub_reachable", lambda timeout=3.0: False)
    cfg = train_cfg(tmp_path, generated_data_dir, "model=whisper_frozen",
                    "model.net.backbone.name_or_path=nobody/whisper-not-cached", "logger=none")
    with pytest.raises(bb.BackboneUnavailableError) as err:
        train(cfg)
    message = str(err.value)
    assert "nobody/whisper-not-cached" in message and "hub can't be reached" in message
    assert "name_or_path=DIR" in message and "openai/whisper-large-v3" in message
    # the EmoBox ids build offline with random weights, with their own mel bins
    large = bb.load_config("openai/whisper-large-v3", pretrained=False)
    assert (large.model_type, large.d_model, large.encoder_layers) == ("whisper", 1280, 32)
    assert bb.load_mel_spec("openai/whisper-large-v3", large).n_mels == 128
    wavlm = bb.load_config("microsoft/wavlm-large", pretrained=False)
    assert (wavlm.hidden_size, wavlm.num_hidden_layers, wavlm.feat_extract_norm) == (
        1024, 24, "layer")
