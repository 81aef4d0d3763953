"""Band-limited resampling and Kaldi log-mel filter banks in plain torch.

ImageBind's reference preprocessing (``imagebind/data.py``) computes its audio
input with ``torchaudio.functional.resample`` (default arguments) and
``torchaudio.compliance.kaldi.fbank``. This module computes the same features
without importing torchaudio at run time.

All tensors are float32. Windows, mel matrices and filter taps are evaluated in
float64 and rounded once, except the tap times of the resampling filter, which
are rounded to float32 as torchaudio rounds them (see ``_tap_weights``). On the
signals in tests/test_media_audio.py, resampled audio is within 4e-7 of
torchaudio 2.9.1 and log filter bank energies within a relative error of 1e-5.
"""

from __future__ import annotations

import functools
import logging
import math
from typing import Final

import torch
import torch.nn.functional as F

logger = logging.getLogger(__name__)

# Defaults of torchaudio.functional.resample (method "sinc_interp_hann").
LOWPASS_FILTER_WIDTH: Final = 6
ROLLOFF: Final = 0.99

# The dense polyphase kernel has (new rate) x (2 * width + old rate) taps after
# both rates are divided by their gcd. Co-prime rates such as 44101 -> 16000
# would need several GB, so above this many elements only the non-zero taps of
# each phase are kept and applied by gathering.
MAX_KERNEL_ELEMENTS: Final = 1 << 22

# Kaldi fbank options that ImageBind uses.
PREEMPHASIS: Final = 0.97
LOW_FREQ_HZ: Final = 20.0
FLOAT32_EPS: Final = torch.finfo(torch.float32).eps


