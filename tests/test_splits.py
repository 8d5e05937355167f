import dataclasses
from pathlib import Path

import pytest

from ser.data.clip import Clip
from ser.data.ravdess import scan_ravdess
from ser.data.splits import (
    RAVDESS_FOLDS,
    SplitLeakError,
    check_no_leak,
    check_rows_no_leak,
    make_split,
)


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
