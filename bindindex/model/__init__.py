"""ImageBind model for bindindex: architecture, weights and the embedding front end."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from bindindex.model.config import HUGE, MODALITIES, MODELS, TEST, ImageBindConfig, ModelSpec

if TYPE_CHECKING:
    from bindindex.model.encoder import Encoder
    from bindindex.model.imagebind import ImageBind, init_random_weights
    from bindindex.model.weights import (
        checkpoint_fingerprint,
        load_model,
        model_id_for,
        resolve_checkpoint,
    )

# These modules import torch, which takes seconds. They load on first use, so
# commands that only read the catalog or find nothing new to embed start quickly.
_LAZY = {
    "Encoder": "bindindex.model.encoder",
    "ImageBind": "bindindex.model.imagebind",
    "init_random_weights": "bindindex.model.imagebind",
    "checkpoint_fingerprint": "bindindex.model.weights",
    "load_model": "bindindex.model.weights",
    "model_id_for": "bindindex.model.weights",
    "resolve_checkpoint": "bindindex.model.weights",
}


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_LAZY[name]), name)


__all__ = [
    "HUGE",
    "MODALITIES",
    "MODELS",
    "TEST",
    "Encoder",
    "ImageBind",
    "ImageBindConfig",
    "ModelSpec",
    "checkpoint_fingerprint",
    "init_random_weights",
    "load_model",
    "model_id_for",
    "resolve_checkpoint",
]
