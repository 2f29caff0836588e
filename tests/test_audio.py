import numpy as np
import pytest
import soundfile
from scipy.signal import resample_poly

from seld import SeldError
from seld.audio import StreamingResampler, audio_info, iter_audio_blocks, read_audio, write_audio


def noise(channels=4, seconds=1.0, rate=24_000, seed=0):
    return (0.1 * np.random.default_rng(seed).standard_normal((channels, int(seconds * rate)))).astype(np.float32)


@pytest.mark.parametrize("suffix", ["wav", "flac", "ogg"])
def test_reads_any_format_as_float32_channels_first(tmp_path, suffix):
    audio = noise(seconds=0.5)
    path = tmp_path / f"x.{suffix}"
    soundfile.write(path, audio.T, 24_000)
    read, rate = read_audio(path)
    assert rate == 24_000 and read.dtype == np.float32 and read.shape == audio.shape
    if suffix != "ogg":  # lossy
        assert np.abs(read - audio).max() < 1e-3


@pytest.mark.parametrize("subtype", ["PCM_16", "PCM_24", "PCM_32"])
@pytest.mark.parametrize("suffix", ["wav", "flac"])
def test_integer_files_read_exactly_as_libsndfile_converts_them(tmp_path, subtype, suffix):
    # The blocks of integer files are converted here, not by libsndfile: the same float32 bits.
    if suffix == "flac" and subtype == "PCM_32":
        pytest.skip("FLAC has no 32-bit integer subtype")
    bits = int(subtype[-2:])
    rng = np.random.default_rng(3)
    peaks = np.array([[-1.0, 1.0 - 2.0 ** (1 - bits), 0.0, 2.0 ** (1 - bits)]] * 3, np.float64)
    audio = np.concatenate([peaks, rng.uniform(-1, 1, (3, 5_000))], axis=1)
    path = tmp_path / f"x.{suffix}"
    soundfile.write(path, audio.T, 24_000, subtype=subtype)
    expected = soundfile.read(path, dtype="float32", always_2d=True)[0].T
    blocks = list(iter_audio_blocks(path, block_samples=1_001))
    assert all(block.dtype == np.float32 and block.flags.c_contiguous for block in blocks)
    assert np.array_equal(np.concatenate(blocks, axis=1), expected)


@pytest.mark.parametrize("rate_in", [48_000, 44_100, 16_000])
def test_blockwise_resampling_equals_whole_file(tmp_path, rate_in):
    audio = noise(channels=2, seconds=2.3, rate=rate_in)
    path = tmp_path / "x.wav"
    soundfile.write(path, audio.T, rate_in, subtype="FLOAT")
    whole = resample_poly(audio, *{48_000: (1, 2), 44_100: (80, 147), 16_000: (3, 2)}[rate_in], axis=1)
    blocks = list(iter_audio_blocks(path, sample_rate=24_000, block_samples=7_001))
    assert len(blocks) > 3
    joined = np.concatenate(blocks, axis=1)
    assert joined.shape == whole.shape
    assert np.abs(joined - whole).max() < 1e-4


def test_streaming_resampler_any_block_sizes():
    rng = np.random.default_rng(1)
    signal = rng.standard_normal((1, 30_000)).astype(np.float32)
    resampler, pieces, start = StreamingResampler(44_100, 24_000, 1), [], 0
    while start < signal.shape[1]:
        size = int(rng.integers(1, 3_000))
        pieces.append(resampler.push(signal[:, start : start + size]))
        start += size
    pieces.append(resampler.flush())
    assert np.abs(np.concatenate(pieces, 1) - resample_poly(signal, 80, 147, axis=1)).max() < 1e-4


def test_write_is_whole_or_nothing(tmp_path):
    path = tmp_path / "out.wav"
    write_audio(path, noise(seconds=0.1))
    assert audio_info(path) == (24_000, 4, 2_400)
    assert [p.name for p in tmp_path.iterdir()] == ["out.wav"]
    with pytest.raises(Exception):
        write_audio(tmp_path / "bad.wav", np.zeros((2, 10, 3)))  # not [channels, samples]
    assert [p.name for p in tmp_path.iterdir()] == ["out.wav"]


def expect_error(path, match, **kwargs):
    with pytest.raises(SeldError) as error:
        read_audio(path, **kwargs)
    message = str(error.value)
    assert str(path) in message and "\n" not in message
    assert match in message


def test_missing_file(tmp_path):
    expect_error(tmp_path / "nope.wav", "no such file")


def test_corrupt_file(tmp_path):
    path = tmp_path / "corrupt.wav"
    path.write_bytes(b"RIFF\x10\x00\x00\x00WAVEjunkjunkjunk")
    expect_error(path, "not a readable audio file")


def test_empty_file(tmp_path):
    path = tmp_path / "empty.wav"
    path.write_bytes(b"")
    expect_error(path, "empty file (0 bytes)")


