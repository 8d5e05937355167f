import librosa
import numpy as np
import pytest
import soundfile as sf

from ser.data.audio import AudioConfig, AudioError, load_audio
from tests.conftest import write_tone


def test_stereo_48k_becomes_mono_at_the_configured_rate(tmp_path):
    path = write_tone(tmp_path / "a.wav", 440, seconds=2.0, sr=48000, channels=2)
    wave = load_audio(path, AudioConfig(sample_rate=16000))
    assert wave.ndim == 1 and wave.dtype == np.float32
    assert abs(len(wave) - 32000) <= 1


def test_crop_matches_librosa_load(tmp_path):
    path = write_tone(tmp_path / "b.wav", 300, seconds=3.5, sr=48000)
    ours = load_audio(path, AudioConfig(sample_rate=22050, offset=0.6, duration=2.5))
    ref, _ = librosa.load(path, sr=22050, offset=0.6, duration=2.5)
    assert ours.shape == ref.shape
    np.testing.assert_allclose(ours, ref, atol=1e-5)


@pytest.mark.parametrize(
    "make, fragment",
    [
        (lambda p: p.write_bytes(b""), "cannot read audio"),
        (lambda p: p.write_bytes(b"RIFF\x00\x00not really a wav file at all"), "cannot read audio"),
        (lambda p: sf.write(p, np.zeros(0, np.float32), 16000), "only 0.00 s"),
        (lambda p: sf.write(p, np.zeros(8000, np.float32), 16000), "need at least"),
        (lambda p: sf.write(p, np.full(32000, np.nan, np.float32), 16000, subtype="FLOAT"), "NaN"),
    ],
)
def test_bad_files_raise_naming_the_file(tmp_path, make, fragment):
    path = tmp_path / "03-01-05-01-01-01-01.wav"
    make(path)
    with pytest.raises(AudioError) as err:
        load_audio(path, AudioConfig(sample_rate=16000, offset=0.6, min_duration=0.5))
    assert str(path) in str(err.value) and fragment in str(err.value)
