"""Inference-only ImageBind for the vision, text and audio modalities.

``ImageBind(config, modalities)`` allocates no memory: every parameter and buffer is
created on the meta device. A model becomes usable once its weights are assigned
with ``load_state_dict(state_dict, strict=True, assign=True)``, or with
``init_random_weights`` for the seeded test model. The state-dict keys and shapes
are those of Meta's ``imagebind_model.imagebind_huge()`` restricted to the built
modalities, so the published checkpoint loads without renaming.
"""

from __future__ import annotations

import hashlib
import logging
import math
from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bindindex.errors import ModelError
from bindindex.model.config import MODALITIES, ImageBindConfig, check_modality
from bindindex.model.layers import (
    EndOfTextHead,
    L2Normalize,
    LogitScale,
    Transformer,
    class_token_head,
)

logger = logging.getLogger(__name__)

# Fixed logit scales of the postprocessors, as in the reference: the text scale starts at
# 1/0.07 (the CLIP temperature) and is learned, and the audio scale is the constant 20.
TEXT_LOGIT_SCALE_INIT = 1 / 0.07
AUDIO_LOGIT_SCALE = 20.0

# Standard deviation of the seeded random weights of the test model.
RANDOM_INIT_STD = 0.02


class PositionEmbedding(nn.Module):
    """Learned position embedding of shape (1, num_tokens, dim), class token included."""

    def __init__(self, num_tokens: int, dim: int) -> None:
        super().__init__()
        self.pos_embed = nn.Parameter(torch.empty(1, num_tokens, dim))


class VisionStem(nn.Module):
    """Patch embedding of an image treated as a two-frame video.

    The checkpoint stores a Conv3d kernel of shape (D, 3, 2, 14, 14) that the reference
    applies to the image repeated twice in time. With temporal kernel and stride equal
    to the number of frames, that is one temporal window, and the result equals a 2-D
    convolution of the image with the kernel's temporal slices summed. Index 0 of
    ``proj`` is the parameter-free repeat step of the reference, kept as an identity
    so that the kernel's key is ``proj.1.weight``.
    """

    def __init__(self, config: ImageBindConfig) -> None:
        super().__init__()
        kernel = (config.temporal_kernel, config.patch_size, config.patch_size)
        self.patch_size = config.patch_size
        self.proj = nn.Sequential(
            nn.Identity(),
            nn.Conv3d(3, config.vision_embed_dim, kernel_size=kernel, stride=kernel, bias=False),
        )

    def forward(self, images: Tensor) -> Tensor:
        # images: (B, 3, H, W)
        conv = self.proj[1]
        assert isinstance(conv, nn.Conv3d)
        weight_2d = conv.weight.sum(dim=2)  # (D, 3, T, p, p) -> (D, 3, p, p)
        x = F.conv2d(images, weight_2d, stride=self.patch_size)  # (B, D, H/p, W/p)
        return x.flatten(2).transpose(1, 2)  # (B, N, D), N = (H/p) * (W/p), row-major


class AudioStem(nn.Module):
    """Patch embedding of a mel filterbank with overlapping 16x16 patches, then LayerNorm."""

    def __init__(self, config: ImageBindConfig) -> None:
        super().__init__()
        dim = config.audio_embed_dim
        self.proj = nn.Conv2d(
            1,
            dim,
            kernel_size=config.audio_kernel_size,
            stride=config.audio_stride,
            bias=False,
        )
        # The reference builds this LayerNorm with PyTorch's default eps of 1e-5.
        self.norm_layer = nn.LayerNorm(dim)

    def forward(self, clips: Tensor) -> Tensor:
        # clips: (N, 1, mel_bins, frames)
        x = self.proj(clips)  # (N, D, 12, 19)
        x = x.flatten(2).transpose(1, 2)  # (N, 228, D)
        return self.norm_layer(x)  # (N, 228, D)


