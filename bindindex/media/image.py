"""Decode image files and turn them into ImageBind's vision input.

``preprocess`` reproduces the torchvision transform of ImageBind's
``load_and_transform_vision_data`` (bicubic resize of the short side to 224,
centre crop, CLIP normalisation) with Pillow and torch only. ``load_image``
adds what that function leaves to ``Image.convert("RGB")``: EXIF orientation,
16-bit and float samples scaled to 8 bits, and transparency composited onto
white.
"""

from __future__ import annotations

import functools
import logging
import math
import os
import struct
import warnings
import zlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, BinaryIO, Final

import numpy as np
import PIL
from PIL import Image, ImageOps

from bindindex.errors import MediaError
from bindindex.media.detect import open_with_head, sniff_bytes

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)

# Pillow warns about images above half its own limit. load_image checks every
# image against max_pixels itself, so the warning only adds noise on stderr.
# A filter set once here, because catch_warnings is not safe in decode threads.
warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)

IMAGE_SIZE: Final = 224
# CLIP's normalisation constants, which ImageBind's vision encoder uses.
CLIP_MEAN: Final = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD: Final = (0.26862954, 0.26130258, 0.27577711)

# Twice Pillow's default Image.MAX_IMAGE_PIXELS, the size at which Pillow itself
# raises DecompressionBombError.
DEFAULT_MAX_PIXELS: Final = 178_956_970

# Above this many pixels after resizing (an aspect ratio beyond about 1000:1),
# only the centre crop is resampled, because the full resize of a 1x100000 image
# would need about 15 GB. The limit allows 1x1000 (50 million pixels, 150 MB).
MAX_RESIZED_PIXELS: Final = 64_000_000

# Images whose short side is at least twice this are decoded or box-reduced to
# a short side of at least this before the bicubic resize to 224. Three times
# the output size is where a reduced-then-resampled image matches a full
# resample within a few grey levels (Pillow's reducing_gap advice).
REDUCED_MIN_SIDE: Final = 3 * IMAGE_SIZE

# Pillow plugins that may open a file. Formats outside this list, such as EPS
# (which runs Ghostscript) or PSD, are rejected as not an image.
_ALLOWED_FORMATS: Final = (
    "JPEG", "PNG", "GIF", "BMP", "DIB", "WEBP", "TIFF", "ICO", "PPM", "AVIF", "JPEG2000",
)  # fmt: skip

# Transparent pixels are composited onto this colour, as an image viewer shows
# them on a white page. Dropping alpha instead would expose whatever colour the
# encoder left in fully transparent pixels (often black).
BACKGROUND_RGB: Final = (255, 255, 255)

_HIGH_DEPTH_MODES: Final = frozenset({"I;16", "I;16L", "I;16B", "I;16N", "I", "F"})
_ALPHA_MODES: Final = frozenset({"RGBA", "RGBa", "LA", "La", "PA"})
_EXIF_ORIENTATION_TAG: Final = 0x0112
# EXIF orientations that swap width and height (the 90 and 270 degree turns).
_TRANSPOSING_ORIENTATIONS: Final = frozenset({5, 6, 7, 8})

# Exceptions that Pillow plugins raise for malformed input. Pillow has no common
# base class for them.
_DECODE_ERRORS: Final = (OSError, SyntaxError, ValueError, EOFError, struct.error, zlib.error)


@dataclass(frozen=True, slots=True)
class ImageInput:
    """Model input for one image file.

    ``pixels`` is float32 with shape (3, 224, 224), normalised with the CLIP mean
    and standard deviation. ``width`` and ``height`` are the decoded size after
    EXIF orientation. ``format`` is Pillow's format name. ``flags`` may contain
    "rotated" (EXIF orientation applied), "animated" (first frame used),
    "alpha_composited" (transparency composited onto white) and "high_bit_depth"
    (16-bit, 32-bit or float samples scaled to 8 bits) and "downscaled" (a large
    image decoded at reduced size, see REDUCED_MIN_SIDE).
    """

    pixels: torch.Tensor
    width: int
    height: int
    format: str
    flags: tuple[str, ...]


