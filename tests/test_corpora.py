"""CREMA-D, TESS and SAVEE parsers, the label space, splits of mixtures, cross-corpus."""

from __future__ import annotations

import dataclasses
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from sklearn.utils.class_weight import compute_class_weight

from ser.data.clip import Clip
from ser.data.corpora import SCANNERS, load_corpora
from ser.data.crema_d import InvalidCremaDNameError, parse_crema_d_name, scan_crema_d
from ser.data.label_space import LabelSpace
from ser.data.labels import EMOTIONS
from ser.data.ravdess import scan_ravdess
from ser.data.savee import InvalidSaveeNameError, parse_savee_name, scan_savee
from ser.data.splits import (
    RAVDESS_FOLDS,
    SplitLeakError,
    _pick_val_speakers,
    check_no_leak,
    corpus_folds,
    make_split,
)
from ser.data.tess import InvalidTessNameError, parse_tess_name, scan_tess
from ser.evaluation.report import protocol_label
from ser.features.pipelines import pipeline_from_meta
from ser.training.datamodule import SERDataModule, balanced_class_weights
from tests.conftest import (
    make_all_corpora,
    make_crema_d_tree,
    make_savee_tree,
    make_tess_tree,
)


@pytest.fixture(scope="module")
def corpora_dir(tmp_path_factory) -> Path:
    return make_all_corpora(tmp_path_factory.mktemp("corpora"))


# -- CREMA-D --------------------------------------------------------------------------


def test_crema_d_name_decodes_every_field():
    rec = parse_crema_d_name("AudioWAV/1001_DFA_ANG_XX.wav")
    assert (rec.actor, rec.sentence, rec.level) == (1001, "DFA", "unspecified")
    assert rec.emotion == "angry"
    rec = parse_crema_d_name("1091_IEO_FEA_HI.wav")
    assert (rec.actor, rec.emotion, rec.level) == (1091, "fearful", "high")
    assert parse_crema_d_name("1050_TIE_DIS_XX.wav").emotion == "disgust"


@pytest.mark.parametrize("name, fragment", [
    ("1001_DFA_SUR_XX.wav", "emotion 'SUR'"),
    ("1092_DFA_ANG_XX.wav", "actor 1092"),
    ("1000_DFA_ANG_XX.wav", "actor 1000"),
    ("1001_ABC_ANG_XX.wav", "sentence 'ABC'"),
    ("1001_DFA_ANG_ZZ.wav", "level 'ZZ'"),
    ("1001_dfa_ang_xx.wav", "like 1001_DFA_ANG_XX"),
    ("1001_DFA_ANG.wav", "like 1001_DFA_ANG_XX"),
])
def test_crema_d_bad_names_raise_naming_the_file(name, fragment):
    with pytest.raises(InvalidCremaDNameError) as err:
        parse_crema_d_name(Path("/c/AudioWAV") / name)
    assert name in str(err.value) and fragment in str(err.value)


def test_crema_d_scan_genders_from_table_or_demographics(tmp_path):
    root = make_crema_d_tree(tmp_path / "crema_d", actors=(1001, 1002))
    clips = scan_crema_d(root)
    assert len(clips) == 12 and {c.corpus for c in clips} == {"crema_d"}
    genders = {c.speaker: c.gender for c in clips}
    assert genders == {"crema_d:1001": "male", "crema_d:1002": "female"}  # the corpus's table
    assert {c.emotion for c in clips} == {"angry", "disgust", "fearful", "happy", "neutral", "sad"}
    root2 = make_crema_d_tree(tmp_path / "other", actors=(1001,), demographics={1001: "female"})
    assert {c.gender for c in scan_crema_d(root2)} == {"female"}  # the csv wins


# -- TESS -----------------------------------------------------------------------------


@pytest.mark.parametrize("name, speaker, word, emotion", [
    ("OAF_angry/OAF_back_angry.wav", "OAF", "back", "angry"),
    ("YAF_fear/YAF_dog_fear.wav", "YAF", "dog", "fearful"),
    ("OAF_pleasant_surprise/OAF_back_ps.wav", "OAF", "back", "surprised"),
    ("YAF_back_pleasant_surprise.wav", "YAF", "back", "surprised"),
    ("YAF_pleasant_surprised/YAF_bath_pleasant_surprised.wav", "YAF", "bath", "surprised"),
    ("OAF_neutral/OA_bite_neutral.flac", "OAF", "bite", "neutral"),  # the real corpus's typo
    ("YAF_Sad/YAF_chalk_Sad.wav", "YAF", "chalk", "sad"),
])
def test_tess_names(name, speaker, word, emotion):
    rec = parse_tess_name(name)
    assert (rec.speaker, rec.word, rec.emotion) == (speaker, word, emotion)


