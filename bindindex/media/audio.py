"""Decode audio files and turn them into ImageBind's log-mel clip features.

The pipeline follows ImageBind's ``load_and_transform_audio_data``: resample to
16 kHz, take three evenly spaced 2 s clips, compute 128 Kaldi mel bins per clip,
pad or crop to 204 frames and normalise with the AudioSet mean and standard
deviation. It differs from that function in two places, on purpose:

* Multi-channel audio is averaged to mono. ImageBind feeds all channels to
  ``kaldi.fbank``, which reads only the first one.
* Each clip has its own mean subtracted from a copy. ImageBind subtracts it in
  place from a view of the whole waveform, so overlapping clips of files shorter
  than 6 s have the mean removed more than once.
"""

from __future__ import annotations

import logging
import os
import struct
from dataclasses import dataclass
from fractions import Fraction
from typing import BinaryIO, Final

import numpy as np
import soundfile
import torch

from bindindex.errors import MediaError
from bindindex.media import fbank
from bindindex.media.detect import Detected, open_with_head, sniff_after_id3, sniff_bytes

logger = logging.getLogger(__name__)

SAMPLE_RATE: Final = 16_000
CLIP_SECONDS: Final = 2
CLIPS_PER_FILE: Final = 3
NUM_MEL_BINS: Final = 128
TARGET_FRAMES: Final = 204
# Mean and standard deviation of the log-mel features on AudioSet, from ImageBind.
FBANK_MEAN: Final = -4.268
FBANK_STD: Final = 9.138
# One 25 ms Kaldi frame at 16 kHz. Shorter clips are zero-padded to this length.
MIN_CLIP_SAMPLES: Final = SAMPLE_RATE * 25 // 1000
# Peak amplitude below which a file is flagged "silent": -100 dBFS, which is below
# one step of 16-bit PCM (3.1e-5) and catches near-silent 24-bit and float files.
SILENCE_PEAK: Final = 1e-5
# The highest PCM rate in common use (768 kHz). Resampling from it to 16 kHz
# keeps about 600 taps per output sample.
MAX_SAMPLE_RATE: Final = 768_000

_MAX_CHUNKS: Final = 64
# Frames per read when recovering the readable start of a damaged file.
_RECOVERY_BLOCK: Final = 4096
_ESTIMATED_LENGTH_FORMATS: Final = frozenset({"MP3", "MPEG"})

# libsndfile reads MP3 from this version on.
_LIBSNDFILE_MP3_VERSION: Final = (1, 1, 0)
# libsndfile 1.2.2 claims Ogg FLAC support but fails on valid files with "unknown
# error in flac decoder", so a failure on this format is reported as unsupported.
_UNRELIABLE_FORMATS: Final = frozenset({"Ogg FLAC"})


@dataclass(frozen=True, slots=True)
class AudioInfo:
    """Properties of a decoded audio file, as reported by libsndfile."""

    sample_rate: int
    channels: int
    frames: int
    format: str
    subtype: str
    # Set when the container promises more audio than the file holds, as in an
    # interrupted download; the frames that are present were decoded.
    partial: bool = False

    @property
    def duration_s(self) -> float:
        return self.frames / self.sample_rate


@dataclass(frozen=True, slots=True)
class AudioInput:
    """Model input for one audio file.

    ``clips`` is float32 with shape (3, 1, 128, 204): three clips of normalised
    log-mel features. ``sample_rate``, ``channels`` and ``duration_s`` describe
    the file before resampling and downmixing. ``flags`` may contain "short"
    (shorter than 2 s, so the clips are padded), "silent" (peak amplitude below
    -100 dBFS), "downmixed" (more than one channel) and "partial" (the file ends
    before the audio data its header declares; what is there was used).
    """

    clips: torch.Tensor
    duration_s: float
    sample_rate: int
    channels: int
    format: str
    subtype: str
    flags: tuple[str, ...]