class PatchPreprocessor(nn.Module):
    """Stem, class token and learned position embedding of the vision or audio tower.

    ``rgbt_stem`` and ``pos_embedding_helper`` are the reference's attribute names, which
    the checkpoint keys contain.
    """

    def __init__(self, stem: nn.Module, num_patches: int, dim: int) -> None:
        super().__init__()
        self.rgbt_stem = stem
        self.cls_token = nn.Parameter(torch.empty(1, 1, dim))
        self.pos_embedding_helper = PositionEmbedding(1 + num_patches, dim)

    def forward(self, x: Tensor) -> Tensor:
        tokens = self.rgbt_stem(x)  # (B, N, D)
        cls = self.cls_token.expand(tokens.shape[0], -1, -1)  # (B, 1, D)
        tokens = torch.cat([cls, tokens], dim=1)  # (B, 1+N, D)
        return tokens + self.pos_embedding_helper.pos_embed  # (B, 1+N, D)


class TextPreprocessor(nn.Module):
    """Token embedding, learned position embedding and the causal attention mask."""

    def __init__(self, config: ImageBindConfig) -> None:
        super().__init__()
        length = config.text_context_length
        dim = config.text_embed_dim
        self.token_embedding = nn.Embedding(config.text_vocab_size, dim)
        self.pos_embed = nn.Parameter(torch.empty(1, length, dim))
        # Additive mask: -inf above the diagonal. It is a persistent buffer because the
        # checkpoint contains it.
        self.register_buffer("mask", torch.empty(length, length))

    def forward(self, tokens: Tensor) -> Tensor:
        # tokens: (B, 77) int64
        return self.token_embedding(tokens) + self.pos_embed  # (B, 77, D)


def causal_mask(length: int) -> Tensor:
    """Return the additive (length, length) mask with -inf above the diagonal and 0 elsewhere."""
    return torch.full((length, length), float("-inf")).triu(1)


