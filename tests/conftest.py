"""Shared fixtures: generated RAVDESS-named corpora, the real data location, configs."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from ser.config import CONF_DIR as _CONF_DIR
from ser.config import REPO_ROOT, register_resolvers

register_resolvers()


# the optional openSMILE extra (CI installs it): its tests skip, with this reason, without it
HAS_OPENSMILE = importlib.util.find_spec("opensmile") is not None
needs_opensmile = pytest.mark.skipif(not HAS_OPENSMILE,
                                     reason="the optional opensmile extra is not installed")


def pytest_collection_modifyitems(config, items) -> None:
    """The Keras twin's tests last: once TensorFlow is loaded, openSMILE (the optional
    extra) can't run in the same process (ser refuses it, as the two crash together)."""
    items.sort(key=lambda item: item.path.name == "test_keras.py")


def real_data_dir() -> Path:
    return Path(os.environ.get("SER_DATA_DIR", REPO_ROOT.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def real_ravdess() -> Path:
    root = real_data_dir() / "ravdess"
    if not root.is_dir():
        pytest.skip(f"real RAVDESS not found at {root}")
    return root


def ravdess_name(emotion: int, intensity: int, statement: int, rep: int, actor: int) -> str:
    return f"03-01-{emotion:02d}-{intensity:02d}-{statement:02d}-{rep:02d}-{actor:02d}"


def write_tone(path: Path, freq: float, seconds: float = 3.5, sr: int = 16000,
               channels: int = 1, seed: int = 0) -> Path:
    """A tone plus a little noise: distinct per emotion, so a tiny fit can learn it."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    wave = 0.3 * np.sin(2 * np.pi * freq * t) + 0.02 * rng.standard_normal(t.size)
    data = np.repeat(wave[:, None], channels, axis=1) if channels > 1 else wave
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, data.astype(np.float32), sr)
    return path


def make_ravdess_tree(root: Path, actors=range(1, 25), emotions=range(1, 9),
                     statements=(1,), suffix: str = ".wav", sr: int = 16000) -> Path:
    """A RAVDESS-named corpus of generated tones: one clip per actor × emotion × statement."""
    for actor in actors:
        for emo in emotions:
            for stmt in statements:
                name = ravdess_name(emo, 1, stmt, 1, actor)
                freq = 150.0 * emo + 7 * actor + 30 * stmt
                write_tone(root / f"Actor_{actor:02d}" / f"{name}{suffix}", freq, sr=sr,
                           seed=actor * 100 + emo, channels=2 if actor == 1 and emo == 2 else 1)
    return root


@pytest.fixture(scope="session")
def generated_data_dir(tmp_path_factory) -> Path:
    """<tmp>/ravdess with 24 actors × 8 emotions × 2 statements of generated audio."""
    data_dir = tmp_path_factory.mktemp("data")
    make_ravdess_tree(data_dir / "ravdess", statements=(1, 2))
    return data_dir


# -- generated CREMA-D, TESS and SAVEE, with each corpus's real naming ---------------------

CREMA_EMOTIONS = ("ANG", "DIS", "FEA", "HAP", "NEU", "SAD")
TESS_EMOTIONS = ("angry", "disgust", "fear", "happy", "neutral", "ps", "sad")
SAVEE_CODES = ("a", "d", "f", "h", "n", "sa", "su")


def _tone(path: Path, index: int, seed: int) -> Path:
    return write_tone(path, 150.0 + 90 * index, seconds=3.2, seed=seed)


def make_crema_d_tree(root: Path, actors=(1001, 1002, 1005, 1006, 1011, 1012),
                      sentences=("DFA",), demographics: dict[int, str] | None = None) -> Path:
    """`AudioWAV/1001_DFA_ANG_XX.wav`, as the corpus ships; optionally its demographics."""
    import csv  # only the optional demographics table needs it
    for actor in actors:
        for e, emo in enumerate(CREMA_EMOTIONS):
            for sentence in sentences:
                level = "XX" if sentence != "IEO" else "HI"
                _tone(root / "AudioWAV" / f"{actor}_{sentence}_{emo}_{level}.wav", e, actor + e)
    if demographics:
        with open(root / "VideoDemographics.csv", "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["ActorID", "Age", "Sex", "Race", "Ethnicity"])
            for actor, sex in demographics.items():
                writer.writerow([actor, 30, sex.capitalize(), "Caucasian", "Not Hispanic"])
    return root


def make_tess_tree(root: Path, words=("back", "bite")) -> Path:
    """`OAF_angry/OAF_back_angry.wav` etc., with the real corpus's `OA_bite_neutral`."""
    for s, speaker in enumerate(("OAF", "YAF")):
        for e, emo in enumerate(TESS_EMOTIONS):
            folder = "pleasant_surprise" if emo == "ps" else emo
            for word in words:
                prefix = "OA" if (speaker, word, emo) == ("OAF", "bite", "neutral") else speaker
                path = root / f"{speaker}_{folder}" / f"{prefix}_{word}_{emo}.wav"
                _tone(path, e, 10 * s + e)
    return root


def make_savee_tree(root: Path, nested: bool = False, per_emotion: int = 1) -> Path:
    """`DC_a01.wav` in one folder, or `DC/a01.wav` (nested)."""
    for speaker in ("DC", "JE", "JK", "KL"):
        for e, code in enumerate(SAVEE_CODES):
            for i in range(1, per_emotion + 1):
                name = f"{code}{i:02d}.wav"
                path = root / speaker / name if nested else root / "ALL" / f"{speaker}_{name}"
                _tone(path, e, e + i)
    return root


def make_all_corpora(data_dir: Path, ravdess_emotions=range(1, 9), crema_actors=None,
                     tess_words=("back", "bite")) -> Path:
    """Tiny RAVDESS (24 actors x 8 emotions), CREMA-D, TESS and SAVEE under `data_dir`."""
    make_ravdess_tree(data_dir / "ravdess", emotions=ravdess_emotions)
    make_crema_d_tree(data_dir / "crema_d", **({"actors": crema_actors} if crema_actors else {}))
    make_tess_tree(data_dir / "tess", words=tess_words)
    make_savee_tree(data_dir / "savee")
    return data_dir


# -- configs and tiny backbones, shared by the training, transformer and serving tests ----

CONF_DIR = str(_CONF_DIR)
# the seed's model with its features and augmentation (what `model=cnn` brings): the
# fixtures' model unless a test names a model or an experiment (the default run is the
# utterance-statistics recipe)
SEED_MODEL = "model=cnn"


def scramble_fold1_test_labels(monkeypatch) -> None:
    """From here on, corpora load with fold 1's test actors' labels permuted among them:
    for tests that a run's weights and chosen epoch never see a test label."""
    from dataclasses import replace

    import ser.training.datamodule as dm_module

    real_load = dm_module.load_corpora
    test_actors = {"ravdess:01", "ravdess:02", "ravdess:03", "ravdess:04"}

    def scrambled(data_dir, corpora):
        clips = real_load(data_dir, corpora)
        emotions = [c.emotion for c in clips if c.speaker in test_actors]
        shuffled = iter(np.random.default_rng(0).permutation(emotions)[::-1])
        return [replace(c, emotion=str(next(shuffled))) if c.speaker in test_actors else c
                for c in clips]

    monkeypatch.setattr(dm_module, "load_corpora", scrambled)


def train_cfg(tmp_path: Path, data_dir: Path, *overrides: str):
    """The real train config, composed with tiny overrides, writing into tmp_path/run."""
    from hydra import compose, initialize_config_dir
    from omegaconf import open_dict

    chosen = any(o.startswith(("model=", "experiment=")) for o in overrides)
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose("train", overrides=[
            *([] if chosen else [SEED_MODEL]),
            f"paths.data_dir={data_dir}", f"paths.cache_dir={tmp_path / 'cache'}",
            "trainer.max_epochs=2", "data.progress=false", "trainer.enable_progress_bar=false",
            *overrides,
        ])
    with open_dict(cfg):
        cfg.paths.output_dir = str(tmp_path / "run")
    return cfg


# a few layers and a small hidden size; the conv stack keeps HuBERT's 320-sample hop
TINY_BACKBONE = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                     intermediate_size=64, conv_dim=(32, 32, 32), conv_kernel=(10, 8, 4),
                     conv_stride=(5, 8, 8), num_conv_pos_embeddings=16,
                     num_conv_pos_embedding_groups=4)
CLIPS_PER_ACTOR = 3


def save_tiny_backbone(folder: Path, model_type: str, layer_norm: bool = False) -> Path:
    """A random tiny backbone and its feature extractor, as a hub checkpoint folder is."""
    import torch
    from transformers import AutoConfig, AutoModel, Wav2Vec2FeatureExtractor

    norm = "layer" if layer_norm else "group"
    config = AutoConfig.for_model(model_type, feat_extract_norm=norm,
                                  do_stable_layer_norm=layer_norm, **TINY_BACKBONE)
    torch.manual_seed(0)
    AutoModel.from_config(config).save_pretrained(folder)
    Wav2Vec2FeatureExtractor(do_normalize=True, return_attention_mask=layer_norm
                             ).save_pretrained(folder)
    return folder


TINY_WHISPER = dict(d_model=32, encoder_layers=2, encoder_attention_heads=4, encoder_ffn_dim=64,
                    decoder_layers=1, decoder_attention_heads=4, decoder_ffn_dim=64,
                    num_mel_bins=80, vocab_size=64, max_target_positions=16, pad_token_id=0,
                    bos_token_id=1, eos_token_id=2, decoder_start_token_id=3)


def save_tiny_whisper(folder: Path, seconds: int = 30) -> Path:
    """A random tiny Whisper (encoder and decoder, as the hub's) and its feature extractor;
    `seconds` is its input window (30 s for the real models)."""
    import torch
    from transformers import WhisperConfig, WhisperFeatureExtractor, WhisperModel

    config = WhisperConfig(**TINY_WHISPER, max_source_positions=50 * seconds)
    torch.manual_seed(0)
    WhisperModel(config).save_pretrained(folder)
    WhisperFeatureExtractor(feature_size=80, chunk_length=seconds).save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_backbones(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("backbones")
    return {
        "hubert": save_tiny_backbone(root / "hubert", "hubert"),
        "wav2vec2": save_tiny_backbone(root / "wav2vec2", "wav2vec2"),
        "hubert_ln": save_tiny_backbone(root / "hubert_ln", "hubert", layer_norm=True),
        "wav2vec2_ln": save_tiny_backbone(root / "wav2vec2_ln", "wav2vec2", layer_norm=True),
        "wavlm": save_tiny_backbone(root / "wavlm", "wavlm", layer_norm=True),
        "data2vec-audio": save_tiny_backbone(root / "data2vec", "data2vec-audio"),
        "whisper": save_tiny_whisper(root / "whisper"),
    }


@pytest.fixture(scope="session")
def real_subset(tmp_path_factory, real_ravdess) -> Path:
    """A data dir whose ravdess/ links 3 real clips of each of the 24 actors (never copies)."""
    data_dir = tmp_path_factory.mktemp("real_subset")
    for actor in sorted(real_ravdess.glob("Actor_*")):
        files = sorted(actor.glob("*.flac")) + sorted(actor.glob("*.wav"))
        (data_dir / "ravdess" / actor.name).mkdir(parents=True)
        for f in files[:: len(files) // CLIPS_PER_ACTOR][:CLIPS_PER_ACTOR]:
            (data_dir / "ravdess" / actor.name / f.name).symlink_to(f)
    return data_dir


# -- models to serve: trained once per session ---------------------------------------


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory, generated_data_dir) -> Path:
    """A real checkpoint from `train(cfg)` on generated tones: trained once per session.

    """
    from ser.training.train import train

    root = tmp_path_factory.getbasetemp() / "serving-model"
    ckpt = root / "run" / "checkpoints" / "best.ckpt"
    if not ckpt.is_file():
        cfg = train_cfg(root, generated_data_dir, "augment=none", "logger=none", "test=false",
                        "trainer.precision=32-true", "trainer.max_epochs=8")
        train(cfg)
    assert ckpt.is_file()
    return ckpt


@pytest.fixture(scope="session")
def real_checkpoint(tmp_path_factory, real_ravdess) -> Path:
    """A short real fit (RAVDESS fold 3, 3 epochs, no augmentation): trained once per session.

    `SER_SERVE_CKPT` names a checkpoint to use instead (e.g. a full baseline run).
    """
    if os.environ.get("SER_SERVE_CKPT"):
        return Path(os.environ["SER_SERVE_CKPT"])
    from ser.training.train import train

    root = tmp_path_factory.getbasetemp() / "serving-real-model"
    ckpt = root / "run" / "checkpoints" / "best.ckpt"
    if not ckpt.is_file():
        cfg = train_cfg(root, real_ravdess.parent, "augment=none", "data.fold=3", "logger=none",
                        "test=false", "trainer.max_epochs=3")
        train(cfg)
    return ckpt


@pytest.fixture(scope="session")
def tiny_onnx(tiny_checkpoint) -> Path:
    from ser.serving.onnx_export import export_onnx

    out = tiny_checkpoint.with_suffix(".onnx")
    return out if out.is_file() else export_onnx(tiny_checkpoint, out)


# -- generated EmoDB, with its real naming ---------------------------------------------

EMODB_LETTERS = ("W", "L", "E", "A", "F", "T", "N")  # anger, boredom, disgust, fear, ...
EMODB_SPEAKERS = (3, 8, 9, 10, 11, 12, 13, 14, 15, 16)


def make_emodb_tree(root: Path, speakers=EMODB_SPEAKERS, texts=("a01",), versions=("a",),
                    flat: bool = False, seconds: float = 1.0) -> Path:
    """`wav/03a01Fa.wav` as the official archive ships it, or the clips directly in root."""
    folder = root if flat else root / "wav"
    for speaker in speakers:
        for e, letter in enumerate(EMODB_LETTERS):
            for t, text in enumerate(texts):
                for version in versions:
                    write_tone(folder / f"{speaker:02d}{text}{letter}{version}.wav",
                               150.0 + 90 * e + 5 * t, seconds=seconds,
                               seed=100 * speaker + 10 * e + t)
    return root
