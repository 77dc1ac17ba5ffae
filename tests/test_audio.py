"""Audio I/O: formats and bit depths, mono mixdown, resampling, errors that name the file, and
save_audio's exact PCM_16 mapping and no-overwrite rule."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from audiodiff.audio import AudioError, audio_info, load_audio, resample, save_audio


@pytest.mark.parametrize(
    ("name", "subtype", "atol"),
    [
        ("a16.wav", "PCM_16", 1 / 32768),
        ("a24.wav", "PCM_24", 1 / 2**23),
        ("a32.wav", "PCM_32", 1e-7),  # float32 output resolution near 0.5
        ("af.wav", "FLOAT", 0.0),
        ("ad.wav", "DOUBLE", 1e-7),
        ("a.flac", "PCM_16", 1 / 32768),
        ("a24.flac", "PCM_24", 1 / 2**23),
    ],
)
def test_lossless_formats_load_as_mono_float32(
    write_wav: Callable[..., Path],
    make_audio: Callable[..., np.ndarray],
    name: str,
    subtype: str,
    atol: float,
) -> None:
    path = write_wav(name, subtype=subtype)
    audio, sample_rate = load_audio(path)
    source = 0.5 * make_audio()  # conftest writes channel 0 at gain 0.5
    assert sample_rate == 22050 and audio.dtype == torch.float32
    assert audio.shape == (1, len(source))
    assert float((audio[0] - torch.from_numpy(source)).abs().max()) <= atol
    assert audio_info(path) == (22050, len(source), 1)


@pytest.mark.parametrize(("name", "subtype"), [("a.ogg", "VORBIS"), ("a.mp3", "MPEG_LAYER_III")])
def test_lossy_formats_load(
    write_wav: Callable[..., Path],
    make_audio: Callable[..., np.ndarray],
    name: str,
    subtype: str,
) -> None:
    if subtype not in sf.available_subtypes(name.rsplit(".", 1)[1].upper()):
        pytest.skip(f"this libsndfile cannot write {subtype}")
    path = write_wav(name, sample_rate=44100, subtype=subtype)
    audio, sample_rate = load_audio(path)
    source = 0.5 * make_audio(44100)
    assert sample_rate == 44100 and audio.dtype == torch.float32 and audio.shape[0] == 1
    # Codec delay and padding change the length slightly; the clip must still be the clip.
    assert abs(audio.shape[1] - len(source)) < 0.1 * len(source)
    rms = float(audio.pow(2).mean().sqrt())
    assert rms == pytest.approx(float(np.sqrt(np.mean(source**2))), rel=0.2)


def test_stereo_is_mixed_to_mono(
    write_wav: Callable[..., Path], make_audio: Callable[..., np.ndarray]
) -> None:
    # conftest scales channel c by 0.5 + 0.5 c / C: gains 0.5 and 0.75, mean 0.625.
    path = write_wav("stereo.wav", channels=2, subtype="FLOAT")
    audio, _ = load_audio(path)
    assert audio_info(path)[2] == 2 and audio.shape == (1, len(make_audio()))
    torch.testing.assert_close(audio[0], 0.625 * torch.from_numpy(make_audio()))


def test_resampled_on_load_keeps_tone_frequency(tmp_path: Path) -> None:
    n = 44100
    tone = 0.5 * np.sin(2 * np.pi * 1000.0 * np.arange(n) / 44100)
    sf.write(tmp_path / "tone.wav", tone, 44100, subtype="FLOAT")
    audio, sample_rate = load_audio(tmp_path / "tone.wav", sample_rate=22050)
    assert sample_rate == 22050 and audio.shape == (1, 22050)
    spectrum = np.abs(np.fft.rfft(audio[0].numpy() * np.hanning(22050)))
    peak_hz = np.argmax(spectrum) * 22050 / 22050
    assert peak_hz == pytest.approx(1000.0, abs=1.0)
    # The same rate is a no-op.
    same, same_rate = load_audio(tmp_path / "tone.wav", sample_rate=44100)
    assert same_rate == 44100 and same.shape == (1, n)


def test_resample_keeps_dtype_and_batch_shape() -> None:
    x = torch.randn(2, 1, 16000, dtype=torch.float64)
    y = resample(x, 16000, 22050)
    assert y.shape == (2, 1, 22050) and y.dtype == torch.float64
    with pytest.raises(ValueError, match="orig_sr 0"):
        resample(x, 0, 22050)


def test_bad_files_give_audio_error_naming_the_file(tmp_path: Path) -> None:
    empty = tmp_path / "empty.wav"
    sf.write(empty, np.zeros(0, dtype=np.float32), 22050)
    text = tmp_path / "notes.wav"
    text.write_text("this is not audio\n")
    missing = tmp_path / "missing.wav"
    for path, reason in [(empty, "empty"), (text, "not a readable audio"), (missing, "no such")]:
        with pytest.raises(AudioError, match=reason) as info:
            load_audio(path)
        assert str(path) in str(info.value)
    for path in (text, missing):
        with pytest.raises(AudioError, match=path.name):
            audio_info(path)
    assert issubclass(AudioError, ValueError)


def test_save_refuses_to_overwrite_and_leaves_no_temp_files(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "dir" / "out.wav"  # parents are created
    save_audio(path, np.zeros(100), 22050)
    with pytest.raises(FileExistsError, match="exists; pass overwrite=True"):
        save_audio(path, np.zeros(100), 22050)
    assert sf.info(path).frames == 100
    save_audio(path, np.zeros(50), 22050, overwrite=True)
    assert sf.info(path).frames == 50
    assert [p.name for p in path.parent.iterdir()] == ["out.wav"]


@pytest.mark.parametrize("shape", [(300,), (1, 300), (1, 1, 300)])
def test_save_accepts_mono_shapes(tmp_path: Path, shape: tuple[int, ...]) -> None:
    x = torch.linspace(-1, 1, 300).reshape(shape)
    save_audio(tmp_path / "t.wav", x, 16000)
    save_audio(tmp_path / "n.wav", x.numpy(), 16000)
    assert sf.info(tmp_path / "t.wav").frames == sf.info(tmp_path / "n.wav").frames == 300


def test_save_rejects_multichannel_and_unwritable_formats(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"\(2, 300\)"):
        save_audio(tmp_path / "x.wav", np.zeros((2, 300)), 16000)
    with pytest.raises(ValueError, match="'PCM_16' cannot be written to OGG"):
        save_audio(tmp_path / "x.ogg", np.zeros(300), 16000)
    with pytest.raises(ValueError, match="unknown audio extension '.xyz'"):
        save_audio(tmp_path / "x.xyz", np.zeros(300), 16000)
    save_audio(tmp_path / "x.ogg", np.zeros(3000), 16000, subtype="VORBIS")
    assert audio_info(tmp_path / "x.ogg")[0] == 16000


def test_pcm16_mapping_is_exact_and_round_trip_error_is_bounded(
    tmp_path: Path, make_audio: Callable[..., np.ndarray]
) -> None:
    x = np.concatenate([make_audio().astype(np.float64), [1.0, -1.0, 1.5, -2.0, 0.0]])
    path = save_audio(tmp_path / "x.wav", x, 22050)
    ints, _ = sf.read(path, dtype="int16")
    np.testing.assert_array_equal(ints, np.round(np.clip(x, -1, 1) * 32767).astype(np.int16))
    assert ints[-5:].tolist() == [32767, -32767, 32767, -32767, 0]  # clipped, no wrap-around
    back = load_audio(path)[0][0].double().numpy()
    err = np.abs(back - np.clip(x, -1, 1))
    # Read-back divides by 32768 (the common convention), write multiplies by 32767: the error is
    # the rounding (<= 0.5 LSB) plus the scale mismatch |x| / 32768.
    assert np.all(err <= (np.abs(np.clip(x, -1, 1)) + 0.5) / 32768 + 1e-9)
    quiet = np.abs(x) <= 0.5
    assert np.max(err[quiet]) <= 1 / 32767


def test_float_subtype_round_trip_is_exact(tmp_path: Path) -> None:
    x = np.linspace(-1, 1, 1001, dtype=np.float32)
    save_audio(tmp_path / "f.wav", x, 8000, subtype="FLOAT")
    np.testing.assert_array_equal(load_audio(tmp_path / "f.wav")[0][0].numpy(), x)