class ImageBind(nn.Module):
    """ImageBind towers for a subset of {"vision", "text", "audio"}.

    Only the requested modalities are built. The constructor allocates nothing
    (see the module docstring), and the ``embed_*`` methods raise ModelError until
    weights have been assigned.
    """

    def __init__(self, config: ImageBindConfig, modalities: Iterable[str]) -> None:
        super().__init__()
        requested = {check_modality(m) for m in modalities}
        if not requested:
            raise ModelError("at least one modality must be requested")
        self.config = config
        # Kept in the canonical order so that state-dict keys are ordered like the reference.
        self.modalities: tuple[str, ...] = tuple(m for m in MODALITIES if m in requested)

        with torch.device("meta"):
            self.modality_preprocessors = nn.ModuleDict()
            self.modality_trunks = nn.ModuleDict()
            self.modality_heads = nn.ModuleDict()
            self.modality_postprocessors = nn.ModuleDict()
            for modality in self.modalities:
                self._build_tower(modality)

    def _build_tower(self, modality: str) -> None:
        config = self.config
        dim = config.embed_dim(modality)
        blocks = getattr(config, f"{modality}_num_blocks")
        heads = getattr(config, f"{modality}_num_heads")
        out = config.out_embed_dim

        preprocessor: nn.Module
        head: nn.Module
        postprocessor: nn.Module
        if modality == "vision":
            preprocessor = PatchPreprocessor(VisionStem(config), config.vision_num_patches, dim)
            trunk = Transformer(dim, blocks, heads, pre_norm=True, add_bias_kv=False)
            head = class_token_head(dim, out)
            postprocessor = L2Normalize()
        elif modality == "text":
            preprocessor = TextPreprocessor(config)
            trunk = Transformer(dim, blocks, heads, pre_norm=False, add_bias_kv=False)
            head = EndOfTextHead(dim, out)
            postprocessor = nn.Sequential(
                L2Normalize(), LogitScale(TEXT_LOGIT_SCALE_INIT, learnable=True)
            )
        else:
            preprocessor = PatchPreprocessor(AudioStem(config), config.audio_num_patches, dim)
            trunk = Transformer(dim, blocks, heads, pre_norm=False, add_bias_kv=True)
            head = class_token_head(dim, out)
            postprocessor = nn.Sequential(
                L2Normalize(), LogitScale(AUDIO_LOGIT_SCALE, learnable=False)
            )

        self.modality_preprocessors[modality] = preprocessor
        self.modality_trunks[modality] = trunk
        self.modality_heads[modality] = head
        self.modality_postprocessors[modality] = postprocessor

    @property
    def dtype(self) -> torch.dtype:
        """Data type of the trunk weights (float32 or bfloat16)."""
        return next(self.modality_trunks.parameters()).dtype

    @property
    def device(self) -> torch.device:
        """Device of the weights; ``meta`` until weights are assigned."""
        return next(self.parameters()).device

    def _require(self, modality: str) -> None:
        if modality not in self.modalities:
            raise ModelError(
                f"this model was built without the {modality} tower "
                f"(built: {', '.join(self.modalities)})"
            )
        if self.device.type == "meta":
            raise ModelError("the model has no weights yet; load a state dict with assign=True")

    def embed_vision(self, images: Tensor) -> Tensor:
        """Embed images (B, 3, 224, 224) into L2-normalised vectors (B, out), float32."""
        self._require("vision")
        size = self.config.image_size
        _check_shape(images, "images", (None, 3, size, size))
        images = images.to(device=self.device, dtype=self.dtype)

        tokens = self.modality_preprocessors["vision"](images)  # (B, 257, D)
        tokens = self.modality_trunks["vision"](tokens)  # (B, 257, D)
        vectors = self.modality_heads["vision"](tokens)  # (B, out)
        return self.modality_postprocessors["vision"](vectors.float())  # (B, out)

    def embed_text(self, tokens: Tensor) -> Tensor:
        """Embed token ids (B, 77) into normalised vectors times the learned logit scale.

        The end-of-text token must have the largest id in each row (49407 in the CLIP
        vocabulary), because its position is found with argmax, as in the reference.
        """
        self._require("text")
        _check_shape(tokens, "tokens", (None, self.config.text_context_length))
        if tokens.dtype != torch.int64:
            raise ModelError(f"tokens must be int64, got {tokens.dtype}")
        tokens = tokens.to(self.device)

        preprocessor = self.modality_preprocessors["text"]
        assert isinstance(preprocessor, TextPreprocessor)
        eot_index = tokens.argmax(dim=-1)  # (B,)
        x = preprocessor(tokens).to(self.dtype)  # (B, 77, D)
        x = self.modality_trunks["text"](x, preprocessor.mask)  # (B, 77, D)
        vectors = self.modality_heads["text"](x, eot_index)  # (B, out)
        return self.modality_postprocessors["text"](vectors.float())  # (B, out)

    def embed_audio(self, clips: Tensor) -> Tensor:
        """Embed audio (B, S, 1, 128, 204) as the mean of S per-clip vectors (B, out).

        Each clip vector is L2-normalised and multiplied by the fixed scale 20 before the
        mean, as in the reference's forward for 5-D inputs, so the result has norm <= 20.
        """
        self._require("audio")
        config = self.config
        _check_shape(
            clips, "audio clips", (None, None, 1, config.audio_mel_bins, config.audio_frames)
        )
        batch, clips_per_item = clips.shape[:2]
        if clips_per_item == 0:
            raise ModelError("audio clips must contain at least one clip per item, got S=0")
        flat = clips.reshape(batch * clips_per_item, *clips.shape[2:])  # (B*S, 1, 128, 204)
        flat = flat.to(device=self.device, dtype=self.dtype)

        tokens = self.modality_preprocessors["audio"](flat)  # (B*S, 229, D)
        tokens = self.modality_trunks["audio"](tokens)  # (B*S, 229, D)
        vectors = self.modality_heads["audio"](tokens)  # (B*S, out)
        vectors = self.modality_postprocessors["audio"](vectors.float())  # (B*S, out)
        vectors = vectors.reshape(batch, clips_per_item, vectors.shape[-1])  # (B, S, out)
        return vectors.mean(dim=1)  # (B, out)

    def embed(self, modality: str, x: Tensor) -> Tensor:
        """Dispatch to ``embed_vision``, ``embed_text`` or ``embed_audio``."""
        if check_modality(modality) == "vision":
            return self.embed_vision(x)
        if modality == "text":
            return self.embed_text(x)
        return self.embed_audio(x)


