"""Tests of image decoding, mode conversion and preprocessing against torchvision."""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageFile, ImageOps
from torchvision import transforms

from bindindex.errors import MediaError
from bindindex.media import image as image_module
from bindindex.media.image import CLIP_MEAN, CLIP_STD, load_image, preprocess, to_rgb

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
PAIRED = SHARED / "data" / "paired"
EDGE_IMAGES = SHARED / "data" / "edge" / "image"
CASES = SHARED / "cases"
NO_SHARED = f"shared media corpus not found at {SHARED}"

PAIRED_IMAGES = sorted(PAIRED.glob("*/images/*")) if PAIRED.is_dir() else []

REFERENCE_TRANSFORM = transforms.Compose(
    [
        transforms.Resize(224, interpolation=transforms.InterpolationMode.BICUBIC),
        transforms.CenterCrop(224),
        transforms.ToTensor(),
        transforms.Normalize(mean=CLIP_MEAN, std=CLIP_STD),
    ]
)


def _shared_file(folder: Path, name: str) -> Path:
    path = folder / name
    if not path.is_file():
        pytest.skip(f"{NO_SHARED} (missing {path.name})")
    return path


def _noise_image(width: int, height: int, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8), mode="RGB")


# -- preprocess parity ---------------------------------------------------------


@pytest.mark.skipif(not PAIRED_IMAGES, reason=NO_SHARED)
@pytest.mark.parametrize("path", PAIRED_IMAGES, ids=lambda p: p.name)
def test_preprocess_matches_torchvision_on_paired(path: Path) -> None:
    with Image.open(path) as opened:
        rgb = opened.convert("RGB")
    ours = preprocess(rgb)
    reference = REFERENCE_TRANSFORM(rgb)
    assert ours.dtype == torch.float32
    assert ours.shape == (3, 224, 224)
    assert (ours - reference).abs().max().item() <= 1e-6


@pytest.mark.parametrize(
    "size",
    [(1, 1000), (1000, 1), (225, 224), (224, 225), (224, 224), (3000, 10), (10, 3000), (1, 1)],
)
def test_preprocess_matches_torchvision_on_odd_sizes(size: tuple[int, int]) -> None:
    rgb = _noise_image(*size)
    ours = preprocess(rgb)
    reference = REFERENCE_TRANSFORM(rgb)
    assert ours.shape == (3, 224, 224)
    assert (ours - reference).abs().max().item() <= 1e-6


def test_preprocess_extreme_aspect_ratio_bounded() -> None:
    # A full resize of 1x100000 to 224x22400000 would need about 15 GB.
    start = time.perf_counter()
    pixels = preprocess(_noise_image(1, 100_000))
    assert pixels.shape == (3, 224, 224)
    assert torch.isfinite(pixels).all()
    assert time.perf_counter() - start < 5.0


def test_preprocess_crop_window_path_close_to_torchvision(monkeypatch: pytest.MonkeyPatch) -> None:
    # Force the crop-window resampling that very thin images use and compare it
    # with the full resize on an ordinary photo-sized image.
    rgb = _noise_image(640, 480)
    monkeypatch.setattr(image_module, "MAX_RESIZED_PIXELS", 0)
    ours = preprocess(rgb)
    reference = REFERENCE_TRANSFORM(rgb)
    step = 1 / 255 / min(CLIP_STD)  # one 8-bit level after normalisation
    assert (ours - reference).abs().mean().item() < step
    assert (ours - reference).abs().max().item() < 40 * step


def test_preprocess_rejects_non_rgb() -> None:
    with pytest.raises(ValueError, match="mode L"):
        preprocess(Image.new("L", (300, 300)))


# -- mode conversion -----------------------------------------------------------


