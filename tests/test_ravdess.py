import logging
from pathlib import Path

import pytest

from ser.data.ravdess import (
    InvalidFilenameError,
    inventory_problems,
    inventory_report,
    parse_ravdess_name,
    scan_ravdess,
)
from ser.data.scan import audio_files
from tests.conftest import make_ravdess_tree


def test_parse_decodes_every_field():
    rec = parse_ravdess_name("Actor_12/03-01-06-02-01-02-12.wav")
    assert rec.modality == "audio-only"
    assert rec.vocal_channel == "speech"
    assert rec.emotion == "fearful"
    assert rec.intensity == "strong"
    assert (rec.statement, rec.repetition, rec.actor) == (1, 2, 12)
    assert rec.gender == "female"
    assert parse_ravdess_name("03-01-01-01-01-01-07.flac").gender == "male"


@pytest.mark.parametrize(
    "name, fragment",
    [
        ("03-01-06-01-02-01.wav", "7 two-digit fields"),
        ("03-01-09-01-02-01-12.wav", "emotion code 09"),
        ("03-01-06-01-02-01-25.wav", "actor code 25"),
        ("03-01-01-02-01-01-01.wav", "neutral has no strong"),
        ("03-01-0a-01-02-01-12.wav", "7 two-digit fields"),
        ("notes.wav", "7 two-digit fields"),
    ],
)
def test_bad_names_raise_with_the_file_named(name, fragment):
    with pytest.raises(InvalidFilenameError) as err:
        parse_ravdess_name(Path("/corpus/Actor_01") / name)
    assert name in str(err.value) and fragment in str(err.value)


def test_scan_reads_wav_and_flac_and_reports_missing(tmp_path, caplog):
    root = tmp_path / "ravdess"
    make_ravdess_tree(root, actors=[1, 2], emotions=[1, 5], suffix=".wav")
    make_ravdess_tree(root, actors=[3], emotions=[5], suffix=".flac")
    clips = scan_ravdess(root)
    assert len(clips) == 5
    assert {c.path.suffix for c in clips} == {".wav", ".flac"}
    assert clips[0].speaker == "ravdess:01" and clips[0].corpus == "ravdess"
    problems = inventory_problems(clips)
    assert "actor 04: missing" in problems
    assert "actor 01: 2 clips, expected 60" in problems
    assert "incomplete" in caplog.text
    report = inventory_report(clips)
    assert "ravdess:03" in report and "angry" in report


def test_scan_rejects_a_stray_badly_named_file(tmp_path):
    root = tmp_path / "ravdess"
    make_ravdess_tree(root, actors=[1], emotions=[1])
    (root / "Actor_01" / "copy of 03-01-01-01-01-01-01.wav").write_bytes(b"x")
    with pytest.raises(InvalidFilenameError, match="copy of"):
        scan_ravdess(root)


def test_hidden_files_and_folders_are_ignored(tmp_path, caplog):
    root = tmp_path / ".cache" / "ravdess"  # a hidden root itself is fine
    make_ravdess_tree(root, actors=[1, 2], emotions=[1, 5])
    apple = root / "Actor_01" / "._03-01-01-01-01-01-01.wav"  # macOS AppleDouble
    apple.write_bytes(b"\x00\x05\x16\x07 resource fork")
    (root / ".DS_Store").write_bytes(b"junk")
    trashed = root / ".Trash" / "Actor_03" / "03-01-05-01-01-01-03.wav"  # a well-named clip
    trashed.parent.mkdir(parents=True)
    trashed.write_bytes(b"RIFF")
    caplog.set_level(logging.INFO, logger="ser.data.scan")
    assert audio_files(root, "RAVDESS") == sorted(root.glob("Actor_0[12]/03-*.wav"))
    clips = scan_ravdess(root)
    assert len(clips) == 4 and {c.speaker for c in clips} == {"ravdess:01", "ravdess:02"}
    assert "ignored 3 hidden" in caplog.text


def test_only_hidden_audio_is_no_audio(tmp_path):
    (tmp_path / "Actor_01").mkdir()
    (tmp_path / "Actor_01" / "._03-01-01-01-01-01-01.wav").write_bytes(b"x")
    with pytest.raises(FileNotFoundError, match="no .wav or .flac"):
        audio_files(tmp_path, "RAVDESS")


def test_scan_missing_root(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        scan_ravdess(tmp_path / "nope")


@pytest.mark.real_data
def test_real_ravdess_is_complete(real_ravdess):
    clips = scan_ravdess(real_ravdess)
    assert len(clips) == 1440
    assert inventory_problems(clips) == []
    assert sum(c.emotion == "neutral" for c in clips) == 96
    assert sum(c.gender == "male" for c in clips) == 720