@pytest.mark.parametrize("name, fragment", [
    ("XAF_back_angry.wav", "speaker 'XAF'"),
    ("OAF_back_bored.wav", "emotion one of"),
    ("OAF_angry.wav", "emotion one of"),  # no word
    ("OAF_back_angry_2.wav", "emotion one of"),
])
def test_tess_bad_names(name, fragment):
    with pytest.raises(InvalidTessNameError) as err:
        parse_tess_name(Path("/t") / name)
    assert name in str(err.value) and fragment in str(err.value)


def test_tess_scan_reads_the_quirk_as_oaf(tmp_path, caplog):
    clips = scan_tess(make_tess_tree(tmp_path / "tess"))
    assert len(clips) == 28
    assert {c.speaker for c in clips} == {"tess:OAF", "tess:YAF"}
    assert {c.gender for c in clips} == {"female"}
    quirk = [c for c in clips if c.path.name == "OA_bite_neutral.wav"]
    assert quirk[0].speaker == "tess:OAF" and quirk[0].emotion == "neutral"
    assert "of its 2800 clips" in caplog.text


@pytest.mark.real_data
def test_real_tess(real_ravdess):
    clips = scan_tess(real_ravdess.parent / "tess")
    assert len(clips) == 2798  # two files of the original are missing, see the data README
    counts = Counter((c.speaker, c.emotion) for c in clips)
    assert counts["tess:OAF", "angry"] == 199 and counts["tess:YAF", "sad"] == 199
    assert counts["tess:OAF", "neutral"] == 200  # OA_bite_neutral counted as OAF
    assert counts["tess:YAF", "surprised"] == 200 and "calm" not in {c.emotion for c in clips}


# -- SAVEE ----------------------------------------------------------------------------


@pytest.mark.parametrize("name, speaker, emotion, index", [
    ("ALL/DC_a01.wav", "DC", "angry", 1),
    ("JE_sa15.wav", "JE", "sad", 15),
    ("KL_su03.wav", "KL", "surprised", 3),
    ("JK_n30.wav", "JK", "neutral", 30),
    ("AudioData/DC/f07.wav", "DC", "fearful", 7),
    ("AudioData/KL/d15.wav", "KL", "disgust", 15),
    ("AudioData/JE/h01.wav", "JE", "happy", 1),
])
def test_savee_names_in_both_layouts(name, speaker, emotion, index):
    rec = parse_savee_name(name)
    assert (rec.speaker, rec.emotion, rec.index) == (speaker, emotion, index)


@pytest.mark.parametrize("name, fragment", [
    ("AB_a01.wav", "speaker 'AB'"),
    ("DC_x01.wav", "emotion code 'x'"),
    ("DC_a16.wav", "out of range"),
    ("DC_n31.wav", "out of range"),
    ("AudioData/a01.wav", "speaker 'AudioData'"),
    ("DC_a1.wav", "expected DC_a01"),
])
def test_savee_bad_names(name, fragment):
    with pytest.raises(InvalidSaveeNameError) as err:
        parse_savee_name(Path("/s") / name)
    assert fragment in str(err.value)


@pytest.mark.parametrize("nested", [False, True])
def test_savee_scan(tmp_path, nested):
    clips = scan_savee(make_savee_tree(tmp_path / "savee", nested=nested))
    assert len(clips) == 28 and {c.gender for c in clips} == {"male"}
    assert {c.speaker for c in clips} == {f"savee:{s}" for s in ("DC", "JE", "JK", "KL")}
    assert Counter(c.emotion for c in clips)["surprised"] == 4


def test_registry_and_load_corpora(corpora_dir):
    assert set(SCANNERS) == {"ravdess", "crema_d", "tess", "savee", "emodb"}
    clips = load_corpora(corpora_dir, ["tess", "savee"])
    assert {c.corpus for c in clips} == {"tess", "savee"}
    with pytest.raises(ValueError, match="unknown corpus 'iemocap'"):
        load_corpora(corpora_dir, ["iemocap"])
    with pytest.raises(ValueError, match="named twice"):
        load_corpora(corpora_dir, ["tess", "tess"])