def decode_audio(path: str | os.PathLike[str]) -> tuple[np.ndarray, int, AudioInfo]:
    """Decode ``path`` with libsndfile and average its channels.

    Returns the mono signal as float32 of shape (frames,) in [-1, 1] for integer
    formats, the file's sample rate and its properties. Raises MediaError with
    one of these reasons:

    * "vanished" or "unreadable": the file cannot be opened.
    * "empty": the file has 0 bytes or its header declares no frames.
    * "unsupported_format": a known format that libsndfile cannot read, or a
      sample rate above MAX_SAMPLE_RATE.
    * "undecodable": anything else that does not decode, including non-audio.
    * "non_finite": a sample is NaN or infinite.
    """
    # NOTE: the whole file is decoded into memory at 4 bytes per sample and
    # channel (about 1.4 GB for an hour of 48 kHz stereo), although load_audio
    # uses only three 2 s clips of it.
    file, head = open_with_head(path)
    try:
        try:
            with soundfile.SoundFile(_native_path(path)) as sound:
                _check_sample_rate(path, sound.samplerate)
                samples, shortfall = _read_samples(sound)  # (frames, channels)
                shortfall = shortfall or _missing_data(file, head)
                # An MP3's frame count is an estimate from its bitrate, so only
                # formats that store an exact count are compared with it.
                exact_count = sound.format not in _ESTIMATED_LENGTH_FORMATS
                if shortfall is None and exact_count and 0 < samples.shape[0] < sound.frames:
                    missing = sound.frames - samples.shape[0]
                    shortfall = f"{missing} of {sound.frames} frames are missing"
                info = AudioInfo(
                    sample_rate=sound.samplerate,
                    channels=sound.channels,
                    frames=samples.shape[0],
                    format=sound.format,
                    subtype=sound.subtype,
                    partial=shortfall is not None,
                )
        except (RuntimeError, ValueError) as error:
            raise _decode_error(path, file, head, error) from error
    finally:
        file.close()
    if shortfall is not None and info.frames > 0:
        logger.warning("%s is incomplete, %s; decoded the rest", path, shortfall)

    if info.frames == 0:
        raise MediaError(path, "empty", f"the {info.format} header declares no audio frames")
    if not np.isfinite(samples).all():
        bad = int(np.count_nonzero(~np.isfinite(samples)))
        raise MediaError(path, "non_finite", f"{bad} samples are NaN or infinite")

    # Averaging keeps every channel's content. A single channel is passed through.
    mono = samples.mean(axis=1, dtype=np.float32) if info.channels > 1 else samples[:, 0]
    return np.ascontiguousarray(mono), info.sample_rate, info  # (frames,)


def _read_samples(sound: soundfile.SoundFile) -> tuple[np.ndarray, str | None]:
    """Read every frame as float32 (frames, channels).

    When decoding fails part way, as a FLAC file cut short does ("lost sync"),
    the file is read again block by block to keep the frames before the fault.
    Returns the samples and, in that case, what went wrong.
    """
    try:
        return sound.read(dtype="float32", always_2d=True), None
    except RuntimeError as error:
        sound.seek(0)
        blocks: list[np.ndarray] = []
        try:
            while True:
                block = sound.read(_RECOVERY_BLOCK, dtype="float32", always_2d=True)
                if len(block) == 0:
                    break
                blocks.append(block)
        except RuntimeError:
            pass
        if not blocks:
            raise error from None
        samples = np.concatenate(blocks)
        return samples, f"decoding stopped after {len(samples)} frames ({error})"


