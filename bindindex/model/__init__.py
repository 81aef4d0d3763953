"""ImageBind model for bindindex: architecture, weights and the embedding front end."""

from bindindex.model.config import HUGE, MODALITIES, MODELS, TEST, ImageBindConfig, ModelSpec
from bindindex.model.encoder import Encoder
from bindindex.model.imagebind import ImageBind, init_random_weights
from bindindex.model.weights import (
    checkpoint_fingerprint,
    load_model,
    model_id_for,
    resolve_checkpoint,
)

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
