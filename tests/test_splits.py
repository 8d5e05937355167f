import dataclasses
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from ser.data.clip import Clip
from ser.data.ravdess import scan_ravdess
from ser.data.splits import (
    EMOBOX_RAVDESS_FOLDS,
    RAVDESS_FOLDS,
    SplitLeakError,
    _pick_val_speakers,
    check_no_leak,
    check_rows_no_leak,
    corpus_folds,
    make_split,
)
from ser.data.tess import scan_tess
from tests.conftest import CONF_DIR, make_tess_tree


def test_folds_cover_every_actor_once_gender_balanced():
    actors = [a for fold in RAVDESS_FOLDS for a in fold]
    assert sorted(actors) == list(range(1, 25))
    for fold in RAVDESS_FOLDS:
        assert sum(a % 2 for a in fold) == 2  # two male (odd) actors, two female


@pytest.mark.real_data
@pytest.mark.parametrize("fold", range(1, 7))
def test_speaker_independent_split_on_real_data(real_ravdess, fold):
    clips = scan_ravdess(real_ravdess)
    split = make_split(clips, "speaker_independent", fold=fold, n_val_speakers=4)
    spk = {name: {clips[i].speaker for i in getattr(split, name)}
           for name in ("train", "val", "test")}
    assert spk["test"] == {f"ravdess:{a:02d}" for a in RAVDESS_FOLDS[fold - 1]}
    assert len(spk["val"]) == 4 and len(spk["train"]) == 16
    assert not (spk["train"] & spk["test"]) and not (spk["val"] & spk["test"])
    assert not (spk["train"] & spk["val"])
    genders = [clips[i].gender for i in split.val]
    assert genders.count("male") == genders.count("female")
    assert len(split.train) + len(split.val) + len(split.test) == 1440
    assert not split.leaky


def test_guard_catches_a_test_speaker_in_training(generated_data_dir):
    clips = scan_ravdess(generated_data_dir / "ravdess")
    split = make_split(clips, fold=2)
    bad = dataclasses.replace(split, train=[*split.train, split.test[0]])
    with pytest.raises(SplitLeakError, match="test speakers"):
        check_no_leak(clips, bad)


def test_guard_catches_the_same_clip_on_both_sides():
    a = Clip(path=Path("x/03-01-01-01-01-01-01.wav"), corpus="ravdess",
             speaker="ravdess:01", gender="male", emotion="neutral")
    with pytest.raises(SplitLeakError, match="augmented copies"):
        check_rows_no_leak([a.clip_id, "ravdess:other"], [a.clip_id])


def test_random_split_is_labelled_leaky(generated_data_dir):
    clips = scan_ravdess(generated_data_dir / "ravdess")
    split = make_split(clips, "random", test_fraction=0.25, seed=3)
    assert split.leaky and split.rows_leak
    assert len(split.test) == round(0.25 * len(clips))
    check_no_leak(clips, split)  # the guard stands aside for the labelled leaky protocol


def test_bad_fold_and_protocol():
    with pytest.raises(ValueError, match="data.fold must be 1..6"):
        make_split([], fold=7)
    with pytest.raises(ValueError, match="unknown split protocol"):
        make_split([], "by_moon_phase")


# EmoBox's RAVDESS test actors per fold, as EmoBox publishes them
EMOBOX_PUBLISHED = [(1, 11, 20, 21), (4, 10, 12, 14), (8, 9, 19, 23), (3, 5, 7, 24),
                    (2, 15, 16, 18), (6, 13, 17, 22)]


def test_emobox_folds_are_the_published_ones_and_cover_every_actor_once():
    assert [tuple(sorted(f)) for f in EMOBOX_RAVDESS_FOLDS] == EMOBOX_PUBLISHED
    assert sorted(a for fold in EMOBOX_PUBLISHED for a in fold) == list(range(1, 25))
    assert corpus_folds([], "ravdess", "emobox") == [
        tuple(f"ravdess:{a:02d}" for a in fold) for fold in EMOBOX_PUBLISHED]
    assert corpus_folds([], "ravdess") != corpus_folds([], "ravdess", "emobox")


@pytest.mark.parametrize("fold", range(1, 7))
def test_emobox_split_tests_the_published_actors_without_leaks(generated_data_dir, fold):
    clips = scan_ravdess(generated_data_dir / "ravdess", expect_complete=False)
    split = make_split(clips, "emobox", fold=fold, n_val_speakers=4)
    spk = {name: {clips[i].speaker for i in getattr(split, name)}
           for name in ("train", "val", "test")}
    assert spk["test"] == {f"ravdess:{a:02d}" for a in EMOBOX_PUBLISHED[fold - 1]}
    # validation: the speaker-independent split's own picking, 2 actors + 2 actresses
    assert spk["val"] == _pick_val_speakers(clips, spk["test"], 4, fold)
    gender = {c.speaker: c.gender for c in clips}
    assert sorted(gender[s] for s in spk["val"]) == ["female", "female", "male", "male"]
    assert len(spk["train"]) == 16
    assert not (spk["train"] & spk["test"]) and not (spk["val"] & spk["test"])
    assert not (spk["train"] & spk["val"])
    assert split.protocol == "emobox" and split.fold == fold and not split.leaky
    assert split.test_speakers == tuple(sorted(spk["test"]))
    bad = dataclasses.replace(split, train=[*split.train, split.test[0]])
    with pytest.raises(SplitLeakError, match="test speakers"):
        check_no_leak(clips, bad)  # the guard holds for EmoBox folds too


def test_emobox_folds_need_ravdess_and_a_fold_in_range(generated_data_dir, tmp_path):
    clips = scan_ravdess(generated_data_dir / "ravdess", expect_complete=False)
    with pytest.raises(ValueError, match="data.fold must be 1..6"):
        make_split(clips, "emobox", fold=7)
    tess = scan_tess(make_tess_tree(tmp_path / "tess", words=("back",)))
    with pytest.raises(ValueError, match="emobox has folds for ravdess only"):
        make_split(tess, "emobox", fold=1)


def test_split_emobox_config_reaches_the_data_config():
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose("train", overrides=["split=emobox", "data.fold=4"])
    # the datamodule gets data.split, which is the split group's node
    assert cfg.data.split.protocol == "emobox" and cfg.data.fold == 4
