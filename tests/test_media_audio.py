"""Tests of audio decoding, resampling, Kaldi filter banks and clip features.

The reference pipeline here uses torchaudio, which the library itself must not
import.
"""

from __future__ import annotations

import os
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch
import torchaudio
import torchaudio.compliance.kaldi

from bindindex.errors import MediaError
from bindindex.media import audio as audio_module
from bindindex.media import fbank as fbank_module
from bindindex.media.audio import clip_bounds, decode_audio, load_audio
from bindindex.media.fbank import kaldi_fbank, resample, resample_span

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
PAIRED = SHARED / "data" / "paired"
EDGE_AUDIO = SHARED / "data" / "edge" / "audio"
CASES = SHARED / "cases"
NO_SHARED = f"shared media corpus not found at {SHARED}"

PAIRED_AUDIO = sorted(PAIRED.glob("*/audio/*")) if PAIRED.is_dir() else []

KALDI_OPTIONS = {
    "htk_compat": True,
    "use_energy": False,
    "window_type": "hanning",
    "num_mel_bins": 128,
    "dither": 0.0,
    "frame_length": 25,
    "frame_shift": 10,
}


def _shared_file(folder: Path, name: str) -> Path:
    path = folder / name
    if not path.is_file():
        pytest.skip(f"{NO_SHARED} (missing {path.name})")
    return path


def reference_features(path: Path) -> torch.Tensor:
    """Compute ImageBind's audio input with torchaudio, averaging channels.

    Clip timing follows pytorchvideo's ConstantClipsPerVideoSampler with a 2 s
    clip and 3 clips. Each clip has its own mean removed. Returns (3, 1, 128, 204).
    """
    samples, rate = soundfile.read(path, dtype="float32", always_2d=True)
    waveform = torch.from_numpy(samples.T.copy()).mean(dim=0, keepdim=True)  # (1, n)
    if rate != 16000:
        waveform = torchaudio.functional.resample(waveform, orig_freq=rate, new_freq=16000)
    duration = waveform.shape[1] / 16000
    clip_duration = Fraction(2)
    max_start = Fraction(max(duration - clip_duration, 0))
    clips = []
    for index in range(3):
        start = max_start / 2 * index
        end = start + clip_duration
        clip = waveform[:, int(start * 16000) : int(end * 16000)].clone()
        clip = clip - clip.mean()
        mel = torchaudio.compliance.kaldi.fbank(clip, sample_frequency=16000, **KALDI_OPTIONS)
        mel = mel.T  # (128, frames)
        missing = 204 - mel.shape[1]
        mel = torch.nn.functional.pad(mel, (0, missing)) if missing > 0 else mel[:, :204]
        clips.append(((mel - (-4.268)) / 9.138).unsqueeze(0))
    return torch.stack(clips)


# -- end-to-end parity ---------------------------------------------------------


@pytest.mark.skipif(not PAIRED_AUDIO, reason=NO_SHARED)
@pytest.mark.parametrize("path", PAIRED_AUDIO, ids=lambda p: p.name)
def test_features_match_torchaudio_pipeline(path: Path) -> None:
    ours = load_audio(path).clips
    reference = reference_features(path)
    assert ours.shape == (3, 1, 128, 204)
    assert ours.dtype == torch.float32
    relative_error = ((ours - reference).norm() / reference.norm()).item()
    assert relative_error < 1e-4


# -- resample ------------------------------------------------------------------

RATE_PAIRS = [
    (44100, 16000),
    (48000, 16000),
    (22050, 16000),
    (8000, 16000),
    (16000, 16000),
    (11024, 16000),
    (16000, 44100),
]


@pytest.mark.parametrize(("orig", "new"), RATE_PAIRS)
def test_resample_matches_torchaudio(orig: int, new: int) -> None:
    signal = torch.rand(2, 12_345, generator=torch.Generator().manual_seed(orig)) * 2 - 1
    ours = resample(signal, orig, new)
    reference = torchaudio.functional.resample(signal, orig, new)
    assert ours.shape == reference.shape
    assert ours.dtype == torch.float32
    assert (ours - reference).abs().max().item() < 2e-6


def test_resample_output_length_is_ceiling() -> None:
    assert resample(torch.zeros(441), 44100, 16000).shape == (160,)
    assert resample(torch.zeros(442), 44100, 16000).shape == (161,)
    assert resample(torch.zeros(3, 1, 7), 8000, 16000).shape == (3, 1, 14)
    assert resample(torch.zeros(0), 44100, 16000).shape == (0,)