# -- label space ----------------------------------------------------------------------


def test_label_space_defaults_to_ravdess_eight():
    space = LabelSpace()
    assert space.classes(["ravdess"]) == EMOTIONS
    assert space.classes(["crema_d"]) == ("neutral", "happy", "sad", "angry", "fearful", "disgust")
    assert space.classes(["tess", "savee"]) == tuple(e for e in EMOTIONS if e != "calm")
    assert space.classes(["ravdess", "crema_d", "tess", "savee"]) == EMOTIONS


def test_merge_and_drop_for_six_and_seven_class_comparisons():
    seven = LabelSpace.from_config({"merge": {"calm": "neutral"}})
    assert seven.map("calm") == "neutral" and len(seven.classes(["ravdess"])) == 7
    six = LabelSpace.from_config({"merge": {"calm": "neutral"}, "drop": ["surprised"]})
    assert six.map("surprised") is None
    assert six.classes(["ravdess", "tess"]) == LabelSpace().classes(["crema_d"])


def test_cross_corpus_classes_are_the_shared_labels():
    assert "calm" not in LabelSpace().classes(["ravdess"], ["tess"])
    assert len(LabelSpace().classes(["ravdess"], ["tess"])) == 7
    assert LabelSpace().classes(["tess"], ["crema_d"]) == LabelSpace().classes(["crema_d"])


@pytest.mark.parametrize("cfg, fragment", [
    ({"merge": {"calm": "bored"}}, "unknown emotion 'bored'"),
    ({"merge": {"calm": "neutral", "neutral": "sad"}}, "itself merged"),
    ({"merge": {"calm": "neutral"}, "drop": ["calm"]}, "both merged and dropped"),
    ({"rename": {}}, "merge and drop"),
])
def test_bad_label_configs(cfg, fragment):
    with pytest.raises(ValueError, match=fragment):
        LabelSpace.from_config(cfg)


# -- splits ---------------------------------------------------------------------------


def _speakers(clips, idx):
    return {clips[i].speaker for i in idx}


@pytest.mark.parametrize("fold", [1, 4, 6])
def test_ravdess_folds_unchanged_by_a_mixture(corpora_dir, fold):
    ravdess = scan_ravdess(corpora_dir / "ravdess", expect_complete=False)
    mixture = load_corpora(corpora_dir, ["ravdess", "crema_d", "tess", "savee"])
    alone = make_split(ravdess, fold=fold)
    mixed = make_split(mixture, fold=fold)
    expected_test = {f"ravdess:{a:02d}" for a in RAVDESS_FOLDS[fold - 1]}
    assert _speakers(ravdess, alone.test) == _speakers(mixture, mixed.test) == expected_test
    # validation actors: the same RAVDESS actors, drawn as before the mixtures existed
    assert _speakers(ravdess, alone.val) == _speakers(mixture, mixed.val)
    assert _speakers(ravdess, alone.val) == _pick_val_speakers(ravdess, expected_test, 4, fold)
    others = {c.speaker for c in mixture if c.corpus != "ravdess"}
    assert others <= _speakers(mixture, mixed.train)
    assert mixed.test_corpora == ("ravdess",) and not mixed.leaky


def test_crema_d_folds_hold_out_speakers_gender_balanced(tmp_path):
    actors = tuple(range(1001, 1025))
    clips = scan_crema_d(make_crema_d_tree(tmp_path / "crema_d", actors=actors))
    folds = corpus_folds(clips, "crema_d")
    assert len(folds) == 6
    assert sorted(s for f in folds for s in f) == sorted({c.speaker for c in clips})
    gender = {c.speaker: c.gender for c in clips}
    females = [sum(gender[s] == "female" for s in fold) for fold in folds]
    assert sorted(females) == [2, 2, 2, 2, 3, 3]  # 14 of the 24 are actresses, dealt evenly
    for k in range(1, 7):
        split = make_split(clips, fold=k, n_val_speakers=4)
        assert _speakers(clips, split.test) == set(folds[k - 1])
        assert len(_speakers(clips, split.val)) == 4
        assert not _speakers(clips, split.train) & _speakers(clips, split.test)
    with pytest.raises(ValueError, match="1..6 for crema_d"):
        make_split(clips, fold=7)