def load_image(path: str | os.PathLike[str], *, max_pixels: int = DEFAULT_MAX_PIXELS) -> ImageInput:
    """Decode ``path`` and compute ImageBind's vision input.

    Images with more than ``max_pixels`` pixels are rejected from the header,
    before any pixel data is decoded. Pillow also rejects images above twice its
    global ``Image.MAX_IMAGE_PIXELS``, so a larger ``max_pixels`` takes effect only
    if the application raises that global too.

    Raises MediaError with one of these reasons:

    * "vanished" or "unreadable": the file cannot be opened.
    * "too_many_pixels": the image is larger than ``max_pixels``.
    * "truncated": the pixel data ends early.
    * "unsupported_format": a known format that Pillow cannot decode.
    * "non_finite": a float image contains NaN or infinity.
    * "undecodable": anything else that does not decode, including non-images
      and files of 0 bytes.
    """
    file, head = open_with_head(path)
    try:
        file.seek(0)
        image, image_format, flags, (width, height) = _decode(path, file, head, max_pixels)
    finally:
        file.close()

    rgb, conversion_flags = to_rgb(image, path)
    flags += conversion_flags
    factor = min(rgb.size) // REDUCED_MIN_SIDE
    if factor >= 2:
        # Box-averaging by an integer factor first makes the bicubic resize
        # cheaper without a visible change at 224 pixels.
        rgb = rgb.reduce(factor)
        if "downscaled" not in flags:
            flags.append("downscaled")
    pixels = preprocess(rgb)  # (3, 224, 224)
    logger.debug(
        "decoded %s: %s %s %dx%d, flags %s", path, image_format, image.mode, width, height, flags
    )
    return ImageInput(
        pixels=pixels,
        width=width,
        height=height,
        format=image_format,
        flags=tuple(flags),
    )


def _decode(
    path: str | os.PathLike[str], file: BinaryIO, head: bytes, max_pixels: int
) -> tuple[Image.Image, str, list[str], tuple[int, int]]:
    """Open, size-check, load and orient the first frame of an image file.

    Returns the image, Pillow's format name, the flags raised so far and the
    full size after orientation, which a reduced JPEG decode does not show.
    """
    flags: list[str] = []
    try:
        image = Image.open(file, formats=_allowed_formats())
    except Image.DecompressionBombError as error:
        detail = (
            f"{error} The limit here is {min(max_pixels, pillow_pixel_limit())} pixels: "
            f"Pillow refuses images above {pillow_pixel_limit()} pixels whatever --max-pixels is"
        )
        raise MediaError(path, "too_many_pixels", detail) from error
    except _DECODE_ERRORS as error:
        raise _open_error(path, head, error) from error

    image_format = image.format or "unknown"
    width, height = image.size
    if width * height > max_pixels:
        detail = (
            f"{width}x{height} = {width * height} pixels exceeds the limit of {max_pixels}; "
            "raise --max-pixels (BINDINDEX_MAX_PIXELS) if the image is legitimate"
        )
        raise MediaError(path, "too_many_pixels", detail)

    if getattr(image, "is_animated", False):
        flags.append("animated")
    if image_format == "JPEG" and min(width, height) >= 2 * REDUCED_MIN_SIDE:
        # The JPEG decoder can scale by 1/2, 1/4 or 1/8 while decoding, which
        # saves most of the time and memory of a full-size decode.
        scale = REDUCED_MIN_SIDE / min(width, height)
        image.draft(None, (math.ceil(width * scale), math.ceil(height * scale)))
        if image.size != (width, height):
            flags.append("downscaled")
    try:
        image.load()
    except Image.DecompressionBombError as error:
        raise MediaError(path, "too_many_pixels", str(error)) from error
    except _DECODE_ERRORS as error:
        raise _load_error(path, image_format, error) from error

    orientation = _exif_orientation(image, path)
    if orientation not in (None, 1):
        try:
            image = ImageOps.exif_transpose(image)
            flags.append("rotated")
            if orientation in _TRANSPOSING_ORIENTATIONS:
                width, height = height, width
        except _DECODE_ERRORS as error:
            logger.warning("ignoring EXIF orientation %s of %s: %s", orientation, path, error)
    return image, image_format, flags, (width, height)


