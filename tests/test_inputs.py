"""Input edge cases of issue 19: errors that name their file, sample rate 0, many-channel arrays in
either orientation, directories and device files as inputs."""

from __future__ import annotations

import os

import numpy as np
import pytest
import soundfile as sf

from diffasr.audio import SAMPLE_RATE, load_audio
from diffasr.cli import main as cli
from diffasr.errors import AudioError


def _write(path, samples, rate=SAMPLE_RATE):
    sf.write(path, samples, rate, subtype="FLOAT")
    return path


def test_cli_errors_name_the_file_among_several(tmp_path, tiny_model_dir, en_clip, capsys):
    short = _write(tmp_path / "short.wav", np.zeros(100, np.float32))
    nan = _write(tmp_path / "nan.wav", np.full(8000, np.nan, np.float32))
    code = cli(
        [
            "transcribe",
            "--model",
            str(tiny_model_dir),
            "--method",
            "ctc-greedy",
            "--language",
            "en",
            str(en_clip),
            str(short),
            str(nan),
        ]
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(err) == 2, err
    assert err[0] == f"diffasr transcribe: error: {short}: audio is too short (6 ms)"
    assert err[1].startswith(f"diffasr transcribe: error: {nan}: ") and "NaN" in err[1]


def test_single_file_error_names_it_too(tmp_path, tiny_model_dir, capsys):
    short = _write(tmp_path / "short.wav", np.zeros(100, np.float32))
    assert cli(["transcribe", "--model", str(tiny_model_dir), str(short)]) == 2
    assert capsys.readouterr().err.strip() == f"diffasr transcribe: error: {short}: audio is too short (6 ms)"


@pytest.mark.parametrize("rate", [0, -16000, float("nan"), float("inf"), None, "16000"])
def test_sample_rate_must_be_positive(rate, tiny_model):
    x = np.zeros(16000, np.float32)
    with pytest.raises(AudioError, match="sample rate"):
        load_audio((x, rate))
    with pytest.raises(AudioError, match="sample rate"):
        tiny_model.transcribe((x, rate))


def test_rate_is_used_not_defaulted():
    x = np.sin(2 * np.pi * 200 * np.arange(8000) / 8000).astype(np.float32)
    assert abs(load_audio((x, 8000)).size - 16000) <= 1  # 1 s at 8 kHz -> 16,000 samples
    assert load_audio(x, sample_rate=16000).size == 8000


@pytest.mark.parametrize("channels", [2, 9, 16, 32])
def test_many_channels_either_orientation(channels):
    rng = np.random.default_rng(channels)
    n = 16000
    mono = np.sin(2 * np.pi * 300 * np.arange(n) / SAMPLE_RATE).astype(np.float32)
    frames = mono[:, None] + 0.01 * rng.standard_normal((n, channels)).astype(np.float32)  # (n, ch)
    expected = frames.mean(axis=1)
    np.testing.assert_allclose(load_audio(frames), expected, atol=1e-6)
    np.testing.assert_allclose(load_audio(np.ascontiguousarray(frames.T)), expected, atol=1e-6)


@pytest.mark.parametrize("shape", [(400, 400), (3000, 1000), (1000, 3000)])
def test_ambiguous_orientation_is_an_error(shape):
    with pytest.raises(AudioError, match="ambiguous"):
        load_audio(np.zeros(shape, np.float32))


def test_directory_and_device_inputs(tmp_path, tiny_model_dir, capsys):
    with pytest.raises(AudioError, match="is a directory"):
        load_audio(tmp_path)
    with pytest.raises(AudioError, match="no such file"):
        load_audio(tmp_path / "missing.wav")
    if os.path.exists("/dev/zero"):
        with pytest.raises(AudioError, match="not a regular file"):
            load_audio("/dev/zero")
        assert cli(["transcribe", "--model", str(tiny_model_dir), "/dev/zero"]) == 2
        assert capsys.readouterr().err.strip() == "diffasr transcribe: error: /dev/zero: not a regular file"
    assert cli(["transcribe", "--model", str(tiny_model_dir), str(tmp_path)]) == 2
    assert "is a directory" in capsys.readouterr().err
