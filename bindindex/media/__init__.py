"""Preprocessing of images, audio and text into ImageBind's model inputs.

Nothing here imports torchaudio or torchvision: decoding uses Pillow and
libsndfile (through soundfile), and resampling and filter banks are computed in
torch (see ``fbank``).
"""

from __future__ import annotations

from typing import Final

from bindindex.media.audio import SAMPLE_RATE as AUDIO_SAMPLE_RATE
from bindindex.media.audio import AudioInfo, AudioInput, decode_audio, load_audio
from bindindex.media.detect import (
    AUDIO_EXTENSIONS,
    IMAGE_EXTENSIONS,
    MEDIA_EXTENSIONS,
    Detected,
    extension_modality,
    sniff,
)
from bindindex.media.image import IMAGE_SIZE, ImageInput, load_image, preprocess, to_rgb
from bindindex.media.text import Tokenizer, default_tokenizer, tokenize

# Stored in the index with every vector. Increase it whenever a change here can
# alter the tensors that load_image, load_audio or tokenize return, so that
# vectors from the old preprocessing are not mixed with new ones.
PREPROCESS_VERSION: Final = "2"

__all__ = [
    "AUDIO_EXTENSIONS",
    "AUDIO_SAMPLE_RATE",
    "IMAGE_EXTENSIONS",
    "IMAGE_SIZE",
    "MEDIA_EXTENSIONS",
    "PREPROCESS_VERSION",
    "AudioInfo",
    "AudioInput",
    "Detected",
    "ImageInput",
    "Tokenizer",
    "decode_audio",
    "default_tokenizer",
    "extension_modality",
    "load_audio",
    "load_image",
    "preprocess",
    "sniff",
    "to_rgb",
    "tokenize",
]