def pillow_pixel_limit() -> int:
    """Return the pixel count above which Pillow itself refuses to open an image."""
    limit = Image.MAX_IMAGE_PIXELS
    # Pillow raises DecompressionBombError above twice MAX_IMAGE_PIXELS; None turns it off.
    return 2 * int(limit) if limit else 2**63 - 1


@functools.cache
def _allowed_formats() -> list[str]:
    Image.init()
    return [name for name in _ALLOWED_FORMATS if name in Image.OPEN]


def _open_error(path: str | os.PathLike[str], head: bytes, error: Exception) -> MediaError:
    """Classify a failure of Image.open using the file's leading bytes."""
    detected = sniff_bytes(head)
    if detected.modality != "image":
        detail = f"not an image file: content is {detected.describe()}"
        return MediaError(path, "undecodable", detail)
    if not detected.supported:
        detail = f"{detected.format} is not supported by Pillow {PIL.__version__}"
        return MediaError(path, "unsupported_format", detail)
    message = str(error)
    if "truncated" in message.lower():
        # A file cut inside its headers fails while opening, before any pixels.
        return MediaError(path, "truncated", f"{detected.describe()} ends early: {message}")
    if isinstance(error, PIL.UnidentifiedImageError):
        # Pillow's own message ends in the repr of the file object, not the path.
        message = f"Pillow {PIL.__version__} cannot identify the image data"
    return MediaError(path, "undecodable", f"{detected.describe()} failed to decode: {message}")


def _load_error(path: str | os.PathLike[str], image_format: str, error: Exception) -> MediaError:
    message = str(error)
    # Pillow reports missing pixel data as "image file is truncated" and, for
    # some formats, as EOFError.
    if isinstance(error, EOFError) or "truncated" in message.lower():
        return MediaError(path, "truncated", f"{image_format} pixel data ends early: {message}")
    return MediaError(path, "undecodable", f"{image_format} pixel data failed to decode: {message}")


def _exif_orientation(image: Image.Image, path: str | os.PathLike[str]) -> int | None:
    try:
        value = image.getexif().get(_EXIF_ORIENTATION_TAG)
    except _DECODE_ERRORS as error:
        logger.warning("ignoring unreadable EXIF data of %s: %s", path, error)
        return None
    return value if isinstance(value, int) else None


def to_rgb(
    image: Image.Image, path: str | os.PathLike[str] = "<image>"
) -> tuple[Image.Image, list[str]]:
    """Convert any Pillow mode to 8-bit RGB and return it with the flags it raised.

    16-bit, 32-bit and float grayscale are scaled to 8 bits (see
    ``_high_depth_to_gray``), and a transparency entry on them is ignored.
    Other images with an alpha channel or a transparency entry are composited
    onto white. Every other mode (1, L, P, CMYK, YCbCr, LAB,
    HSV) uses Pillow's own conversion, which ignores embedded ICC profiles.
    Raises MediaError "non_finite" for float images with NaN or infinity.
    """
    if image.mode == "RGB":
        return image, []
    if image.mode in _HIGH_DEPTH_MODES:
        return _high_depth_to_gray(image, path).convert("RGB"), ["high_bit_depth"]
    if _has_transparency(image):
        return _composite_on_background(image)
    return image.convert("RGB"), []


def _has_transparency(image: Image.Image) -> bool:
    if image.mode in _ALPHA_MODES or "transparency" in image.info:
        return True
    palette = image.palette if image.mode == "P" else None
    return palette is not None and palette.mode == "RGBA"


def _composite_on_background(image: Image.Image) -> tuple[Image.Image, list[str]]:
    if image.mode == "La":
        # Pillow converts premultiplied La only to LA.
        image = image.convert("LA")
    rgba = image.convert("RGBA")
    min_alpha, _ = rgba.getchannel("A").getextrema()
    if min_alpha == 255:
        return rgba.convert("RGB"), []
    background = Image.new("RGBA", rgba.size, (*BACKGROUND_RGB, 255))
    return Image.alpha_composite(background, rgba).convert("RGB"), ["alpha_composited"]


