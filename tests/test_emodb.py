"""EmoDB: names, scanning, the missing-corpus message, labels with boredom, folds, and
cross-corpus runs with RAVDESS."""

from __future__ import annotations

import dataclasses
from collections import Counter
from pathlib import Path

import hydra
import pytest
from hydra import compose, initialize_config_dir

from ser.data.clip import Clip
from ser.data.corpora import load_corpora
from ser.data.download import DatasetNotFoundError
from ser.data.emodb import (
    FEMALE_SPEAKERS,
    MALE_SPEAKERS,
    InvalidEmodbNameError,
    parse_emodb_name,
    scan_emodb,
)
from ser.data.label_space import LabelSpace
from ser.data.labels import EMOTIONS, LABELS
from ser.data.scan import speaker_emotion_table
from ser.data.splits import (
    SplitLeakError,
    _pick_val_speakers,
    check_no_leak,
    corpus_folds,
    make_split,
)
from ser.training.datamodule import SERDataModule
from tests.conftest import CONF_DIR, EMODB_LETTERS, make_emodb_tree, make_ravdess_tree

STATS = {"kind": "utterance_stats", "audio": {"sample_rate": 16000, "duration": None}}


@pytest.fixture(scope="module")
def emodb_clips(tmp_path_factory):
    """All 10 speakers x 7 emotions x 2 texts, two versions of one text."""
    root = make_emodb_tree(tmp_path_factory.mktemp("emodb") / "emodb", texts=("a01", "b10"),
                           versions=("a", "b"), seconds=0.2)
    return scan_emodb(root)


def _speakers(clips, idx) -> set[str]:
    return {clips[i].speaker for i in idx}


# -- names ----------------------------------------------------------------------------


@pytest.mark.parametrize("name, speaker, text, emotion, version, gender", [
    ("wav/03a01Fa.wav", 3, "a01", "happy", "a", "male"),
    ("16b10Wb.wav", 16, "b10", "angry", "b", "female"),
    ("08a02Lc.flac", 8, "a02", "boredom", "c", "female"),
    ("09b03Ea.wav", 9, "b03", "disgust", "a", "female"),
    ("10a04Ad.wav", 10, "a04", "fearful", "d", "male"),
    ("12b09Ta.wav", 12, "b09", "sad", "a", "male"),
    ("15a07Nb.wav", 15, "a07", "neutral", "b", "male"),
])
def test_emodb_names_decode_every_field(name, speaker, text, emotion, version, gender):
    rec = parse_emodb_name(name)
    assert (rec.speaker, rec.text, rec.emotion, rec.version) == (speaker, text, emotion, version)
    assert rec.gender == gender


@pytest.mark.parametrize("name, fragment", [
    ("03a01Xa.wav", "emotion letter 'X'"),
    ("04a01Fa.wav", "speaker 04"),
    ("03a03Fa.wav", "text 'a03'"),
    ("03c01Fa.wav", "like 03a01Fa"),
    ("03a01fa.wav", "like 03a01Fa"),  # emotion letters are capitals
    ("3a01Fa.wav", "like 03a01Fa"),
    ("03a01F.wav", "like 03a01Fa"),  # no version
    ("03a01Fab.wav", "like 03a01Fa"),
])
def test_emodb_bad_names_raise_naming_the_file(name, fragment):
    with pytest.raises(InvalidEmodbNameError) as err:
        parse_emodb_name(Path("/e/wav") / name)
    assert name in str(err.value) and fragment in str(err.value)


def test_emodb_speakers_are_five_actors_and_five_actresses(emodb_clips):
    gender = {c.speaker: c.gender for c in emodb_clips}
    assert sorted(gender) == sorted(f"emodb:{s:02d}" for s in MALE_SPEAKERS + FEMALE_SPEAKERS)
    assert Counter(gender.values()) == {"male": 5, "female": 5}
    assert gender["emodb:03"] == "male" and gender["emodb:08"] == "female"


# -- scanning -------------------------------------------------------------------------


@pytest.mark.parametrize("flat", [False, True])
def test_scan_reads_wav_folder_or_flat_and_ignores_hidden_files(tmp_path, caplog, flat):
    root = make_emodb_tree(tmp_path / "emodb", speakers=(3, 8), flat=flat, seconds=0.1)
    folder = root if flat else root / "wav"
    (folder / "._03a01Fa.wav").write_bytes(b"\0\5\26\7")  # macOS AppleDouble
    (folder / ".hidden").mkdir()
    (folder / ".hidden" / "not-a-name.wav").write_bytes(b"")
    clips = scan_emodb(root)
    assert len(clips) == 2 * len(EMODB_LETTERS)
    assert {c.corpus for c in clips} == {"emodb"}
    assert {c.speaker for c in clips} == {"emodb:03", "emodb:08"}
    assert {c.emotion for c in clips} == LabelSpace().covers(["emodb"])
    assert all(c.path.parent == folder for c in clips)
    # a partial copy is reported in one line; the debug log's table has boredom's column
    assert "EmoDB at" in caplog.text and "has 14 of its 535 clips" in caplog.text
    assert "bored" in speaker_emotion_table(clips)


