"""The reference ImageBind preprocessing, rebuilt from torchvision and torchaudio functions.

The reference package's own data module imports pytorchvideo, which does not
import with current torchvision, so the benchmark's baseline repeats its steps.
Images get Resize(224, bicubic), CenterCrop(224), ToTensor and the CLIP
normalisation. Audio is resampled to 16 kHz and cut into three 2 s clips spread
over the file. Each clip becomes 128 Kaldi mel bins, padded or cropped to 204
frames and normalised with the AudioSet mean and standard deviation. Audio is read with
soundfile because ``torchaudio.load`` needs torchcodec and FFmpeg.
"""

from __future__ import annotations

from pathlib import Path

import soundfile
import torch
import torchaudio
from PIL import Image
from torchvision import transforms

_IMAGE = transforms.Compose(
    [
        transforms.Resize(224, interpolation=transforms.InterpolationMode.BICUBIC),
        transforms.CenterCrop(224),
        transforms.ToTensor(),
        transforms.Normalize(
            mean=(0.48145466, 0.4578275, 0.40821073), std=(0.26862954, 0.26130258, 0.27577711)
        ),
    ]
)


def image_input(path: Path) -> torch.Tensor:
    """Return the reference model input (3, 224, 224) for one image file."""
    with Image.open(path) as image:
        return _IMAGE(image.convert("RGB"))


def audio_input(path: Path) -> torch.Tensor:
    """Return the reference model input (3, 1, 128, 204) for one audio file."""
    data, rate = soundfile.read(str(path), dtype="float32", always_2d=True)
    waveform = torch.from_numpy(data.T.copy())  # (channels, samples)
    if rate != 16_000:
        waveform = torchaudio.functional.resample(waveform, rate, 16_000)
    duration = waveform.shape[1] / 16_000
    clips = []
    for i in range(3):
        start_s = max(duration - 2.0, 0.0) * i / 2
        start = int(start_s * 16_000)
        clip = waveform[:, start : start + 32_000]
        clip = clip - clip.mean()
        mel = torchaudio.compliance.kaldi.fbank(
            clip,
            htk_compat=True,
            sample_frequency=16_000,
            use_energy=False,
            window_type="hanning",
            num_mel_bins=128,
            dither=0.0,
            frame_length=25,
            frame_shift=10,
        ).T  # (128, frames)
        frames = mel.shape[1]
        mel = torch.nn.functional.pad(mel, (0, max(0, 204 - frames)))[:, :204]
        clips.append(((mel - -4.268) / 9.138).unsqueeze(0))
    return torch.stack(clips)  # (3, 1, 128, 204)