def test_not_audio(tmp_path):
    path = tmp_path / "text.wav"
    path.write_text("hello")
    expect_error(path, "not a readable audio file")


@pytest.mark.parametrize("suffix,subtype", [(".wav", "PCM_16"), (".wav", "FLOAT"), (".aiff", "PCM_24"),
                                            (".ogg", "VORBIS")])
def test_a_truncated_file_is_read_as_far_as_it_goes_with_a_warning(tmp_path, caplog, suffix, subtype):
    whole, cut = tmp_path / f"whole{suffix}", tmp_path / f"cut{suffix}"
    soundfile.write(whole, noise(seconds=2.0).T, 24_000, subtype=subtype)
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    audio, _ = read_audio(whole)
    assert "truncated" not in caplog.text
    part, _ = read_audio(cut)
    assert 0.2 * audio.shape[1] < part.shape[1] < 0.7 * audio.shape[1]
    assert f"{cut}: truncated (" in caplog.text and f"the file holds {part.shape[1] / 24_000:.1f} s" in caplog.text
    if suffix != ".ogg":
        assert "its header promises 2.0 s" in caplog.text
        np.testing.assert_array_equal(part, audio[:, : part.shape[1]])


def test_a_recorders_placeholder_size_is_no_truncation(tmp_path, caplog):
    """A WAV written while recording, its data size left at 0xFFFFFFFF: all its audio is there."""
    path = tmp_path / "recording.wav"
    soundfile.write(path, noise(seconds=0.5).T, 24_000, subtype="PCM_16")
    data = bytearray(path.read_bytes())
    at = data.index(b"data") + 4
    data[at:at + 4] = b"\xff\xff\xff\xff"
    path.write_bytes(bytes(data))
    assert read_audio(path)[0].shape[1] == 12_000
    assert "truncated" not in caplog.text


def test_zero_length(tmp_path):
    path = tmp_path / "empty.wav"
    soundfile.write(path, np.zeros((0, 4), np.float32), 24_000)
    expect_error(path, "no samples")


def test_wrong_channel_count(tmp_path):
    path = tmp_path / "stereo.wav"
    soundfile.write(path, noise(channels=2, seconds=0.1).T, 24_000)
    expect_error(path, "has 2 channels, the array needs 4", channels=4)


def test_nan_samples(tmp_path):
    audio = noise(seconds=0.2)
    audio[1, 2_400] = np.nan
    path = tmp_path / "nan.wav"
    soundfile.write(path, audio.T, 24_000, subtype="FLOAT")
    expect_error(path, "NaN or Inf samples (first at 0.100 s)")


def test_huge_finite_samples_are_finite_without_a_numpy_warning():
    """Samples near float32's largest summed to inf: numpy printed "overflow encountered in reduce"."""
    import warnings

    from seld.audio import first_non_finite

    block = np.full((4, 100), 3e38, np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert first_non_finite(block) is None
        block[2, 40] = np.inf
        assert first_non_finite(block) == 40


def test_folder_instead_of_file(tmp_path):
    expect_error(tmp_path, "is a folder")


def test_write_audio_wants_channels_first_and_blocks_need_a_size(tmp_path):
    with pytest.raises(SeldError, match=r"audio of shape \[24000, 4\]: write_audio takes \[channels, samples\]"):
        write_audio(tmp_path / "x.wav", np.zeros((24_000, 4), np.float32))
    assert not list(tmp_path.iterdir())
    with pytest.raises(SeldError, match="x.wav: not written: the audio has NaN or infinite samples"):
        write_audio(tmp_path / "x.wav", np.full((4, 2400), np.nan, np.float32))
    assert not list(tmp_path.iterdir())
    write_audio(tmp_path / "x.wav", np.zeros((4, 2400), np.float32))
    with pytest.raises(ValueError, match="block_samples must be at least 1"):
        next(iter_audio_blocks(tmp_path / "x.wav", block_samples=0))


def test_float_samples_far_beyond_one_are_said_once(tmp_path, caplog):
    """Integer samples saved as floats (values up to 32767) were annotated without a word, and
    gave a fraction of the detections."""
    path = tmp_path / "int-scale.wav"
    soundfile.write(path, (3000.0 * np.random.default_rng(0).standard_normal((48_000, 4))).astype(np.float32), 24_000,
                    subtype="FLOAT")
    with caplog.at_level("WARNING"):
        blocks = list(iter_audio_blocks(path, block_samples=4800))
    assert len(blocks) == 10
    assert caplog.text.count("float samples up to") == 1 and "integer samples saved as floats?" in caplog.text
    caplog.clear()
    soundfile.write(path, (0.5 * np.random.default_rng(0).standard_normal((4800, 4))).clip(-1.2, 1.2), 24_000,
                    subtype="FLOAT")
    with caplog.at_level("WARNING"):
        list(iter_audio_blocks(path))
    assert caplog.text == ""