def test_scan_stops_at_a_badly_named_file(tmp_path):
    root = make_emodb_tree(tmp_path / "emodb", speakers=(3,), seconds=0.1)
    stray = root / "wav" / "03a01Fa-copy.wav"
    stray.write_bytes((root / "wav" / "03a01Fa.wav").read_bytes())
    with pytest.raises(InvalidEmodbNameError, match="03a01Fa-copy"):
        scan_emodb(root)


def test_missing_emodb_says_where_to_get_it_and_where_to_put_it(tmp_path):
    with pytest.raises(DatasetNotFoundError) as err:
        load_corpora(tmp_path, ["emodb"])
    msg = str(err.value)
    assert "Berlin Database of Emotional Speech" in msg and "TU Berlin" in msg
    assert f"{tmp_path / 'emodb'}/wav/03a01Fa.wav" in msg
    assert "SER_DATA_DIR" in msg and "paths.data_dir=" in msg
    assert isinstance(err.value, FileNotFoundError)  # as RAVDESS's missing case
    # an empty folder gets the same guidance
    (tmp_path / "emodb" / "wav").mkdir(parents=True)
    with pytest.raises(DatasetNotFoundError, match="no .wav or .flac") as err:
        scan_emodb(tmp_path / "emodb")
    assert "Berlin Database of Emotional Speech" in str(err.value)


def test_a_run_without_emodb_stops_with_the_message(tmp_path):
    dm = SERDataModule(tmp_path, corpora=["emodb"], features=STATS, progress=False, n_jobs=1)
    dm.prepare_data()  # nothing to download for EmoDB
    with pytest.raises(DatasetNotFoundError, match="official site of the Berlin Database"):
        dm.setup("fit")


# -- labels ---------------------------------------------------------------------------


def test_boredom_is_a_class_only_emodb_brings():
    space = LabelSpace()
    emodb = space.classes(["emodb"])
    assert emodb[-1] == "boredom" and len(emodb) == 7
    assert set(emodb) - {"boredom"} < set(EMOTIONS)
    # existing corpora keep their classes and order; boredom goes last in a mixture
    assert space.classes(["ravdess"]) == EMOTIONS
    assert space.classes(["ravdess", "emodb"]) == LABELS == (*EMOTIONS, "boredom")
    assert space.classes(["crema_d", "emodb"]) == emodb
    assert "boredom" not in LabelSpace.from_config({"drop": ["boredom"]}).classes(["emodb"])
    merged = LabelSpace.from_config({"merge": {"boredom": "neutral"}})
    assert merged.map("boredom") == "neutral" and len(merged.classes(["emodb"])) == 6


def test_cross_corpus_with_ravdess_uses_the_shared_labels_both_ways():
    space = LabelSpace()
    shared = space.classes(["ravdess"], ["emodb"])
    assert shared == space.classes(["emodb"], ["ravdess"])
    assert shared == tuple(e for e in EMOTIONS if e in space.covers(["emodb"]))
    assert not {"calm", "surprised", "boredom"} & set(shared) and len(shared) == 6


# -- folds ----------------------------------------------------------------------------


def test_five_folds_each_pair_an_actor_with_an_actress(emodb_clips):
    folds = corpus_folds(emodb_clips, "emodb")
    gender = {c.speaker: c.gender for c in emodb_clips}
    assert len(folds) == 5
    assert sorted(s for f in folds for s in f) == sorted(gender)  # each speaker tested once
    for fold, actor, actress in zip(folds, MALE_SPEAKERS, FEMALE_SPEAKERS, strict=True):
        assert fold == (f"emodb:{actor:02d}", f"emodb:{actress:02d}")  # sorted, paired
        assert sorted(gender[s] for s in fold) == ["female", "male"]
    # the folds are the corpus's, not the data's: a partial copy keeps them
    partial = [c for c in emodb_clips if c.speaker != "emodb:16"]
    assert corpus_folds(partial, "emodb")[:4] == folds[:4]


@pytest.mark.parametrize("fold", range(1, 6))
def test_emodb_split_validates_on_one_actor_and_one_actress(emodb_clips, fold):
    clips = emodb_clips
    split = make_split(clips, fold=fold, n_val_speakers=4)
    test = _speakers(clips, split.test)
    assert test == set(corpus_folds(clips, "emodb")[fold - 1])
    val, train = _speakers(clips, split.val), _speakers(clips, split.train)
    gender = {c.speaker: c.gender for c in clips}
    assert sorted(gender[s] for s in val) == ["female", "male"]
    assert val == _pick_val_speakers(clips, test, 2, fold)  # the RAVDESS picking code
    assert len(train) == 6 and not (train & test) and not (val & test) and not (train & val)
    assert len(split.train) + len(split.val) + len(split.test) == len(clips)
    assert split.protocol == "speaker_independent" and split.test_corpora == ("emodb",)
    bad = dataclasses.replace(split, val=[*split.val, split.test[0]])
    with pytest.raises(SplitLeakError, match="test speakers"):
        check_no_leak(clips, bad)


