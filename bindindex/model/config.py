"""Architecture settings of ImageBind and the registry of named models."""

from __future__ import annotations

from dataclasses import dataclass

from bindindex.errors import ModelError

# Modalities that bindindex embeds, in the order the model builds them.
MODALITIES: tuple[str, ...] = ("vision", "text", "audio")


@dataclass(frozen=True)
class ImageBindConfig:
    """Sizes of the vision, text and audio towers of an ImageBind model.

    The fields after ``out_embed_dim`` are fixed by the published imagebind_huge
    checkpoint and by the preprocessing it was trained with. They are fields so
    that tests can read them, not so that callers change them.
    """

    vision_embed_dim: int  # width of the vision transformer
    vision_num_blocks: int  # transformer blocks in the vision trunk
    vision_num_heads: int  # attention heads per vision block
    text_embed_dim: int  # width of the text transformer
    text_num_blocks: int  # transformer blocks in the text trunk
    text_num_heads: int  # attention heads per text block
    audio_embed_dim: int  # width of the audio transformer
    audio_num_blocks: int  # transformer blocks in the audio trunk
    audio_num_heads: int  # attention heads per audio block
    out_embed_dim: int  # size of the joint embedding that every head projects to

    image_size: int = 224  # input images are image_size x image_size pixels
    patch_size: int = 14  # spatial side of a vision patch, in pixels
    video_frames: int = 2  # an image is repeated this many times in time before the stem
    temporal_kernel: int = 2  # temporal kernel and stride of the Conv3d vision stem
    audio_mel_bins: int = 128  # mel bins (height) of an audio clip's filterbank
    audio_frames: int = 204  # time frames (width) of an audio clip's filterbank
    audio_kernel_size: int = 16  # square kernel of the Conv2d audio stem
    audio_stride: int = 10  # stride of the Conv2d audio stem (patches overlap)
    text_context_length: int = 77  # tokens per text input, padded with zeros
    text_vocab_size: int = 49408  # entries in the BPE vocabulary of the token embedding

    def __post_init__(self) -> None:
        for modality in MODALITIES:
            dim = getattr(self, f"{modality}_embed_dim")
            heads = getattr(self, f"{modality}_num_heads")
            if dim % heads != 0:
                raise ModelError(
                    f"invalid config: {modality}_embed_dim={dim} is not divisible by "
                    f"{modality}_num_heads={heads}"
                )
        if self.image_size % self.patch_size != 0:
            raise ModelError(
                f"invalid config: image_size={self.image_size} is not a multiple of "
                f"patch_size={self.patch_size}"
            )
        if self.video_frames != self.temporal_kernel:
            # The vision stem sums the temporal slices of its kernel, which is exact only
            # when the repeated image fills exactly one temporal window.
            raise ModelError(
                f"invalid config: video_frames={self.video_frames} must equal "
                f"temporal_kernel={self.temporal_kernel}"
            )

    @property
    def vision_num_patches(self) -> int:
        """Number of patch tokens per image, without the class token (256 for 224/14)."""
        side = self.image_size // self.patch_size
        return side * side

    @property
    def audio_patch_grid(self) -> tuple[int, int]:
        """Rows and columns of audio patches produced by the strided stem (12 x 19)."""
        rows = (self.audio_mel_bins - self.audio_kernel_size) // self.audio_stride + 1
        cols = (self.audio_frames - self.audio_kernel_size) // self.audio_stride + 1
        return rows, cols

    @property
    def audio_num_patches(self) -> int:
        """Number of patch tokens per audio clip, without the class token (228)."""
        rows, cols = self.audio_patch_grid
        return rows * cols

    def embed_dim(self, modality: str) -> int:
        """Return the transformer width of ``modality``."""
        return int(getattr(self, f"{check_modality(modality)}_embed_dim"))


# Sizes set by imagebind_huge() in Meta's imagebind_model.py, as packaged in
# imagebind-unofficial 0.1.1.
HUGE = ImageBindConfig(
    vision_embed_dim=1280,
    vision_num_blocks=32,
    vision_num_heads=16,
    text_embed_dim=1024,
    text_num_blocks=24,
    text_num_heads=16,
    audio_embed_dim=768,
    audio_num_blocks=12,
    audio_num_heads=12,
    out_embed_dim=1024,
)

# A tiny model with the same input and output shapes as HUGE, for tests and offline demos.
# The widths differ per modality so that a wiring mistake between towers fails loudly.
TEST = ImageBindConfig(
    vision_embed_dim=64,
    vision_num_blocks=2,
    vision_num_heads=4,
    text_embed_dim=64,
    text_num_blocks=2,
    text_num_heads=4,
    audio_embed_dim=48,
    audio_num_blocks=2,
    audio_num_heads=4,
    out_embed_dim=1024,
)


@dataclass(frozen=True)
class ModelSpec:
    """A named model that bindindex can load."""

    name: str  # registry key, e.g. "imagebind-huge"
    config: ImageBindConfig  # architecture
    checkpoint_url: str | None  # where the weights are downloaded from; None for seeded weights
    checkpoint_filename: str | None  # file name of the weights in the checkpoint cache
    meaningless: bool  # True when embeddings carry no semantic meaning (random weights)
    init_seed: int | None = None  # seed of the random weights; None when weights come from a file

    @property
    def uses_random_weights(self) -> bool:
        """Whether the weights come from ``init_seed`` instead of a checkpoint file."""
        return self.init_seed is not None


HUGE_CHECKPOINT_URL = "https://dl.fbaipublicfiles.com/imagebind/imagebind_huge.pth"

MODELS: dict[str, ModelSpec] = {
    "imagebind-huge": ModelSpec(
        name="imagebind-huge",
        config=HUGE,
        checkpoint_url=HUGE_CHECKPOINT_URL,
        checkpoint_filename="imagebind_huge.pth",
        meaningless=False,
    ),
    "imagebind-test": ModelSpec(
        name="imagebind-test",
        config=TEST,
        checkpoint_url=None,
        checkpoint_filename=None,
        meaningless=True,
        init_seed=0,
    ),
}


def get_spec(model_name: str) -> ModelSpec:
    """Look up ``model_name`` in MODELS and raise ModelError if it is not registered."""
    try:
        return MODELS[model_name]
    except KeyError:
        known = ", ".join(sorted(MODELS))
        raise ModelError(f"unknown model {model_name!r}; expected one of: {known}") from None


def check_modality(modality: str) -> str:
    """Return ``modality`` unchanged, or raise ModelError if bindindex does not embed it."""
    if modality not in MODALITIES:
        raise ModelError(f"unknown modality {modality!r}; expected one of: {', '.join(MODALITIES)}")
    return modality