def _missing_data(file: BinaryIO, head: bytes) -> str | None:
    """Compare the audio data size a WAV, RF64 or AIFF header declares with the file size.

    libsndfile quietly shortens a data chunk that runs past the end of the
    file, so a truncated download decodes without error, and only the header shows it.
    Returns how much is missing, or None when nothing is (or for other formats).
    """
    if head[:4] in (b"RIFF", b"RF64") and head[8:12] == b"WAVE":
        order, data_id = "<", b"data"
    elif head[:4] == b"FORM" and head[8:12] in (b"AIFF", b"AIFC"):
        order, data_id = ">", b"SSND"
    else:
        return None
    try:
        size = os.fstat(file.fileno()).st_size
        rf64_data_size: int | None = None
        offset = 12
        # A valid file has a handful of chunks; the bound stops a corrupt header
        # from sending the walk through millions of tiny chunks.
        for _ in range(_MAX_CHUNKS):
            file.seek(offset)
            header = file.read(8)
            if len(header) < 8:
                return None
            chunk_id = header[:4]
            (chunk_size,) = struct.unpack(order + "I", header[4:])
            if chunk_id == b"ds64":
                body = file.read(16)
                if len(body) == 16:
                    rf64_data_size = struct.unpack("<Q", body[8:16])[0]
            elif chunk_id == data_id:
                declared = chunk_size
                if head[:4] == b"RF64" and chunk_size == 0xFFFFFFFF and rf64_data_size:
                    declared = rf64_data_size
                elif chunk_size in (0, 0xFFFFFFFF):
                    # Writers that stream (or crash) leave these placeholders.
                    return None
                present = size - (offset + 8)
                if present < declared:
                    return f"{declared - present} of {declared} bytes of audio data are missing"
                return None
            offset += 8 + chunk_size + (chunk_size & 1)
    except OSError:
        return None
    return None


def _native_path(path: str | os.PathLike[str]) -> str | bytes:
    """Return the path in the form libsndfile opens reliably.

    libsndfile opens the path itself because, through a Python file object, its
    seeks before the start of a corrupt file print tracebacks from the cffi
    callback to stderr. On POSIX the path is passed as bytes, because soundfile
    encodes str paths as strict UTF-8 and fails on names that are not UTF-8.
    """
    return os.fspath(path) if os.name == "nt" else os.fsencode(path)


def _check_sample_rate(path: str | os.PathLike[str], sample_rate: int) -> None:
    # A corrupt header can declare any rate, and resampling from gigahertz rates
    # would need gigabytes of filter taps.
    if sample_rate > MAX_SAMPLE_RATE:
        detail = (
            f"sample rate {sample_rate} Hz is above the supported maximum of {MAX_SAMPLE_RATE} Hz"
        )
        raise MediaError(path, "unsupported_format", detail)


def _decode_error(
    path: str | os.PathLike[str], file: BinaryIO, head: bytes, error: Exception
) -> MediaError:
    """Classify a libsndfile failure using the file's leading bytes."""
    detected = _sniff_open_file(file, head)
    version = soundfile.__libsndfile_version__
    # LibsndfileError.error_string omits the "Error opening <file object>:" prefix.
    message = getattr(error, "error_string", None) or str(error)

    if detected.modality != "audio":
        detail = f"not an audio file: content is {detected.describe()}"
        return MediaError(path, "undecodable", detail)
    if not detected.supported:
        detail = f"{detected.format} is not supported by libsndfile {version}"
        return MediaError(path, "unsupported_format", detail)
    if detected.format == "MP3" and _version_tuple(version) < _LIBSNDFILE_MP3_VERSION:
        detail = f"MP3 needs libsndfile 1.1.0 or newer, but soundfile uses libsndfile {version}"
        return MediaError(path, "unsupported_format", detail)
    if detected.format in _UNRELIABLE_FORMATS:
        detail = f"{detected.format} could not be decoded by libsndfile {version}: {message}"
        return MediaError(path, "unsupported_format", detail)
    return MediaError(path, "undecodable", f"{detected.describe()} failed to decode: {message}")


def _sniff_open_file(file: BinaryIO, head: bytes) -> Detected:
    # An ID3 tag hides the real format behind it, so look past it as sniff() does.
    if head.startswith(b"ID3"):
        return sniff_after_id3(file, head)
    return sniff_bytes(head)


def _version_tuple(version: str) -> tuple[int, ...]:
    parts = []
    for part in version.split("."):
        digits = "".join(ch for ch in part if ch.isdigit())
        if not digits:
            break
        parts.append(int(digits))
    return tuple(parts)