def test_savee_and_tess_folds(corpora_dir):
    savee = load_corpora(corpora_dir, ["savee"])
    assert [len(f) for f in corpus_folds(savee, "savee")] == [1, 1, 1, 1]
    split = make_split(savee, fold=2)
    assert len(_speakers(savee, split.test)) == 1 and len(_speakers(savee, split.val)) == 2
    tess = load_corpora(corpora_dir, ["tess"])
    split = make_split(tess, fold=1, val_fraction=0.25)
    # one actress tests; the other trains and lends a quarter of her clips to validation
    assert _speakers(tess, split.test) == {"tess:OAF"}
    assert _speakers(tess, split.train) == _speakers(tess, split.val) == {"tess:YAF"}
    assert len(split.val) == round(0.25 * 14)
    assert not set(split.val) & set(split.train)


def test_mixture_without_ravdess_folds_its_first_or_named_corpus(corpora_dir):
    clips = load_corpora(corpora_dir, ["savee", "crema_d"])
    split = make_split(clips, fold=1)
    assert {s.split(":")[0] for s in _speakers(clips, split.test)} == {"savee"}
    assert {s.split(":")[0] for s in _speakers(clips, split.val)} == {"savee"}
    named = make_split(clips, fold=1, test_corpus="crema_d")
    assert split.test_corpora == ("savee",) and named.test_corpora == ("crema_d",)
    with pytest.raises(ValueError, match="not among"):
        make_split(clips, fold=1, test_corpus="tess")


def test_cross_corpus_split_tests_on_the_whole_other_corpus(corpora_dir):
    clips = load_corpora(corpora_dir, ["ravdess", "tess"])
    split = make_split(clips, "cross_corpus", test_corpora=["tess"])
    assert [clips[i].corpus for i in split.test] == ["tess"] * 28
    assert {clips[i].corpus for i in split.train + split.val} == {"ravdess"}
    assert len(_speakers(clips, split.val)) == 4 and not split.leaky
    bad = dataclasses.replace(split, train=[*split.train, split.test[0]])
    with pytest.raises(SplitLeakError):
        check_no_leak(clips, bad)  # the guard stays strict for cross-corpus splits
    with pytest.raises(ValueError, match="must name loaded corpora"):
        make_split(clips, "cross_corpus", test_corpora=["savee"])
    with pytest.raises(ValueError, match="at least one training corpus"):
        make_split([c for c in clips if c.corpus == "tess"], "cross_corpus",
                   test_corpora=["tess"])


def test_protocol_labels():
    assert protocol_label({"protocol": "speaker_independent", "fold": 2,
                           "tested_corpora": ["ravdess"]}) == "speaker-independent, fold 2"
    assert protocol_label({"protocol": "speaker_independent", "fold": 1,
                           "tested_corpora": ["crema_d"]}) == "speaker-independent, crema_d fold 1"
    label = protocol_label({"protocol": "cross_corpus", "tested_corpora": ["tess"],
                            "trained_corpora": ["ravdess"]})
    assert label == "cross-corpus, trained on ravdess, tested on tess"
    assert "LEAKY" in protocol_label({"protocol": "random", "leaky": True})


# -- datamodule -----------------------------------------------------------------------

DM_ARGS = {"features": {"kind": "hand", "audio": {"offset": 0.6, "duration": 2.5}},
           "augment": {"versions": ["original"]}, "progress": False, "n_jobs": 1}


def _dm(data_dir: Path, cache: Path, **kwargs) -> SERDataModule:
    dm = SERDataModule(data_dir, **{**DM_ARGS, "cache_dir": cache, **kwargs})
    dm.setup("fit")
    return dm


def _stage_clips(dm: SERDataModule, stage: str) -> list[Clip]:
    return [dm.clips[i] for i in dm.stages[stage].clip_index]


def test_balanced_class_weights_are_sklearns_with_absent_classes_zero():
    labels = np.array([0, 0, 0, 0, 2, 2, 3, 5, 5, 5])  # classes 1 and 4 absent
    weights = balanced_class_weights(labels, 6)
    present = np.array([0, 2, 3, 5])
    expected = compute_class_weight("balanced", classes=present, y=labels)
    np.testing.assert_allclose(weights[present], expected)
    np.testing.assert_allclose(expected, len(labels) / (4 * np.array([4, 2, 1, 3])))
    assert weights[1] == weights[4] == 0 and weights.shape == (6,)
    assert not balanced_class_weights(np.array([], dtype=np.int64), 3).any()