def _check_shape(x: Tensor, name: str, expected: tuple[int | None, ...]) -> None:
    """Raise ModelError unless ``x`` matches ``expected``, where None matches any size."""
    if not isinstance(x, Tensor):
        raise ModelError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    matches = x.ndim == len(expected) and all(
        want is None or have == want for have, want in zip(x.shape, expected, strict=True)
    )
    if not matches:
        pattern = ", ".join("*" if want is None else str(want) for want in expected)
        raise ModelError(f"{name} must have shape ({pattern}), got {tuple(x.shape)}")


def expected_shapes(config: ImageBindConfig, modalities: Iterable[str]) -> dict[str, torch.Size]:
    """Return the state-dict keys and shapes of ``ImageBind(config, modalities)``.

    The model is built on the meta device, so this allocates no weight memory.
    """
    model = ImageBind(config, modalities)
    return {key: value.shape for key, value in model.state_dict().items()}


def random_state_dict(model: ImageBind, seed: int) -> dict[str, Tensor]:
    """Build seeded random float32 weights for every state-dict entry of ``model``.

    Each tensor has its own generator, seeded from a hash of ``seed`` and its key,
    so a tensor's values do not depend on which other modalities were built. LayerNorm
    weights are ones and biases zeros. The causal mask and the logit scales get the
    reference's fixed values, and every other tensor is drawn from N(0, 0.02^2).
    """
    fixed: dict[str, Tensor] = {}
    for module_name, module in model.named_modules():
        prefix = f"{module_name}." if module_name else ""
        if isinstance(module, nn.LayerNorm):
            fixed[f"{prefix}weight"] = torch.ones(module.normalized_shape)
            fixed[f"{prefix}bias"] = torch.zeros(module.normalized_shape)
        elif isinstance(module, TextPreprocessor):
            fixed[f"{prefix}mask"] = causal_mask(module.mask.shape[0])
        elif isinstance(module, LogitScale):
            fixed[f"{prefix}log_logit_scale"] = torch.tensor(
                module.init_log_value, dtype=torch.float32
            )

    state: dict[str, Tensor] = {}
    for key, meta_tensor in model.state_dict().items():
        if key in fixed:
            state[key] = fixed[key]
            continue
        generator = torch.Generator().manual_seed(_tensor_seed(seed, key))
        state[key] = torch.randn(meta_tensor.shape, generator=generator) * RANDOM_INIT_STD
    return state


def _tensor_seed(seed: int, key: str) -> int:
    # The CPU generator (mt19937) keeps only the low 32 bits of its seed, so the model seed
    # and the key are hashed together into 32 bits instead of being packed side by side.
    digest = hashlib.sha256(f"{seed}/{key}".encode()).digest()
    return int.from_bytes(digest[:4], "little")


def init_random_weights(model: ImageBind, seed: int) -> ImageBind:
    """Assign seeded random weights (see ``random_state_dict``) to a meta-built model."""
    model.load_state_dict(random_state_dict(model, seed), strict=True, assign=True)
    logger.debug("initialised %s with random weights, seed %d", model.modalities, seed)
    return model.eval().requires_grad_(False)


def count_parameters(model: nn.Module) -> int:
    """Return the number of parameter elements, meta tensors included."""
    return sum(math.prod(p.shape) for p in model.parameters())
