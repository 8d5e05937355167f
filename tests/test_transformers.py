"""Waveform models: tiny random backbones written with save_pretrained and loaded by path.

Real short fits of both models on real RAVDESS clips, padding invariance, the hidden-state
cache (the second run never runs the backbone), the offline error, the transformers
export, input normalisation, and the waveform datamodule and its length-bucketing sampler.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import open_dict
from transformers import (
    AutoFeatureExtractor,
    AutoModel,
    AutoModelForAudioClassification,
    Wav2Vec2FeatureExtractor,
)

from ser.data.audio import AudioConfig
from ser.data.labels import EMOTIONS
from ser.features.pipelines import WaveformPipeline
from ser.features.waveform import (
    LengthBucketSampler,
    WaveAugmentConfig,
    WaveformConfig,
    augment_wave,
    clip_samples,
    padding_fraction,
)
from ser.models import backbone as bb
from ser.models.frozen import FrozenBackbone, build_wav2vec2_cnn
from ser.models.hubert import build_finetune_classifier
from ser.training.checkpoint import load_classifier
from ser.training.datamodule import SERDataModule
from ser.training.train import resolve_precision, train
from tests.conftest import CLIPS_PER_ACTOR, save_tiny_backbone, train_cfg


def waveform_cfg(tmp_path: Path, data_dir: Path, model: str, backbone: Path, *overrides: str):
    return train_cfg(tmp_path, data_dir, f"model={model}", "data=ravdess",
                     f"model.net.backbone.name_or_path={backbone}", "trainer.precision=32-true",
                     "trainer.accelerator=cpu", "data.batch_size=8", "data.n_jobs=0",
                     "logger=none", *overrides)


def clip_batch(n: int = 2, seconds: tuple[float, ...] = (1.0, 1.6), seed: int = 0):
    """Random clips of the given lengths, zero-padded into one batch."""
    rng = np.random.default_rng(seed)
    lengths = torch.tensor([int(s * 16000) for s in seconds[:n]])
    waves = torch.zeros(n, int(lengths.max()))
    for i, length in enumerate(lengths):
        waves[i, :length] = torch.from_numpy(0.1 * rng.standard_normal(int(length))).float()
    return waves, lengths


# -- the two models, fit for real ---------------------------------------------------------


@pytest.mark.slow
@pytest.mark.real_data
def test_hubert_fit_on_real_clips_reloads_and_exports(tmp_path, tiny_backbones, real_subset):
    tiny = tiny_backbones
    cfg = waveform_cfg(tmp_path, real_subset, "hubert", tiny["hubert"], "data.fold=2")
    metrics = train(cfg)
    assert {"val/ua", "test/ua", "test/wa", "test/macro_f1"} <= set(metrics)
    run = Path(cfg.paths.output_dir)
    report = json.loads((run / "metrics.json").read_text())
    assert report["protocol"] == "speaker-independent, fold 2"
    assert sum(map(sum, report["confusion"])) == 4 * CLIPS_PER_ACTOR  # 4 test actors
    assert report["backbone"] == {"name_or_path": str(tiny["hubert"]), "pretrained": True}
    assert len((run / "predictions.csv").read_text().splitlines()) == 1 + 4 * CLIPS_PER_ACTOR

    model = load_classifier(run / "checkpoints" / "best.ckpt")
    meta = model.checkpoint_meta()
    assert meta.family == "hubert" and meta.pipeline["kind"] == "waveform"
    assert isinstance(model.pipeline, WaveformPipeline)
    assert model.pipeline.audio.duration == 4.5 and meta.training["split"]["fold"] == 2

    # the export loads with transformers alone and predicts what our module predicts
    hf = AutoModelForAudioClassification.from_pretrained(run / "hf_model").eval()
    extractor = AutoFeatureExtractor.from_pretrained(run / "hf_model")
    assert hf.config.id2label == dict(enumerate(EMOTIONS))
    waves, lengths = clip_batch(1, (1.3,))
    inputs = extractor(waves[0].numpy(), sampling_rate=16000, return_tensors="pt")
    with torch.no_grad():
        ours = model({"waves": waves[:, None], "lengths": lengths[:, None]})
        theirs = hf(**inputs).logits
    torch.testing.assert_close(ours, theirs, atol=1e-4, rtol=1e-4)


@pytest.mark.slow
@pytest.mark.real_data
def test_wav2vec2_cnn_caches_hidden_states_and_second_run_skips_backbone(
    tmp_path, tiny_backbones, real_subset, monkeypatch
):
    tiny = tiny_backbones
    cfg = waveform_cfg(tmp_path, real_subset, "wav2vec2_cnn", tiny["wav2vec2"])
    first = train(cfg)
    cache_dirs = list((tmp_path / "cache" / "hidden_states").iterdir())
    assert len(cache_dirs) == 1  # one backbone + layer + input settings
    spec = json.loads((cache_dirs[0] / "spec.json").read_text())
    assert spec["layer"] == -1 and spec["backbone"] == str(tiny["wav2vec2"])
    assert len(list(cache_dirs[0].glob("*.npy"))) == 24 * CLIPS_PER_ACTOR  # each clip once

    def no_backbone(*args, **kwargs):
        raise AssertionError("the backbone ran although every clip was cached")

    monkeypatch.setattr(FrozenBackbone, "hidden_states", no_backbone)
    with open_dict(cfg):
        cfg.paths.output_dir = str(tmp_path / "run2")
    second = train(cfg)
    assert second == pytest.approx(first)  # same cache, same seed: the same run
    model = load_classifier(Path(cfg.paths.output_dir) / "checkpoints" / "best.ckpt")
    assert model.family == "wav2vec2_cnn" and model.checkpoint_meta().net["type"] == "wav2vec2_cnn"


# -- padding invariance -------------------------------------------------------------------


def _padded_vs_alone(net: torch.nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits of a short clip batched with a longer one vs. the same clip on its own."""
    net.eval()
    waves, lengths = clip_batch(2, (1.0, 1.7))
    with torch.no_grad():
        batched = net(waves, lengths)[0]
        alone = net(waves[:1, : lengths[0]], lengths[:1])[0]
    return batched, alone