def test_gray16_ramp_spans_full_range() -> None:
    path = _shared_file(CASES, "19_gray16_gradient_512x256.png")
    with Image.open(path) as opened:
        assert opened.mode.startswith("I;16")
        rgb, flags = to_rgb(opened)
    values = np.asarray(rgb)  # (256, 512, 3)
    assert flags == ["high_bit_depth"]
    assert values.min() == 0
    assert values.max() == 255
    row = values[0, :, 0].astype(int)
    assert (np.diff(row) >= 0).all()
    assert (values == 255).mean() < 0.05


@pytest.mark.parametrize("mode", ["I;16", "I;16B", "I;16L"])
def test_sixteen_bit_modes_scale_by_65535(mode: str) -> None:
    ramp = np.array([[0, 257, 32896, 65535]], dtype=np.uint16)
    gray = Image.new(mode, (4, 1))
    gray.putdata(ramp.ravel().tolist())
    rgb, _ = to_rgb(gray)
    assert np.asarray(rgb)[0, :, 0].tolist() == [0, 1, 128, 255]


def test_int32_mode_uses_value_range() -> None:
    sixteen_bit = Image.fromarray(np.array([[0, 65535]], dtype=np.int32), mode="I")
    eight_bit = Image.fromarray(np.array([[0, 200]], dtype=np.int32), mode="I")
    signed = Image.fromarray(np.array([[-1000, 0, 1000]], dtype=np.int32), mode="I")
    assert np.asarray(to_rgb(sixteen_bit)[0])[0, :, 0].tolist() == [0, 255]
    assert np.asarray(to_rgb(eight_bit)[0])[0, :, 0].tolist() == [0, 200]
    assert np.asarray(to_rgb(signed)[0])[0, :, 0].tolist() == [0, 128, 255]


def test_float_mode_scales_unit_range() -> None:
    unit = Image.fromarray(np.array([[0.0, 0.5, 1.0]], dtype=np.float32), mode="F")
    assert np.asarray(to_rgb(unit)[0])[0, :, 0].tolist() == [0, 128, 255]


def test_float_mode_with_nan_raises_non_finite() -> None:
    bad = Image.fromarray(np.array([[0.0, np.nan]], dtype=np.float32), mode="F")
    with pytest.raises(MediaError) as raised:
        to_rgb(bad)
    assert raised.value.reason == "non_finite"


@pytest.mark.parametrize("name", ["21_cmyk_320x240.jpg", "cmyk.jpg"])
def test_cmyk_matches_pillow_conversion(name: str) -> None:
    folder = CASES if name.startswith("21") else EDGE_IMAGES
    path = _shared_file(folder, name)
    with Image.open(path) as opened:
        assert opened.mode == "CMYK"
        expected = np.asarray(opened.convert("RGB"), dtype=int)
        rgb, _ = to_rgb(opened)
    assert np.abs(np.asarray(rgb, dtype=int) - expected).max() <= 1


def test_cmyk_red_text_is_red() -> None:
    # The edge file shows the word "RED" in red on a black background.
    path = _shared_file(EDGE_IMAGES, "cmyk.jpg")
    with Image.open(path) as opened:
        rgb = np.asarray(to_rgb(opened)[0], dtype=int)
    red, green, blue = rgb[rgb.sum(axis=2) > 150].mean(axis=0)
    assert red > 200
    assert green < red / 4
    assert blue < red / 4


@pytest.mark.parametrize(
    "name", ["png_palette_trns.png", "gray_alpha_la.png", "rgba_transparent_dice.png"]
)
def test_transparency_composited_onto_white(name: str) -> None:
    path = _shared_file(EDGE_IMAGES, name)
    with Image.open(path) as opened:
        rgba = np.asarray(opened.convert("RGBA"))
        rgb, flags = to_rgb(opened)
    values = np.asarray(rgb)
    transparent = rgba[..., 3] == 0
    opaque = rgba[..., 3] == 255
    assert flags == ["alpha_composited"]
    assert transparent.any()
    assert (values[transparent] == 255).all()
    assert (values[opaque] == rgba[opaque][:, :3]).all()