def _high_depth_to_gray(image: Image.Image, path: str | os.PathLike[str]) -> Image.Image:
    """Scale a 16-bit, 32-bit integer or float grayscale image to an 8-bit L image.

    Pillow's own conversion clips these modes at 255, which turns most of a
    16-bit image white. The scale used here:

    * I;16 modes: 0..65535 maps to 0..255.
    * I: values within 0..255 are kept (Pillow's convention for mode I), values
      within 0..65535 are treated as 16-bit, anything else is stretched from its
      minimum to its maximum.
    * F: values within 0..1 are scaled by 255, values within 0..255 are kept,
      anything else is stretched from its minimum to its maximum.
    """
    # NOTE: modes I and F carry no declared bit depth, so their scale is inferred
    # from the value range. A 16-bit image whose values all lie below 256 is
    # therefore shown 257 times brighter than a 16-bit viewer would show it.
    values = np.asarray(image)  # (height, width)
    if image.mode == "F" and not np.isfinite(values).all():
        raise MediaError(path, "non_finite", "the float image contains NaN or infinite samples")

    data = values.astype(np.float64)  # (height, width)
    low, high = (float(data.min()), float(data.max())) if data.size else (0.0, 0.0)
    if image.mode.startswith("I;16"):
        scaled = data * (255.0 / 65535.0)
    elif image.mode == "F" and low >= 0.0 and high <= 1.0:
        scaled = data * 255.0
    elif low >= 0.0 and high <= 255.0:
        scaled = data
    elif image.mode == "I" and low >= 0.0 and high <= 65535.0:
        scaled = data * (255.0 / 65535.0)
    elif high > low:
        scaled = (data - low) * (255.0 / (high - low))
    else:
        scaled = np.zeros_like(data)
    gray = np.clip(np.rint(scaled), 0, 255).astype(np.uint8)  # (height, width)
    return Image.fromarray(gray, mode="L")


def preprocess(image: Image.Image) -> torch.Tensor:
    """Resize, centre-crop and normalise an RGB image for ImageBind.

    Equivalent to torchvision's Resize(224, BICUBIC), CenterCrop(224), ToTensor()
    and Normalize(CLIP mean, CLIP std) on a PIL image: the short side becomes 224
    and the long side int(224 * long / short), resampled by Pillow's bicubic
    filter. Raises ValueError unless the image mode is RGB.
    Returns float32 (3, 224, 224).
    """
    import torch  # imported here so that importing this module does not load torch

    if image.mode != "RGB":
        raise ValueError(
            f"preprocess expects an RGB image, got mode {image.mode}; call to_rgb first"
        )
    cropped = _resize_and_crop(image)

    array = np.asarray(cropped, dtype=np.uint8)  # (224, 224, 3)
    pixels = torch.from_numpy(array.copy()).permute(2, 0, 1)  # (3, 224, 224) uint8
    pixels = pixels.to(torch.float32) / 255.0  # (3, 224, 224)
    mean = torch.tensor(CLIP_MEAN, dtype=torch.float32)[:, None, None]  # (3, 1, 1)
    std = torch.tensor(CLIP_STD, dtype=torch.float32)[:, None, None]  # (3, 1, 1)
    return (pixels - mean) / std


def _resize_and_crop(image: Image.Image) -> Image.Image:
    """Resize the short side to 224 with Pillow's bicubic filter and take the centre 224x224."""
    width, height = image.size
    if width <= height:
        new_width, new_height = IMAGE_SIZE, IMAGE_SIZE * height // width
    else:
        new_width, new_height = IMAGE_SIZE * width // height, IMAGE_SIZE
    top = round((new_height - IMAGE_SIZE) / 2.0)
    left = round((new_width - IMAGE_SIZE) / 2.0)

    if new_width * new_height > MAX_RESIZED_PIXELS:
        # Resample only the crop window. Pillow rounds its two passes differently
        # then, so pixels can differ from the full resize by a few levels.
        logger.debug("resampling only the centre crop of a %dx%d image", width, height)
        scale_x, scale_y = width / new_width, height / new_height
        box = (
            left * scale_x,
            top * scale_y,
            (left + IMAGE_SIZE) * scale_x,
            (top + IMAGE_SIZE) * scale_y,
        )
        return image.resize((IMAGE_SIZE, IMAGE_SIZE), Image.Resampling.BICUBIC, box=box)

    if (new_width, new_height) != (width, height):
        image = image.resize((new_width, new_height), Image.Resampling.BICUBIC)
    return image.crop((left, top, left + IMAGE_SIZE, top + IMAGE_SIZE))