@pytest.mark.parametrize("layer", [-1, "weighted"])
@pytest.mark.parametrize("kind", ["wav2vec2", "wav2vec2_ln"])
def test_cnn_prediction_does_not_depend_on_padding(tiny_backbones, kind, layer):
    tiny = tiny_backbones
    # group-norm backbones take no mask: they see each clip alone; layer-norm ones, the mask
    net = build_wav2vec2_cnn(EMOTIONS, {"name_or_path": str(tiny[kind])}, layer=layer)
    assert net.inputs.attention_mask == kind.endswith("_ln")
    batched, alone = _padded_vs_alone(net)
    torch.testing.assert_close(batched, alone, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("weighted", [False, True])
def test_finetune_prediction_does_not_depend_on_padding(tiny_backbones, weighted):
    tiny = tiny_backbones
    net = build_finetune_classifier(EMOTIONS, {"name_or_path": str(tiny["hubert_ln"])},
                                    weighted_layer_sum=weighted)
    assert net.inputs.attention_mask  # its feature extractor says the model takes masks
    batched, alone = _padded_vs_alone(net)
    torch.testing.assert_close(batched, alone, atol=1e-5, rtol=1e-5)


def test_normalisation_matches_the_feature_extractor():
    waves, lengths = clip_batch(2, (0.7, 1.2))
    extractor = Wav2Vec2FeatureExtractor(do_normalize=True, return_attention_mask=True)
    clips = [waves[i, :n].numpy() for i, n in enumerate(lengths)]
    ref = extractor(clips, sampling_rate=16000, padding=True, return_tensors="pt").input_values
    torch.testing.assert_close(bb.normalise(waves, lengths), ref, atol=1e-5, rtol=1e-5)


def test_input_settings_come_from_the_checkpoint(tmp_path):
    folder = save_tiny_backbone(tmp_path / "raw", "hubert")
    Wav2Vec2FeatureExtractor(do_normalize=False, return_attention_mask=False,
                             sampling_rate=16000).save_pretrained(folder)
    net = build_finetune_classifier(EMOTIONS, {"name_or_path": str(folder)})
    assert not net.inputs.do_normalize and not net.inputs.attention_mask
    (folder / "preprocessor_config.json").unlink()  # no settings: the wav2vec2 convention
    net = build_finetune_classifier(EMOTIONS, {"name_or_path": str(folder)})
    assert net.inputs.do_normalize and not net.inputs.attention_mask  # group-norm features


# -- loading backbones --------------------------------------------------------------------


def test_offline_hub_id_stops_with_the_options(tmp_path, generated_data_dir, monkeypatch):
    monkeypatch.setattr(bb, "hub_reachable", lambda timeout=3.0: False)
    cfg = waveform_cfg(tmp_path, generated_data_dir, "hubert", Path("nobody/not-cached-model"))
    with pytest.raises(bb.BackboneUnavailableError) as err:  # as raised: not wrapped by Hydra
        train(cfg)
    message = str(err.value)
    assert "nobody/not-cached-model" in message and "hub can't be reached" in message
    assert "name_or_path=DIR" in message and "pretrained=false" in message
    assert err.value.__cause__ is None and err.value.__context__ is None  # no hub stack


def test_random_init_builds_the_architecture_without_weights(tiny_backbones, monkeypatch):
    tiny = tiny_backbones
    monkeypatch.setattr(bb, "hub_reachable", lambda timeout=3.0: False)
    saved = AutoModel.from_pretrained(tiny["wav2vec2"])
    net = build_wav2vec2_cnn(EMOTIONS, {"name_or_path": str(tiny["wav2vec2"]),
                                        "pretrained": False})
    assert net.backbone.config.hidden_size == 32 and net.source["pretrained"] is False
    w = "encoder.layers.0.attention.q_proj.weight"
    assert not torch.equal(net.backbone.state_dict()[w], saved.state_dict()[w])
    # a hub id the project knows builds offline from the built-in description
    distil = bb.load_config("ntu-spml/distilhubert", pretrained=False)
    assert (distil.model_type, distil.num_hidden_layers, distil.hidden_size) == ("hubert", 2, 768)
    with pytest.raises(bb.BackboneUnavailableError) as err:  # an unknown one can't
        bb.load_config("nobody/unknown", pretrained=False)
    assert "pretrained=false" not in str(err.value)


# -- data -----------------------------------------------------------------------------------


def test_models_pick_the_waveform_pipeline_on_their_own(tmp_path, generated_data_dir):
    for model in ("hubert", "wav2vec2_cnn"):
        cfg = train_cfg(tmp_path, generated_data_dir, f"model={model}")
        dm = hydra_instantiate(cfg.data)
        assert isinstance(dm.pipeline, WaveformPipeline)
        assert dm.pipeline.audio.sample_rate == 16000 and dm.pipeline.audio.duration == 4.5
    assert dm.pipeline.augment == WaveAugmentConfig()  # the cached model trains unaugmented


def hydra_instantiate(node):
    import hydra

    return hydra.utils.instantiate(node)


def test_waveform_datamodule_keeps_folds_and_marks_cacheable_clips(generated_data_dir):
    dm = SERDataModule(generated_data_dir, fold=3, batch_size=4, n_jobs=0,
                       features={"kind": "waveform"}, augment={"noise_prob": 1.0})
    dm.setup("fit")
    speakers = {k: {dm.clips[i].speaker for i in d.clip_index} for k, d in dm.stages.items()}
    assert speakers["test"] == {f"ravdess:{a:02d}" for a in (9, 10, 11, 12)}
    assert not (speakers["test"] & (speakers["train"] | speakers["val"]))
    batch = next(iter(dm.val_dataloader()))
    waves, lengths = batch["inputs"]["waves"], batch["inputs"]["lengths"]
    assert waves.shape[:2] == (4, 1) and lengths.shape == (4, 1) and all(batch["keys"])
    assert int(lengths.max()) == waves.shape[2] <= 72000  # padded to the longest, cut at 4.5 s
    train_batch = next(iter(dm.train_dataloader()))
    assert not any(train_batch["keys"])  # augmented: one-off, never cached
    assert [c for c, _ in dm.test_rows()] == list(dm.stages["test"].dataset.clips)


def test_hand_feature_settings_are_refused_with_a_hint(generated_data_dir):
    with pytest.raises(ValueError, match="waveform models take"):
        SERDataModule(generated_data_dir, features={"kind": "waveform", "audio": {}, "hand": {}})
    with pytest.raises(ValueError, match="augment.kind 'online'"):
        SERDataModule(generated_data_dir, features={"kind": "waveform"},
                      augment={"kind": "versions", "versions": ["original"]})


def test_augmentation_noise_pitch_speed():
    wave = (0.3 * np.sin(np.arange(16000) / 10)).astype(np.float32)
    cfg = WaveAugmentConfig(noise_prob=1.0, pitch_prob=1.0, speed_prob=1.0,
                            speed_range=(1.25, 1.25))
    out = augment_wave(wave, 16000, cfg, np.random.default_rng(0))
    assert out.dtype == np.float32 and len(out) == 12800  # 1.25x faster: shorter
    again = augment_wave(wave, 16000, cfg, np.random.default_rng(0))
    np.testing.assert_array_equal(out, again)
    assert augment_wave(wave, 16000, WaveAugmentConfig(), np.random.default_rng(0)) is wave


def test_bucketing_sampler_covers_each_clip_once_and_shards_for_ddp():
    lengths = np.random.default_rng(0).integers(16000, 72000, size=101)
    evaluation = LengthBucketSampler(lengths, 8)
    flat = [i for b in evaluation for i in b]
    assert sorted(flat) == list(range(101)) and len(evaluation) == 13
    train = LengthBucketSampler(lengths, 8, shuffle=True, bucket_batches=4)
    epochs = []
    for epoch in (0, 1):
        train.set_epoch(epoch)
        epochs.append([i for b in train for i in b])
        assert sorted(epochs[-1]) == list(range(101)) and len(list(train)) == len(train)
    assert epochs[0] != epochs[1]  # reshuffled every epoch
    shards = [LengthBucketSampler(lengths, 8, num_replicas=2, rank=r) for r in (0, 1)]
    assert sorted(i for s in shards for b in s for i in b) == list(range(101))  # exact counts
    ranks = [LengthBucketSampler(lengths, 8, shuffle=True, num_replicas=2, rank=r) for r in (0, 1)]
    assert len(list(ranks[0])) == len(list(ranks[1])) == len(ranks[0])  # equal steps


@pytest.mark.real_data
def test_bucketing_cuts_padding_on_real_clip_lengths(real_ravdess):
    cfg = WaveformConfig(audio=AudioConfig(16000, 0.0, None, 0.5))  # whole clips
    paths = sorted(real_ravdess.rglob("*.flac"))[::4]
    lengths = np.array([clip_samples(p, cfg) for p in paths])
    order = np.random.default_rng(0).permutation(len(lengths))
    random_batches = [order[i : i + 8] for i in range(0, len(order), 8)]
    bucketed = list(LengthBucketSampler(lengths, 8, shuffle=True))
    random_pad, bucket_pad = (padding_fraction(b, lengths) for b in (random_batches, bucketed))
    assert bucket_pad < 0.02 and random_pad > 5 * bucket_pad


# -- configs --------------------------------------------------------------------------------


def test_bf16_auto_picks_what_the_hardware_has():
    assert resolve_precision("32-true") == "32-true"
    expected = ("bf16-mixed", "16-mixed") if torch.cuda.is_available() else ("bf16-mixed",
                                                                             "32-true")
    assert resolve_precision("bf16-auto") in expected


def test_slurm_launcher_config_composes_and_instantiates():
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    import hydra
    from hydra import compose, initialize_config_dir

    from tests.conftest import CONF_DIR

    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose("train", overrides=["hydra/launcher=slurm", "hydra.launcher.partition=gpu",
                                          "experiment=hubert_ravdess"],
                      return_hydra_config=True)
    launcher = cfg.hydra.launcher
    assert launcher.partition == "gpu" and launcher.gpus_per_node == 1
    assert launcher._target_.endswith("SlurmLauncher")
    with open_dict(cfg):
        launcher.submitit_folder = "/tmp/x"
        launcher.name = "train"
    assert hydra.utils.instantiate(launcher).params["partition"] == "gpu"