def test_emodb_fold_range_and_fewer_validation_speakers(emodb_clips):
    with pytest.raises(ValueError, match="data.fold must be 1..5 for emodb"):
        make_split(emodb_clips, fold=6)
    one = make_split(emodb_clips, fold=2, n_val_speakers=1)
    assert len(_speakers(emodb_clips, one.val)) == 1


def test_emodb_as_the_training_side_validates_on_two_of_its_ten(emodb_clips):
    ravdess = [Clip(Path(f"Actor_{a:02d}/03-01-05-01-01-01-{a:02d}.wav"), "ravdess",
                    f"ravdess:{a:02d}", "male" if a % 2 else "female", "angry") for a in (1, 2)]
    clips = [*emodb_clips, *ravdess]
    split = make_split(clips, "cross_corpus", test_corpora=["ravdess"], n_val_speakers=4)
    val, train = _speakers(clips, split.val), _speakers(clips, split.train)
    assert _speakers(clips, split.test) == {"ravdess:01", "ravdess:02"}
    assert len(val) == 2 and len(train) == 8 and all(s.startswith("emodb:") for s in val)
    assert {c.gender for c in clips if c.speaker in val} == {"male", "female"}


# -- datamodule and configs -----------------------------------------------------------


def test_datamodule_sets_up_emodb_with_boredom(tmp_path):
    data_dir = tmp_path / "data"
    make_emodb_tree(data_dir / "emodb", seconds=0.6)
    dm = SERDataModule(data_dir, corpora=["emodb"], features=STATS, cache_dir=tmp_path / "c",
                       progress=False, n_jobs=1, fold=3)
    dm.setup("fit")
    assert "boredom" in dm.class_names and dm.class_names == LabelSpace().classes(["emodb"])
    train = [dm.clips[i] for i in dm.stages["train"].clip_index]
    boredom = dm.class_names.index("boredom")
    assert [dm.class_names[y] for y in dm.labels("train")] == [c.emotion for c in train]
    assert (dm.labels("train") == boredom).sum() == 6  # one clip per training speaker
    assert dm.metadata()["test_speakers"] == ["emodb:11", "emodb:13"]
    assert dm.metadata()["test_clips_per_class"] == dict.fromkeys(dm.class_names, 2)
    assert dm.class_weights[boredom] > 0


@pytest.mark.parametrize("trained, tested", [("ravdess", "emodb"), ("emodb", "ravdess")])
def test_cross_corpus_datamodule_with_ravdess(tmp_path_factory, trained, tested):
    data_dir = tmp_path_factory.getbasetemp() / "ravdess_emodb"
    if not data_dir.is_dir():
        make_ravdess_tree(data_dir / "ravdess", actors=range(1, 5))
        make_emodb_tree(data_dir / "emodb", speakers=(3, 8, 9, 10), seconds=0.6)
    split = {"protocol": "cross_corpus", "test_corpora": [tested], "n_val_speakers": 2}
    dm = SERDataModule(data_dir, corpora=[trained], split=split, features=STATS,
                       cache_dir=data_dir / "cache", progress=False, n_jobs=1)
    dm.setup("fit")
    assert dm.class_names == LabelSpace().classes([trained], [tested])
    stage_clips = {name: [dm.clips[i] for i in dm.stages[name].clip_index]
                   for name in ("train", "val", "test")}
    assert {c.corpus for c in stage_clips["test"]} == {tested}
    assert {c.corpus for c in stage_clips["train"] + stage_clips["val"]} == {trained}
    for clips in stage_clips.values():  # calm, surprised and boredom left out everywhere
        assert {c.emotion for c in clips} == set(dm.class_names)
    assert dm.metadata()["split"]["tested_corpora"] == [tested]


@pytest.mark.parametrize("overrides, corpora, test_corpora", [
    (["data=emodb"], ["emodb"], []),
    (["data=cross_corpus", "data.corpora=[ravdess]", "data.split.test_corpora=[emodb]"],
     ["ravdess"], ["emodb"]),
    (["data=cross_corpus", "data.corpora=[emodb]", "data.split.test_corpora=[ravdess]"],
     ["emodb"], ["ravdess"]),
])
def test_configs_reach_emodb(tmp_path, overrides, corpora, test_corpora):
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose("train", overrides=[f"paths.data_dir={tmp_path}", *overrides])
    dm = hydra.utils.instantiate(cfg.data)
    assert dm.corpora == corpora and dm.test_corpora == test_corpora
    assert dm.class_names == LabelSpace().classes(corpora, test_corpora)
    assert ("boredom" in dm.class_names) == (not test_corpora)