def test_resample_span_equals_slice() -> None:
    signal = torch.randn(50_000, generator=torch.Generator().manual_seed(1))
    full = resample(signal, 44100, 16000)
    for start, stop in [(0, 100), (1234, 5678), (18000, full.shape[0]), (18100, 99_999)]:
        span = resample_span(signal, 44100, 16000, start, stop)
        expected = full[start:stop]
        assert span.shape == expected.shape
        assert (span - expected).abs().max().item() < 1e-6


def test_resample_compact_taps_equal_dense(monkeypatch: pytest.MonkeyPatch) -> None:
    signal = torch.randn(5_000, generator=torch.Generator().manual_seed(2))
    dense = resample(signal, 44100, 16000)
    monkeypatch.setattr(fbank_module, "MAX_KERNEL_ELEMENTS", 20_000)
    compact = resample(signal, 44100, 16000)
    assert (compact - dense).abs().max().item() < 1e-6


def test_resample_coprime_rates_match_torchaudio() -> None:
    # gcd(4001, 4000) = 1, so the dense kernel would have 16 million taps.
    signal = torch.rand(1, 6_000, generator=torch.Generator().manual_seed(4)) * 2 - 1
    ours = resample(signal, 4001, 4000)
    reference = torchaudio.functional.resample(signal, 4001, 4000)
    assert ours.shape == reference.shape
    assert (ours - reference).abs().max().item() < 2e-6


def test_resample_rejects_bad_rates() -> None:
    with pytest.raises(ValueError, match="positive"):
        resample(torch.zeros(10), 0, 16000)


# -- kaldi_fbank ---------------------------------------------------------------


def _torchaudio_fbank(signal: torch.Tensor, rate: int = 16000) -> torch.Tensor:
    return torchaudio.compliance.kaldi.fbank(signal[None], sample_frequency=rate, **KALDI_OPTIONS)