def test_palette_transparency_uses_rgba_path() -> None:
    palette = Image.new("P", (2, 1))
    palette.putpalette([0, 0, 0, 255, 0, 0] + [0, 0, 0] * 254)
    palette.putdata([0, 1])
    palette.info["transparency"] = 0
    rgb, flags = to_rgb(palette)
    assert np.asarray(rgb)[0].tolist() == [[255, 255, 255], [255, 0, 0]]
    assert flags == ["alpha_composited"]


def test_opaque_alpha_is_not_flagged() -> None:
    rgb, flags = to_rgb(Image.new("RGBA", (4, 4), (10, 20, 30, 255)))
    assert flags == []
    assert np.asarray(rgb)[0, 0].tolist() == [10, 20, 30]


@pytest.mark.parametrize(
    ("mode", "color", "expected"),
    [
        ("1", 1, (255, 255, 255)),
        ("L", 77, (77, 77, 77)),
        ("YCbCr", (76, 85, 255), (254, 0, 0)),
        ("HSV", (0, 255, 255), (255, 0, 0)),
        ("LAB", (255, 128, 128), (254, 255, 254)),
        ("La", (200, 255), (200, 200, 200)),
        ("PA", (0, 255), (0, 0, 0)),
    ],
)
def test_other_modes_convert_to_rgb(
    mode: str, color: int | tuple[int, ...], expected: tuple[int, int, int]
) -> None:
    rgb, _ = to_rgb(Image.new(mode, (3, 3), color))
    assert rgb.mode == "RGB"
    assert np.abs(np.asarray(rgb, dtype=int)[1, 1] - np.array(expected)).max() <= 1


# -- load_image on real files --------------------------------------------------


def test_exif_orientation_6_rotates_before_resize() -> None:
    path = _shared_file(CASES, "22_exif_orientation6_stored640x480.jpg")
    loaded = load_image(path)
    assert (loaded.width, loaded.height) == (480, 640)
    assert "rotated" in loaded.flags
    with Image.open(path) as opened:
        expected = preprocess(ImageOps.exif_transpose(opened).convert("RGB"))
    assert torch.equal(loaded.pixels, expected)


def test_exif_orientation_6_landscape_edge_file() -> None:
    loaded = load_image(_shared_file(EDGE_IMAGES, "exif_orientation_6_landscape.jpg"))
    assert (loaded.width, loaded.height) == (1800, 1200)
    assert "rotated" in loaded.flags


@pytest.mark.parametrize(
    "name", ["animated_tiny.gif", "animated_knitted_toy.webp", "apng_animated.png"]
)
def test_animated_uses_first_frame(name: str) -> None:
    path = _shared_file(EDGE_IMAGES, name)
    loaded = load_image(path)
    with Image.open(path) as opened:
        first, _ = to_rgb(opened)
    assert "animated" in loaded.flags
    assert torch.equal(loaded.pixels, preprocess(first))


def test_bomb_rejected_quickly() -> None:
    path = _shared_file(CASES, "23_bomb_error_13400x13400_1bit.png")
    start = time.perf_counter()
    with pytest.raises(MediaError) as raised:
        load_image(path)
    assert raised.value.reason == "too_many_pixels"
    assert time.perf_counter() - start < 1.0


def test_max_pixels_checked_before_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    path = PAIRED_IMAGES[0] if PAIRED_IMAGES else pytest.skip(NO_SHARED)

    def fail_load(self: ImageFile.ImageFile) -> None:
        raise AssertionError("pixel data was decoded")

    monkeypatch.setattr(ImageFile.ImageFile, "load", fail_load)
    with pytest.raises(MediaError) as raised:
        load_image(path, max_pixels=1000)
    assert raised.value.reason == "too_many_pixels"
    assert "exceeds the limit of 1000" in raised.value.detail


def test_global_pillow_settings_untouched() -> None:
    max_pixels = Image.MAX_IMAGE_PIXELS
    for name in ("15_truncated_baseline_640x480.jpg", "23_bomb_error_13400x13400_1bit.png"):
        with pytest.raises(MediaError):
            load_image(_shared_file(CASES, name))
    assert max_pixels == Image.MAX_IMAGE_PIXELS
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False