def load_audio(path: str | os.PathLike[str]) -> AudioInput:
    """Decode ``path`` and compute ImageBind's input features.

    Raises MediaError as ``decode_audio`` does.
    """
    mono, sample_rate, info = decode_audio(path)
    waveform = torch.from_numpy(mono)  # (frames,)

    flags = []
    if info.duration_s < CLIP_SECONDS:
        flags.append("short")
    peak = float(waveform.abs().max())
    if peak < SILENCE_PEAK:
        flags.append("silent")
    if info.channels > 1:
        flags.append("downmixed")
    if info.partial:
        flags.append("partial")

    clips = clip_features(waveform, sample_rate)  # (3, 1, 128, 204)
    if not torch.isfinite(clips).all():
        # Every step is finite for finite input, so this guards against a bug.
        raise MediaError(path, "non_finite", "the computed features contain NaN or infinity")
    logger.debug(
        "decoded %s: %s %s, %.2f s, flags %s",
        path, info.format, info.subtype, info.duration_s, flags,
    )  # fmt: skip
    return AudioInput(
        clips=clips,
        duration_s=info.duration_s,
        sample_rate=sample_rate,
        channels=info.channels,
        format=info.format,
        subtype=info.subtype,
        flags=tuple(flags),
    )


def clip_bounds(num_samples: int) -> list[tuple[int, int]]:
    """Return the [start, stop) sample ranges of the three clips at 16 kHz.

    Clip i starts at i * max(duration - 2, 0) / 2 seconds. The start is computed
    as ImageBind's clip sampler (pytorchvideo ConstantClipsPerVideoSampler) does:
    exact fractions of the float duration n / 16000, truncated to a sample index.
    That float can make a start one sample earlier than exact integer arithmetic.
    Ranges are clamped to the signal.
    """
    duration = num_samples / SAMPLE_RATE
    max_start = Fraction(max(duration - CLIP_SECONDS, 0.0))
    bounds = []
    for i in range(CLIPS_PER_FILE):
        start_s = max_start * i / (CLIPS_PER_FILE - 1)
        start = int(start_s * SAMPLE_RATE)
        stop = int((start_s + CLIP_SECONDS) * SAMPLE_RATE)
        bounds.append((min(start, num_samples), min(stop, num_samples)))
    return bounds


def clip_features(waveform: torch.Tensor, sample_rate: int) -> torch.Tensor:
    """Compute the normalised log-mel features of the three clips.

    waveform: (n,) float32 mono at ``sample_rate``. Returns (3, 1, 128, 204).
    """
    num_samples = fbank.resampled_length(waveform.shape[0], sample_rate, SAMPLE_RATE)
    clips = []
    for start, stop in clip_bounds(num_samples):
        # Resampling only the clip gives the same samples as slicing the resampled file.
        clip = fbank.resample_span(waveform, sample_rate, SAMPLE_RATE, start, stop)  # (samples,)
        clips.append(_clip_melspec(clip))
    return torch.stack(clips)  # (3, 1, 128, 204)


def _clip_melspec(clip: torch.Tensor) -> torch.Tensor:
    """Turn one 16 kHz clip (samples,) into normalised features (1, 128, 204)."""
    clip = clip - clip.mean() if clip.numel() else clip
    if clip.shape[0] < MIN_CLIP_SAMPLES:
        # Pad with silence after the signal so that it yields one frame.
        clip = torch.nn.functional.pad(clip, (0, MIN_CLIP_SAMPLES - clip.shape[0]))

    mel = fbank.kaldi_fbank(clip, SAMPLE_RATE, num_mel_bins=NUM_MEL_BINS).T  # (128, frames)
    frames = mel.shape[1]
    if frames < TARGET_FRAMES:
        mel = torch.nn.functional.pad(mel, (0, TARGET_FRAMES - frames))  # (128, 204)
    else:
        mel = mel[:, :TARGET_FRAMES]  # (128, 204)
    mel = (mel - FBANK_MEAN) / FBANK_STD
    return mel.unsqueeze(0)  # (1, 128, 204)