@pytest.mark.parametrize("length", [400, 401, 560, 12_345, 32_000])
def test_fbank_matches_torchaudio_on_noise(length: int) -> None:
    signal = torch.randn(length, generator=torch.Generator().manual_seed(length)) * 0.1
    ours = kaldi_fbank(signal, 16000)
    reference = _torchaudio_fbank(signal)
    assert ours.shape == reference.shape == (1 + (length - 400) // 160, 128)
    assert ((ours - reference).norm() / reference.norm()).item() < 1e-5
    assert (ours - reference).abs().max().item() < 2e-3


def test_fbank_matches_torchaudio_on_real_audio() -> None:
    path = _shared_file(CASES, "14_reference_tone_16k_mono_2s.wav")
    samples, _ = soundfile.read(path, dtype="float32")
    speech_path = _shared_file(EDGE_AUDIO, "speech_pcm16_48k.wav")
    speech, speech_rate = soundfile.read(speech_path, dtype="float32")
    speech_16k = resample(torch.from_numpy(speech), speech_rate, 16000)
    for signal in (torch.from_numpy(samples), speech_16k):
        ours = kaldi_fbank(signal, 16000)
        reference = _torchaudio_fbank(signal)
        assert ours.shape == reference.shape
        assert ((ours - reference).norm() / reference.norm()).item() < 1e-5


def test_fbank_other_sample_rate_matches_torchaudio() -> None:
    signal = torch.randn(8000, generator=torch.Generator().manual_seed(3)) * 0.1
    ours = kaldi_fbank(signal, 8000)
    reference = _torchaudio_fbank(signal, 8000)
    assert ours.shape == reference.shape
    assert ((ours - reference).norm() / reference.norm()).item() < 1e-5


def test_fbank_shorter_than_one_frame_is_empty() -> None:
    assert kaldi_fbank(torch.zeros(399), 16000).shape == (0, 128)


def test_fbank_of_silence_is_log_eps() -> None:
    features = kaldi_fbank(torch.zeros(1000), 16000)
    expected = float(np.log(np.finfo(np.float32).eps))
    assert torch.allclose(features, torch.full_like(features, expected))


# -- clip layout ---------------------------------------------------------------


def test_clip_bounds_short_signal_uses_whole_signal() -> None:
    assert clip_bounds(8000) == [(0, 8000)] * 3


def test_clip_bounds_long_signal_spans_file() -> None:
    bounds = clip_bounds(80_000)
    assert bounds == [(0, 32_000), (24_000, 56_000), (48_000, 80_000)]


def test_clip_bounds_follow_float_duration() -> None:
    # pytorchvideo works on the float duration n / 16000, which puts this start
    # one sample before the exact value 32001 - 32000 = 1.
    assert clip_bounds(32_001)[2] == (0, 32_000)


# -- load_audio on case and edge files ---------------------------------------


def test_stereo_equals_mono_reference() -> None:
    stereo = load_audio(_shared_file(CASES, "05_stereo_44k1_2s.wav"))
    mono = load_audio(_shared_file(CASES, "05_stereo_44k1_2s_monoref.wav"))
    assert stereo.channels == 2
    assert "downmixed" in stereo.flags
    # The mono file stores the average rounded to 16 bits, which changes only
    # near-silent mel bands. Using the left channel alone gives about 0.28.
    relative_error = ((stereo.clips - mono.clips).norm() / mono.clips.norm()).item()
    assert relative_error < 1e-2


def test_downmix_averages_channels() -> None:
    path = _shared_file(CASES, "05_stereo_44k1_2s.wav")
    mono, rate, info = decode_audio(path)
    samples, _ = soundfile.read(path, dtype="float32", always_2d=True)
    reference, _ = soundfile.read(
        _shared_file(CASES, "05_stereo_44k1_2s_monoref.wav"), dtype="float32"
    )
    assert (rate, info.channels) == (44100, 2)
    assert mono.dtype == np.float32
    assert np.allclose(mono, samples.mean(axis=1))
    assert np.abs(mono - reference).max() <= 1 / 32768
    assert not np.allclose(mono, samples[:, 0])


@pytest.mark.parametrize(
    ("name", "rate", "subtype"),
    [
        ("07_pcm24_stereo_44k1_2s.wav", 44100, "PCM_24"),
        ("08_wavex_pcm24_stereo_48k_2s.wav", 48000, "PCM_24"),
    ],
)
def test_24_bit_and_extensible_decode(name: str, rate: int, subtype: str) -> None:
    mono, decoded_rate, info = decode_audio(_shared_file(CASES, name))
    assert decoded_rate == rate
    assert info.subtype == subtype
    assert mono.dtype == np.float32
    assert 0 < np.abs(mono).max() <= 1.0
    assert load_audio(CASES / name).clips.shape == (3, 1, 128, 204)


def test_mp3_decodes_or_names_libsndfile_version() -> None:
    path = _shared_file(CASES, "10_mp3_stereo_44k1_3s.mp3")
    try:
        loaded = load_audio(path)
    except MediaError as error:
        assert error.reason == "unsupported_format"
        assert soundfile.__libsndfile_version__ in error.detail
    else:
        assert abs(loaded.duration_s - 3.0) < 0.1
        assert torch.isfinite(loaded.clips).all()


def test_mp3_with_old_libsndfile_is_unsupported(monkeypatch: pytest.MonkeyPatch) -> None:
    path = _shared_file(CASES, "10_mp3_stereo_44k1_3s.mp3")

    def fail_to_open(*args: object, **kwargs: object) -> None:
        raise RuntimeError("Format not recognised.")

    monkeypatch.setattr(audio_module.soundfile, "SoundFile", fail_to_open)
    monkeypatch.setattr(audio_module.soundfile, "__libsndfile_version__", "1.0.28")
    with pytest.raises(MediaError) as raised:
        load_audio(path)
    assert raised.value.reason == "unsupported_format"
    assert "1.0.28" in raised.value.detail


def test_nan_samples_raise_non_finite(tmp_path: Path) -> None:
    path = tmp_path / "nan.wav"
    samples = np.zeros(16000, dtype=np.float32)
    samples[100] = np.nan
    soundfile.write(path, samples, 16000, subtype="FLOAT")
    with pytest.raises(MediaError) as raised:
        load_audio(path)
    assert raised.value.reason == "non_finite"


def test_sample_rate_above_maximum_rejected(tmp_path: Path) -> None:
    path = tmp_path / "ultrasonic.wav"
    soundfile.write(path, np.zeros(1000, dtype=np.float32), 800_000, subtype="FLOAT")
    with pytest.raises(MediaError) as raised:
        load_audio(path)
    assert raised.value.reason == "unsupported_format"
    assert "800000 Hz" in raised.value.detail


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX file names are bytes")
def test_non_utf8_file_name_decodes(tmp_path: Path) -> None:
    source = _shared_file(CASES, "14_reference_tone_16k_mono_2s.wav")
    name = os.fsdecode(b"caf\xe9.wav")  # Latin-1 bytes, not valid UTF-8
    path = tmp_path / name
    path.write_bytes(source.read_bytes())
    assert load_audio(path).clips.shape == (3, 1, 128, 204)


def test_missing_file_is_vanished(tmp_path: Path) -> None:
    with pytest.raises(MediaError) as raised:
        load_audio(tmp_path / "gone.wav")
    assert raised.value.reason == "vanished"


def test_long_file_stays_fast() -> None:
    loaded = load_audio(_shared_file(EDGE_AUDIO, "ms_adpcm_11025_81s.wav"))
    assert loaded.sample_rate == 11024
    assert loaded.duration_s > 80
    assert torch.isfinite(loaded.clips).all()


def test_library_imports_no_torchaudio() -> None:
    code = (
        "import sys, bindindex.media, bindindex.media.fbank; "
        "print(sorted(m for m in sys.modules if m.startswith(('torchaudio', 'torchvision'))))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"


# Expected outcome of every edge and case audio file: flags when it loads, or
# the MediaError reason and a fragment of its detail.
LOADS = {
    "01_short_audio_0p5s_16k_mono.wav": ("short",),
    "02_tiny_audio_368samples_16k_mono.wav": ("short",),
    "05_stereo_44k1_2s.wav": ("downmixed",),
    "05_stereo_44k1_2s_monoref.wav": (),
    "07_pcm24_stereo_44k1_2s.wav": ("downmixed",),
    "08_wavex_pcm24_stereo_48k_2s.wav": ("downmixed",),
    "13_silent_3s_16k.wav": ("silent",),
    "14_reference_tone_16k_mono_2s.wav": (),
    "aiff_c_alaw_8k.aif": ("downmixed",),
    "almost_silent_pcm24_48k.wav": ("short", "silent"),
    "flac_plain.flac": ("short", "downmixed"),
    "flac_with_id3v2_tag.flac": ("short", "downmixed"),
    "float32_stereo_44k_tiny.wav": ("short", "downmixed"),
    "ms_adpcm_11025_81s.wav": (),
    "opus_48k_mono.opus": ("short",),
    "pcm12_4ch_8k.wav": ("short", "downmixed"),
    "pcm24_mono_48k.wav": ("short",),
    "rf64_pcm32.wav": ("short",),
    "silent_float32_digital_zero.wav": ("short", "silent"),
    "speech_pcm16_48k.wav": (),
    "truncated_data_early_eof.wav": ("short", "partial"),
    "u8_pcm_stereo_32k.wav": ("downmixed",),
    "ulaw_8k_mono.wav": ("short",),
    "very_short_0.35s.wav": ("short",),
    "wavex_float64_stereo_48k.wav": ("short", "downmixed"),
}
# MP3 decoding depends on the libsndfile version, so the MP3 files are tested above.
MAY_LOAD = {"10_mp3_stereo_44k1_3s.mp3", "mp3_mono_64k_id3v24.mp3"}
REJECTS = {
    "04_empty_audio_0frames_16k.wav": ("empty", "no audio frames"),
    "11_text_named_wav.wav": ("undecodable", "not an audio file: content is text"),
    "11_zero_bytes.wav": ("undecodable", "0 bytes"),
    "aac_adts_raw.aac": ("unsupported_format", "AAC (ADTS)"),
    "aac_in_3gp_container.m4a": ("unsupported_format", "3GP"),
    "git_lfs_pointer_not_audio.wav": ("undecodable", "Git LFS pointer"),
    "header_only_zero_frames.wav": ("empty", "no audio frames"),
    "ogg_container_flac_codec.ogg": ("unsupported_format", "Ogg FLAC"),
    "speex.spx": ("unsupported_format", "Ogg Speex"),
    "webm_opus_audio.webm": ("unsupported_format", "WebM"),
    "zero_bytes.wav": ("undecodable", "0 bytes"),
}


def _locate(name: str) -> Path:
    return _shared_file(CASES if name[:2].isdigit() else EDGE_AUDIO, name)


@pytest.mark.parametrize(("name", "flags"), sorted(LOADS.items()))
def test_edge_audio_loads(name: str, flags: tuple[str, ...]) -> None:
    loaded = load_audio(_locate(name))
    assert loaded.clips.shape == (3, 1, 128, 204)
    assert loaded.clips.dtype == torch.float32
    assert torch.isfinite(loaded.clips).all()
    assert loaded.flags == flags


@pytest.mark.parametrize(("name", "expected"), sorted(REJECTS.items()))
def test_edge_audio_rejected(name: str, expected: tuple[str, str]) -> None:
    reason, fragment = expected
    with pytest.raises(MediaError) as raised:
        load_audio(_locate(name))
    assert raised.value.reason == reason
    assert fragment in raised.value.detail


def test_short_file_reports_duration() -> None:
    short = load_audio(_shared_file(CASES, "01_short_audio_0p5s_16k_mono.wav"))
    tiny = load_audio(_shared_file(CASES, "02_tiny_audio_368samples_16k_mono.wav"))
    assert short.duration_s == pytest.approx(0.5)
    assert tiny.duration_s == pytest.approx(368 / 16000)


def test_edge_table_covers_every_audio_file() -> None:
    if not EDGE_AUDIO.is_dir() or not CASES.is_dir():
        pytest.skip(NO_SHARED)
    present = {p.name for p in EDGE_AUDIO.iterdir()}
    present |= {p.name for p in CASES.iterdir() if p.suffix in (".wav", ".mp3")}
    assert present == set(LOADS) | set(REJECTS) | MAY_LOAD


@pytest.mark.parametrize(
    ("container", "subtype", "suffix"),
    [("WAV", "PCM_16", ".wav"), ("WAV", "FLOAT", ".wav"), ("RF64", "PCM_24", ".wav"),
     ("AIFF", "PCM_16", ".aif")],
)  # fmt: skip
def test_cut_file_is_partial(tmp_path: Path, container: str, subtype: str, suffix: str) -> None:
    signal = np.sin(np.linspace(0, 2000, 3 * 16000)).astype(np.float32)
    whole = tmp_path / f"whole{suffix}"
    soundfile.write(whole, signal, 16000, format=container, subtype=subtype)
    cut = tmp_path / f"cut{suffix}"
    data = whole.read_bytes()
    cut.write_bytes(data[: len(data) * 6 // 10])

    assert "partial" not in load_audio(whole).flags
    loaded = load_audio(cut)
    assert "partial" in loaded.flags
    assert 1.0 < loaded.duration_s < 2.0
    assert torch.isfinite(loaded.clips).all()


def test_cut_flac_keeps_frames_before_the_cut(tmp_path: Path) -> None:
    signal = np.sin(np.linspace(0, 2000, 3 * 16000)).astype(np.float32)
    whole = tmp_path / "whole.flac"
    soundfile.write(whole, signal, 16000)
    cut = tmp_path / "cut.flac"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    loaded = load_audio(cut)
    assert "partial" in loaded.flags
    assert 0.5 < loaded.duration_s < 1.6


# Sample formats and tolerances (one quantisation step) for the decode matrix.
SUBTYPES = {
    ("WAV", "PCM_U8"): 2 / 256,
    ("WAV", "PCM_16"): 2 / 32768,
    ("WAV", "PCM_24"): 2 / 2**23,
    ("WAV", "FLOAT"): 1e-7,
    ("WAV", "DOUBLE"): 1e-7,
    ("FLAC", "PCM_16"): 2 / 32768,
    ("AIFF", "PCM_16"): 2 / 32768,
}


@pytest.mark.parametrize(("container", "subtype"), sorted(SUBTYPES))
@pytest.mark.parametrize("channels", [1, 6])
@pytest.mark.parametrize("rate", [8000, 96000])
def test_decode_matrix_keeps_every_channel(
    tmp_path: Path, container: str, subtype: str, channels: int, rate: int
) -> None:
    # A tone in the last channel only: decoding one channel would lose it.
    seconds = 2.5
    t = np.arange(int(seconds * rate), dtype=np.float64) / rate
    signal = np.zeros((len(t), channels))
    signal[:, -1] = 0.8 * np.sin(2 * np.pi * 440 * t)
    path = tmp_path / f"tone.{container.lower()}"
    soundfile.write(path, signal, rate, format=container, subtype=subtype)

    mono, decoded_rate, info = decode_audio(path)
    assert decoded_rate == rate
    assert info.channels == channels
    assert mono.dtype == np.float32
    np.testing.assert_allclose(mono, signal.mean(axis=1), atol=SUBTYPES[container, subtype])
    loaded = load_audio(path)
    assert "silent" not in loaded.flags
    assert ("downmixed" in loaded.flags) == (channels > 1)
    assert loaded.duration_s == pytest.approx(seconds)
    assert torch.isfinite(loaded.clips).all()
