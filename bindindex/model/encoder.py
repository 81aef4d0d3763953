"""Embedding front end that loads each ImageBind tower on first use."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from bindindex.errors import ModelError, UsageError
from bindindex.model.config import ModelSpec, get_spec
from bindindex.model.imagebind import ImageBind
from bindindex.model.weights import (
    load_model,
    model_id_for,
    parse_device,
    parse_precision,
    resolve_checkpoint,
)

logger = logging.getLogger(__name__)

# Why bf16 casts the weights instead of using autocast: CPU autocast keeps float32 weights
# and casts them to bfloat16 inside each operation, so it saves no weight memory and copies
# every weight on every call. Casting once halves the weight memory of the three huge
# towers (1.07e9 parameters: 4.3 GB in float32, 2.1 GB in bfloat16). The final
# normalisation and logit scale run in float32 in both precisions.
PRECISION_NOTES: dict[str, str] = {
    "fp32": "fp32: float32 weights and float32 computation",
    "bf16": (
        "bf16: weights cast to bfloat16 after loading and inputs cast to bfloat16; "
        "L2 normalisation and logit scaling run in float32. Chosen over autocast because "
        "it halves weight memory and converts each weight once instead of on every call."
    ),
}


# Measured with a 2-core AMD EPYC VM that has AVX2 but no AVX512-BF16 or AMX (torch 2.9.1):
# the huge vision tower took 15.8 s in fp32 and 157 s in bf16 for a batch of 4 images.
SLOW_BF16_NOTE = (
    " This CPU has neither AVX512-BF16 nor AMX, so bfloat16 matrix products have no "
    "hardware support and run several times slower than fp32 (about 10x for the huge "
    "vision tower on an AVX2-only CPU)."
)


def cpu_has_native_bf16() -> bool | None:
    """Return whether the CPU has AVX512-BF16 or AMX, or None if torch cannot tell."""
    checks = [
        getattr(torch.cpu, name, None)
        for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    ]
    # NOTE: these are private torch.cpu helpers (present in torch 2.9); without them the
    # result is unknown and no slowness warning is given.
    available = [check for check in checks if callable(check)]
    if not available:
        return None
    return any(bool(check()) for check in available)


def resolve_precision(precision: str, device: torch.device) -> str:
    """Map ``auto`` to ``bf16`` where the device computes bfloat16 natively, else ``fp32``.

    ``fp32`` and ``bf16`` are returned unchanged. On a CPU without AVX512-BF16 or AMX,
    or where torch cannot tell, ``auto`` means ``fp32``, because bf16 there is slower.
    """
    if precision != "auto":
        return precision
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    if device.type == "cpu" and cpu_has_native_bf16():
        return "bf16"
    return "fp32"


class Encoder:
    """Embed images, audio and text tokens with a named ImageBind model.

    A tower is built and its weights are read the first time its modality is embedded,
    so a text query never builds the vision tower. The outputs are the raw model
    outputs: vision vectors have norm 1, audio vectors norm <= 20 (the mean of three
    clip vectors of norm 20), and text vectors the learned logit scale (about 14 for
    random weights). The caller decides whether to normalise.
    """

    def __init__(
        self,
        model_name: str = "imagebind-huge",
        checkpoint: Path | str | None = None,
        precision: str = "fp32",
        device: str | torch.device = "cpu",
    ) -> None:
        self._spec: ModelSpec = get_spec(model_name)
        self._device = parse_device(device)
        precision = resolve_precision(precision, self._device)
        self._dtype = parse_precision(precision)
        self._precision = precision
        if self._spec.init_seed is not None and checkpoint is not None:
            raise UsageError(
                f"model {model_name!r} uses seeded random weights and takes no checkpoint"
            )
        self._checkpoint_arg = None if checkpoint is None else Path(checkpoint)
        self._checkpoint_path: Path | None = None
        self._model_id: str | None = None
        self._towers: dict[str, ImageBind] = {}
        self._slow_bf16 = (
            self._dtype == torch.bfloat16
            and self._device.type == "cpu"
            and cpu_has_native_bf16() is False
        )
        if self._slow_bf16:
            logger.warning(
                "bf16 requested on a CPU without native bfloat16 support.%s", SLOW_BF16_NOTE
            )

    @property
    def model_name(self) -> str:
        """Registry name of the model, e.g. ``imagebind-huge``."""
        return self._spec.name

    @property
    def meaningless(self) -> bool:
        """Whether the embeddings carry no meaning because the weights are random."""
        return self._spec.meaningless

    @property
    def dim(self) -> int:
        """Size of the joint embedding space (1024 for every registered model)."""
        return self._spec.config.out_embed_dim

    @property
    def precision(self) -> str:
        """Precision in use, ``fp32`` or ``bf16`` (``auto`` is resolved to one of them)."""
        return self._precision

    @property
    def precision_note(self) -> str:
        """Description of how the precision is applied, with a warning if bf16 will be slow."""
        note = PRECISION_NOTES[self._precision]
        return note + SLOW_BF16_NOTE if self._slow_bf16 else note

    @property
    def device(self) -> torch.device:
        """Device that the towers run on."""
        return self._device

    @property
    def loaded_modalities(self) -> frozenset[str]:
        """Modalities whose tower has been built so far."""
        return frozenset(self._towers)

    @property
    def checkpoint_path(self) -> Path | None:
        """Checkpoint file of the model, or None for seeded random weights.

        The first access resolves the file, which may download it.
        """
        if self._spec.init_seed is not None:
            return None
        if self._checkpoint_path is None:
            self._checkpoint_path = resolve_checkpoint(self._spec.name, self._checkpoint_arg)
        return self._checkpoint_path

    @property
    def model_id(self) -> str:
        """Id of the model and its weights, e.g. ``imagebind-huge@3f9c0a1b2d4e``.

        The first access resolves the checkpoint, which may download it.
        """
        if self._model_id is None:
            self._model_id = model_id_for(self._spec.name, self.checkpoint_path)
        return self._model_id

    def _tower(self, modality: str) -> ImageBind:
        tower = self._towers.get(modality)
        if tower is None:
            logger.info(
                "building the %s tower of %s (%s, %s)",
                modality,
                self._spec.name,
                self._precision,
                self._device,
            )
            tower = load_model(
                self._spec.name,
                modalities=[modality],
                checkpoint=self.checkpoint_path,
                precision=self._precision,
                device=self._device,
            )
            self._towers[modality] = tower
        return tower

    def load(self, modality: str) -> None:
        """Build the tower of ``modality`` and read its weights now instead of on first use."""
        self._tower(modality)

    def embed_images(self, images: Tensor) -> np.ndarray:
        """Embed preprocessed images (B, 3, 224, 224) into a float32 array (B, dim)."""
        _require_floating(images, "images")
        return self._run("vision", images)

    def embed_audio(self, clips: Tensor) -> np.ndarray:
        """Embed preprocessed audio (B, S, 1, 128, 204), S clips per item, into (B, dim)."""
        _require_floating(clips, "audio clips")
        return self._run("audio", clips)

    def embed_tokens(self, tokens: Tensor) -> np.ndarray:
        """Embed token ids (B, 77) into a float32 array (B, dim).

        Any integer dtype is accepted and converted to int64.
        """
        if not isinstance(tokens, Tensor):
            raise ModelError(f"tokens must be a torch.Tensor, got {type(tokens).__name__}")
        if tokens.dtype.is_floating_point or tokens.dtype.is_complex or tokens.dtype == torch.bool:
            raise ModelError(f"tokens must be an integer tensor, got {tokens.dtype}")
        return self._run("text", tokens.to(torch.int64))

    def _run(self, modality: str, x: Tensor) -> np.ndarray:
        tower = self._tower(modality)
        with torch.inference_mode():
            vectors = tower.embed(modality, x)  # (B, dim) float32
        return vectors.to(device="cpu", dtype=torch.float32).numpy()


def _require_floating(x: Tensor, name: str) -> None:
    if not isinstance(x, Tensor):
        raise ModelError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if not x.dtype.is_floating_point:
        raise ModelError(f"{name} must be a floating-point tensor, got {x.dtype}")