def test_class_weights_follow_the_mixture(corpora_dir, tmp_path):
    dm = _dm(corpora_dir, tmp_path, corpora=["ravdess", "tess"])
    assert dm.class_names == EMOTIONS
    train = _stage_clips(dm, "train")
    assert {c.corpus for c in train} == {"ravdess", "tess"}
    assert [EMOTIONS[y] for y in dm.labels("train")] == [c.emotion for c in train]
    counts = Counter(c.emotion for c in train)
    expected = len(train) / (8 * np.array([counts[e] for e in EMOTIONS], dtype=float))
    np.testing.assert_allclose(dm.class_weights, expected)
    # TESS has no calm, so calm is rarer in the mixture and weighs more than sad there
    assert dm.class_weights[EMOTIONS.index("calm")] > dm.class_weights[EMOTIONS.index("sad")]
    alone = _dm(corpora_dir, tmp_path, corpora=["ravdess"])
    assert not np.allclose(alone.class_weights, dm.class_weights)


def test_merged_labels_reach_the_targets(corpora_dir, tmp_path):
    dm = _dm(corpora_dir, tmp_path, corpora=["ravdess"], labels={"merge": {"calm": "neutral"}})
    assert dm.n_classes == 7 and "calm" not in dm.class_names
    labels = dm.labels("train")
    counts = np.bincount(labels, minlength=7)
    # one clip per actor and emotion: neutral now holds neutral and calm
    assert counts[dm.class_names.index("neutral")] == 2 * counts[dm.class_names.index("happy")]
    assert dm.metadata()["labels"] == {"merge": {"calm": "neutral"}, "drop": []}
    np.testing.assert_allclose(dm.class_weights, balanced_class_weights(labels, 7))


def test_cross_corpus_datamodule(corpora_dir, tmp_path):
    split = {"protocol": "cross_corpus", "test_corpora": ["tess"], "n_val_speakers": 4}
    dm = _dm(corpora_dir, tmp_path, corpora=["ravdess"], split=split)
    assert dm.class_names == tuple(e for e in EMOTIONS if e != "calm")
    test = _stage_clips(dm, "test")
    assert len(test) == 28 and {c.corpus for c in test} == {"tess"}
    assert dm.stages["test"].versions == ["original"] * 28
    train = _stage_clips(dm, "train")
    assert {c.emotion for c in train} == set(dm.class_names)  # calm left out of training
    meta = dm.metadata()
    assert meta["split"]["tested_corpora"] == ["tess"]
    assert protocol_label(meta["split"]) == "cross-corpus, trained on ravdess, tested on tess"
    per_class = Counter(c.emotion for c in test)
    assert meta["test_clips_per_class"] == {e: per_class[e] for e in dm.class_names}
    assert sum(meta["test_clips_per_class"].values()) == 28 and meta["skipped_files"] == []
    with pytest.raises(ValueError, match="also training corpora"):
        SERDataModule(corpora_dir, corpora=["tess"], split=split, **DM_ARGS)


def test_fixed_class_names_keep_a_checkpoints_indices(corpora_dir, tmp_path):
    """Evaluating an 8-class model on CREMA-D: indices stay RAVDESS's, labels shared."""
    split = {"protocol": "cross_corpus", "test_corpora": ["crema_d"]}
    trained = _dm(corpora_dir, tmp_path, corpora=["ravdess"])
    # as evaluation builds it: the pipeline, with its statistics, from checkpoint metadata
    pipeline = pipeline_from_meta(trained.pipeline.meta())
    dm = SERDataModule(corpora_dir, corpora=["ravdess"], split=split, class_names=EMOTIONS,
                       pipeline=pipeline, cache_dir=tmp_path,
                       **{k: v for k, v in DM_ARGS.items() if k in ("progress", "n_jobs")})
    dm.setup("test")
    assert set(dm.stages) == {"test"} and dm.class_names == EMOTIONS
    assert dm.class_weights is None  # no training stage, nothing to weigh
    y = dm.labels("test")
    assert sorted(set(y)) == sorted(EMOTIONS.index(e) for e in
                                    ("angry", "disgust", "fearful", "happy", "neutral", "sad"))
    counts = dm.metadata()["test_clips_per_class"]
    assert counts["calm"] == counts["surprised"] == 0 and sum(counts.values()) == len(y)


def test_clip_speakers_never_merge_across_corpora():
    a = Clip(Path("x/01.wav"), "tess", "tess:OAF", "female", "sad")
    b = Clip(Path("x/01.wav"), "savee", "savee:DC", "male", "sad")
    assert a.clip_id != b.clip_id  # same file name, different corpora