def resampled_length(num_samples: int, orig_sr: int, new_sr: int) -> int:
    """Return ceil(num_samples * new_sr / orig_sr), the length ``resample`` returns."""
    _check_rates(orig_sr, new_sr)
    return -(-num_samples * new_sr // orig_sr)


def resample(waveform: torch.Tensor, orig_sr: int, new_sr: int) -> torch.Tensor:
    """Resample the last dimension from ``orig_sr`` to ``new_sr`` Hz.

    The filter is torchaudio's default: a Hann-windowed sinc low-pass with 6 zero
    crossings and a cutoff of 0.99 times the lower Nyquist frequency.
    waveform: (..., n) float32. Returns (..., ceil(n * new_sr / orig_sr)) float32.
    """
    length = resampled_length(waveform.shape[-1], orig_sr, new_sr)
    return resample_span(waveform, orig_sr, new_sr, 0, length)


def resample_span(
    waveform: torch.Tensor, orig_sr: int, new_sr: int, start: int, stop: int
) -> torch.Tensor:
    """Return output samples ``start`` to ``stop`` (exclusive) of ``resample(waveform)``.

    Only the input around the span is filtered, so taking a few seconds out of a
    long recording costs time proportional to the span.
    waveform: (..., n) float32. Returns (..., stop - start) float32.
    """
    _check_rates(orig_sr, new_sr)
    waveform = waveform.to(torch.float32)
    num_samples = waveform.shape[-1]
    stop = min(stop, resampled_length(num_samples, orig_sr, new_sr))
    start = max(start, 0)
    if stop <= start:
        return waveform.new_zeros((*waveform.shape[:-1], 0))
    if orig_sr == new_sr:
        return waveform[..., start:stop].clone()

    gcd = math.gcd(orig_sr, new_sr)
    orig, new = orig_sr // gcd, new_sr // gcd
    width = _filter_width(orig, new)
    batch_shape = waveform.shape[:-1]
    flat = waveform.reshape(-1, 1, num_samples)  # (batch, 1, n)

    # Output sample m is phase m % new of polyphase frame m // new. Frame k
    # filters input samples k * orig - width to k * orig + orig + width - 1.
    first_frame = start // new
    last_frame = (stop - 1) // new
    lo = first_frame * orig - width
    hi = last_frame * orig + orig + width
    window = flat[..., max(lo, 0) : min(hi, num_samples)]
    window = F.pad(window, (max(-lo, 0), max(hi - num_samples, 0)))  # (batch, 1, hi - lo)

    frames = _polyphase_filter(window, orig, new, width)  # (batch, frames, new)
    out = frames.reshape(flat.shape[0], -1)  # (batch, frames * new)
    offset = first_frame * new
    out = out[:, start - offset : stop - offset]  # (batch, stop - start)
    return out.reshape(*batch_shape, stop - start)


def _check_rates(orig_sr: int, new_sr: int) -> None:
    if orig_sr <= 0 or new_sr <= 0:
        raise ValueError(f"sample rates must be positive, got {orig_sr} and {new_sr}")


def _filter_width(orig: int, new: int) -> int:
    """Return the one-sided filter length in input samples for gcd-reduced rates."""
    base = min(orig, new) * ROLLOFF
    return math.ceil(LOWPASS_FILTER_WIDTH * orig / base)


def _polyphase_filter(window: torch.Tensor, orig: int, new: int, width: int) -> torch.Tensor:
    """Apply every phase of the resampling filter with stride ``orig``.

    window: (batch, 1, length) with length = (frames - 1) * orig + 2 * width + orig.
    Returns (batch, frames, new).
    """
    taps = 2 * width + orig
    if new * taps <= MAX_KERNEL_ELEMENTS:
        kernel = _dense_kernel(orig, new)  # (new, 1, taps)
        return F.conv1d(window, kernel, stride=orig).transpose(1, 2)

    # Each phase has only about 12 * orig / cutoff non-zero taps, so gather
    # those instead of building the mostly zero dense kernel.
    logger.debug("resampling %d -> %d with compact taps", orig, new)
    weights, starts = _compact_kernel(orig, new)  # (new, compact_taps), (new,)
    compact_taps = weights.shape[1]
    frames = (window.shape[-1] - taps) // orig + 1
    tap_index = starts[:, None] + torch.arange(compact_taps)  # (new, compact_taps)
    frames_per_chunk = max(1, MAX_KERNEL_ELEMENTS // (new * compact_taps))
    parts = []
    for first in range(0, frames, frames_per_chunk):
        frame_start = torch.arange(first, min(first + frames_per_chunk, frames)) * orig  # (chunk,)
        index = frame_start[:, None, None] + tap_index  # (chunk, new, compact_taps)
        gathered = window[:, 0, index]  # (batch, chunk, new, compact_taps)
        parts.append((gathered * weights).sum(dim=-1))  # (batch, chunk, new)
    return torch.cat(parts, dim=1)


@functools.lru_cache(maxsize=8)
def _dense_kernel(orig: int, new: int) -> torch.Tensor:
    """Return the cached (new, 1, 2 * width + orig) conv1d kernel. Do not modify it.

    Row p contains the weights of input offsets -width .. orig + width - 1 for
    the output sample that lies p / new input frames after the frame start.
    """
    width = _filter_width(orig, new)
    phases = torch.arange(new)  # (new,)
    offsets = torch.arange(2 * width + orig).expand(new, -1)  # (new, taps)
    return _tap_weights(orig, new, phases, offsets).unsqueeze(1)


@functools.lru_cache(maxsize=4)
def _compact_kernel(orig: int, new: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Return the non-zero part of each row of the dense kernel and where it starts.

    Returns weights (new, compact_taps) float32 and start offsets (new,) int64
    into the row of 2 * width + orig taps. Do not modify them.
    """
    width = _filter_width(orig, new)
    taps = 2 * width + orig
    cutoff = min(orig, new) * ROLLOFF
    half_span = LOWPASS_FILTER_WIDTH * orig / cutoff  # non-zero taps lie within this many
    compact_taps = min(taps, math.ceil(2 * half_span) + 3)

    phases = torch.arange(new)  # (new,)
    # Tap j of phase p is centred where j - width = orig * p / new.
    centres = width + phases.to(torch.float64) * orig / new  # (new,)
    starts = torch.floor(centres - half_span).long() - 1
    starts = starts.clamp(0, taps - compact_taps)  # (new,)
    offsets = starts[:, None] + torch.arange(compact_taps)  # (new, compact_taps)
    return _tap_weights(orig, new, phases, offsets), starts


def _tap_weights(orig: int, new: int, phases: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
    """Evaluate the windowed sinc for output phases (P,) at tap offsets (P, T).

    Offset j is input sample j - width relative to the frame start. Returns
    (P, T) float32.
    """
    width = _filter_width(orig, new)
    cutoff = min(orig, new) * ROLLOFF

    # Tap times are rounded to float32 on purpose. ImageBind's reference code
    # passes float32 audio to torchaudio, which builds this grid in float32, and
    # that rounding moves outputs by up to 2e-4 of full scale (measured on noise
    # resampled from 11024 Hz, 2e-5 from 44.1 kHz).
    # The sinc and the window are then evaluated in float64.
    tap_time = (offsets - width).to(torch.float32) / orig  # (P, T), in input frames
    phase_time = phases.to(torch.float32) / new  # (P,)
    t = (tap_time - phase_time[:, None]) * cutoff  # (P, T), in cutoff periods

    t = t.to(torch.float64).clamp(-LOWPASS_FILTER_WIDTH, LOWPASS_FILTER_WIDTH)
    hann = torch.cos(t * math.pi / (2 * LOWPASS_FILTER_WIDTH)) ** 2
    sinc = torch.special.sinc(t)  # sin(pi t) / (pi t), 1 at t = 0
    weights = sinc * hann * (cutoff / orig)  # (P, T)
    return weights.to(torch.float32)


def kaldi_fbank(
    waveform: torch.Tensor,
    sample_rate: int,
    num_mel_bins: int = 128,
    frame_length_ms: int = 25,
    frame_shift_ms: int = 10,
) -> torch.Tensor:
    """Compute Kaldi-style log mel filter bank energies.

    Matches ``torchaudio.compliance.kaldi.fbank`` with htk_compat=True,
    use_energy=False, window_type="hanning", dither=0, snip_edges=True and the
    other options at their defaults. A signal shorter than one frame gives zero
    frames.
    waveform: (n,) float32. Returns (frames, num_mel_bins) float32 with
    frames = 1 + (n - frame_length) // frame_shift.
    """
    if waveform.ndim != 1:
        raise ValueError(f"kaldi_fbank expects a 1-D waveform, got shape {tuple(waveform.shape)}")
    waveform = waveform.to(torch.float32)
    frame_length = sample_rate * frame_length_ms // 1000
    frame_shift = sample_rate * frame_shift_ms // 1000
    n_fft = _next_power_of_two(frame_length)
    if waveform.shape[0] < frame_length:
        return waveform.new_zeros((0, num_mel_bins))

    frames = waveform.unfold(0, frame_length, frame_shift)  # (frames, frame_length)
    frames = frames - frames.mean(dim=1, keepdim=True)

    # Pre-emphasis x[i] - 0.97 x[i - 1], where the sample before the first is the
    # first sample itself.
    previous = torch.cat([frames[:, :1], frames[:, :-1]], dim=1)  # (frames, frame_length)
    frames = frames - PREEMPHASIS * previous
    frames = frames * _hann_window(frame_length)

    spectrum = torch.fft.rfft(frames, n=n_fft)  # (frames, n_fft // 2 + 1) complex
    power = torch.view_as_real(spectrum).pow(2).sum(dim=-1)  # (frames, n_fft // 2 + 1)
    energies = power @ _mel_matrix(num_mel_bins, n_fft, sample_rate)  # (frames, mel)
    return energies.clamp_min(FLOAT32_EPS).log()


def _next_power_of_two(n: int) -> int:
    return 1 if n <= 1 else 1 << (n - 1).bit_length()


@functools.lru_cache(maxsize=8)
def _hann_window(length: int) -> torch.Tensor:
    """Return the symmetric Hann window, 0.5 - 0.5 cos(2 pi i / (length - 1)). (length,)"""
    i = torch.arange(length, dtype=torch.float64)
    window = 0.5 - 0.5 * torch.cos(2 * math.pi * i / (length - 1))
    return window.to(torch.float32)


def _mel(freq_hz: torch.Tensor) -> torch.Tensor:
    return 1127.0 * torch.log1p(freq_hz / 700.0)


@functools.lru_cache(maxsize=8)
def _mel_matrix(num_mel_bins: int, n_fft: int, sample_rate: int) -> torch.Tensor:
    """Return Kaldi's triangular mel filters as a (n_fft // 2 + 1, num_mel_bins) matrix.

    The filters are evenly spaced on the mel scale 1127 ln(1 + f / 700) between
    20 Hz and the Nyquist frequency and are triangular in mel. The Nyquist bin
    gets zero weight, as in Kaldi.
    """
    nyquist = sample_rate / 2.0
    mel_low = _mel(torch.tensor(LOW_FREQ_HZ, dtype=torch.float64))
    mel_high = _mel(torch.tensor(nyquist, dtype=torch.float64))
    delta = (mel_high - mel_low) / (num_mel_bins + 1)

    bins = torch.arange(num_mel_bins, dtype=torch.float64)[:, None]  # (mel, 1)
    left = mel_low + bins * delta
    center = mel_low + (bins + 1) * delta
    right = mel_low + (bins + 2) * delta

    fft_freqs = torch.arange(n_fft // 2, dtype=torch.float64) * (sample_rate / n_fft)
    fft_mels = _mel(fft_freqs)[None, :]  # (1, n_fft // 2)
    rising = (fft_mels - left) / (center - left)
    falling = (right - fft_mels) / (right - center)
    weights = torch.minimum(rising, falling).clamp_min(0.0)  # (mel, n_fft // 2)

    weights = F.pad(weights, (0, 1))  # (mel, n_fft // 2 + 1), Nyquist column zero
    return weights.T.contiguous().to(torch.float32)