def test_non_utf8_file_name_decodes(tmp_path: Path) -> None:
    source = _shared_file(EDGE_IMAGES, "bmp_cat.bmp")
    path = tmp_path / os.fsdecode(b"chat_\xe9t\xe9.bmp")  # Latin-1 bytes, not valid UTF-8
    path.write_bytes(source.read_bytes())
    assert load_image(path).pixels.shape == (3, 224, 224)


def test_missing_file_is_vanished(tmp_path: Path) -> None:
    with pytest.raises(MediaError) as raised:
        load_image(tmp_path / "gone.jpg")
    assert raised.value.reason == "vanished"


def test_directory_is_unreadable(tmp_path: Path) -> None:
    with pytest.raises(MediaError) as raised:
        load_image(tmp_path)
    assert raised.value.reason == "unreadable"


# Expected outcome of every edge and case image: flags when it loads, or the
# MediaError reason and a fragment of its detail.
LOADS = {
    "19_gray16_gradient_512x256.png": ("high_bit_depth",),
    "21_cmyk_320x240.jpg": (),
    "22_exif_orientation6_stored640x480.jpg": ("rotated",),
    "animated_knitted_toy.webp": ("animated",),
    "animated_tiny.gif": ("animated",),
    "apng_animated.png": ("animated", "alpha_composited"),
    "bmp_cat.bmp": (),
    "cmyk.jpg": (),
    "exif_orientation_6_landscape.jpg": ("rotated",),
    "gif_still_cat_256_colours.gif": (),
    "gray_alpha_la.png": ("alpha_composited",),
    "grayscale_hopper.jpg": (),
    "large_4800x3600_progressive_noise.jpg": ("downscaled",),
    "png_16bit_rgb.png": (),
    "png_1x1_trns.png": ("alpha_composited",),
    "png_interlaced_palette_toucan.png": ("alpha_composited",),
    "png_palette_trns.png": ("alpha_composited",),
    "progressive_puppies_app13.jpg": (),
    "rgba_transparent_dice.png": ("alpha_composited",),
    "tiff_16bit_rgb.tiff": (),
    "webp_lossy_flower.webp": (),
}
REJECTS = {
    "15_truncated_baseline_640x480.jpg": ("truncated", "truncated"),
    "16_truncated_progressive_640x480.jpg": ("truncated", "truncated"),
    "18_html_named_jpg.jpg": ("undecodable", "not an image file: content is an HTML document"),
    "18_zero_bytes.jpg": ("undecodable", "0 bytes"),
    "23_bomb_error_13400x13400_1bit.png": ("too_many_pixels", "179560000"),
    "broken_80_bytes.png": ("undecodable", "PNG"),
    "decompression_bomb_65535x66601.gif": ("too_many_pixels", "4364696535"),
    "heic_still.heic": ("unsupported_format", "HEIF"),
    "jpeg_xl.jxl": ("unsupported_format", "JPEG XL"),
    "json_text_with_webp_extension.webp": ("undecodable", "not an image file: content is text"),
    "png_ztxt_decompression_bomb.png": ("undecodable", "Decompressed data too large"),
    "truncated.png": ("truncated", "truncated"),
    "truncated_progressive.jpg": ("truncated", "truncated"),
    "zero_bytes.jpg": ("undecodable", "0 bytes"),
}


def _locate(name: str) -> Path:
    return _shared_file(CASES if name[:2].isdigit() else EDGE_IMAGES, name)


@pytest.mark.parametrize(("name", "flags"), sorted(LOADS.items()))
def test_edge_image_loads(name: str, flags: tuple[str, ...]) -> None:
    loaded = load_image(_locate(name))
    assert loaded.pixels.shape == (3, 224, 224)
    assert loaded.pixels.dtype == torch.float32
    assert torch.isfinite(loaded.pixels).all()
    assert loaded.flags == flags


