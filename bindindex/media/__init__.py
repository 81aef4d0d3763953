"""Preprocessing of images, audio and text into ImageBind's model inputs.

Nothing here imports torchaudio or torchvision: decoding uses Pillow and
libsndfile (through soundfile), and resampling and filter banks are computed in
torch (see ``fbank``).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any, Final

from bindindex.media.detect import (
    AUDIO_EXTENSIONS,
    IMAGE_EXTENSIONS,
    MEDIA_EXTENSIONS,
    Detected,
    extension_modality,
    sniff,
)

if TYPE_CHECKING:
    from bindindex.media.audio import SAMPLE_RATE as AUDIO_SAMPLE_RATE
    from bindindex.media.audio import AudioInfo, AudioInput, decode_audio, load_audio
    from bindindex.media.image import IMAGE_SIZE, ImageInput, load_image, preprocess, to_rgb
    from bindindex.media.text import Tokenizer, default_tokenizer, tokenize

# The decoders import torch, which takes seconds. They load on first use, so a
# re-index that finds nothing new, or a command that only reads the catalog,
# does not pay for it.
_LAZY: Final = {
    "AUDIO_SAMPLE_RATE": ("bindindex.media.audio", "SAMPLE_RATE"),
    "AudioInfo": ("bindindex.media.audio", "AudioInfo"),
    "AudioInput": ("bindindex.media.audio", "AudioInput"),
    "decode_audio": ("bindindex.media.audio", "decode_audio"),
    "load_audio": ("bindindex.media.audio", "load_audio"),
    "IMAGE_SIZE": ("bindindex.media.image", "IMAGE_SIZE"),
    "ImageInput": ("bindindex.media.image", "ImageInput"),
    "load_image": ("bindindex.media.image", "load_image"),
    "preprocess": ("bindindex.media.image", "preprocess"),
    "to_rgb": ("bindindex.media.image", "to_rgb"),
    "Tokenizer": ("bindindex.media.text", "Tokenizer"),
    "default_tokenizer": ("bindindex.media.text", "default_tokenizer"),
    "tokenize": ("bindindex.media.text", "tokenize"),
}


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    module, attribute = _LAZY[name]
    return getattr(importlib.import_module(module), attribute)


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