@pytest.mark.parametrize(("name", "expected"), sorted(REJECTS.items()))
def test_edge_image_rejected(name: str, expected: tuple[str, str]) -> None:
    reason, fragment = expected
    with pytest.raises(MediaError) as raised:
        load_image(_locate(name))
    assert raised.value.reason == reason
    assert fragment in raised.value.detail


def test_edge_table_covers_every_image_file() -> None:
    if not EDGE_IMAGES.is_dir() or not CASES.is_dir():
        pytest.skip(NO_SHARED)
    present = {p.name for p in EDGE_IMAGES.iterdir()}
    present |= {p.name for p in CASES.iterdir() if p.suffix in (".jpg", ".png")}
    assert present == set(LOADS) | set(REJECTS)


def _short_side(path: Path) -> int:
    with Image.open(path) as opened:
        return min(opened.size)


def _full_size_pixels(path: Path) -> torch.Tensor:
    with Image.open(path) as opened:
        rgb, _ = to_rgb(ImageOps.exif_transpose(opened), path)
    return preprocess(rgb)


@pytest.mark.parametrize(
    "path",
    [p for p in PAIRED_IMAGES if _short_side(p) >= 2 * image_module.REDUCED_MIN_SIDE]
    + [EDGE_IMAGES / "large_4800x3600_progressive_noise.jpg"],
    ids=lambda p: p.name,
)
def test_large_jpeg_reduced_decode_is_close_to_full(path: Path) -> None:
    loaded = load_image(path)
    assert loaded.flags == ("downscaled",)
    with Image.open(path) as opened:
        assert (loaded.width, loaded.height) == opened.size
    # Differences in 8-bit grey levels, after undoing the normalisation.
    levels = (loaded.pixels - _full_size_pixels(path)).abs() * 0.27 * 255
    assert float(levels.mean()) < 0.5
    assert float(levels.max()) < 20


def test_large_png_is_box_reduced(tmp_path: Path) -> None:
    path = tmp_path / "large.png"
    gradient = np.linspace(0, 255, 2000, dtype=np.float32)
    pixels = np.stack(
        [np.tile(gradient, (1500, 1)), np.tile(gradient[::-1], (1500, 1)),
         np.full((1500, 2000), 128, np.float32)], axis=-1,
    ).astype(np.uint8)  # fmt: skip
    Image.fromarray(pixels, "RGB").save(path)
    loaded = load_image(path)
    assert loaded.flags == ("downscaled",)
    assert (loaded.width, loaded.height) == (2000, 1500)
    levels = (loaded.pixels - _full_size_pixels(path)).abs() * 0.27 * 255
    assert float(levels.max()) < 2


def test_rotated_large_jpeg_reports_turned_full_size(tmp_path: Path) -> None:
    path = tmp_path / "turned.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6
    _noise_image(2400, 1600).save(path, exif=exif.tobytes())
    loaded = load_image(path)
    assert set(loaded.flags) == {"rotated", "downscaled"}
    assert (loaded.width, loaded.height) == (1600, 2400)


def test_image_at_threshold_is_decoded_whole(tmp_path: Path) -> None:
    path = tmp_path / "medium.jpg"
    side = 2 * image_module.REDUCED_MIN_SIDE - 1
    _noise_image(side + 200, side).save(path)
    loaded = load_image(path)
    assert "downscaled" not in loaded.flags
    torch.testing.assert_close(loaded.pixels, _full_size_pixels(path), atol=0, rtol=0)


def test_pillow_bomb_message_names_the_limits() -> None:
    with pytest.raises(MediaError) as raised:
        load_image(_shared_file(CASES, "23_bomb_error_13400x13400_1bit.png"), max_pixels=1000)
    assert raised.value.reason == "too_many_pixels"
    assert "The limit here is 1000 pixels" in raised.value.detail
    assert str(image_module.pillow_pixel_limit()) in raised.value.detail
