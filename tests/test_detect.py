"""Tests of content sniffing by magic bytes and of the media extension lists."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from bindindex.media.detect import (
    AUDIO_EXTENSIONS,
    IMAGE_EXTENSIONS,
    MEDIA_EXTENSIONS,
    Detected,
    extension_modality,
    sniff,
    sniff_bytes,
)

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
EDGE = SHARED / "data" / "edge"
CASES = SHARED / "cases"
NO_SHARED = f"shared media corpus not found at {SHARED}"


def _riff(form: bytes, first_chunk: bytes = b"fmt ") -> bytes:
    return b"RIFF" + struct.pack("<I", 1000) + form + first_chunk + bytes(40)


def _ogg(packet: bytes) -> bytes:
    # 27-byte page header with one segment, then the first packet.
    return b"OggS" + bytes(22) + b"\x01" + b"\x1e" + packet + bytes(20)


def _ftyp(major: bytes, *compatible: bytes) -> bytes:
    brands = major + b"\x00\x00\x00\x00" + b"".join(compatible)
    return struct.pack(">I", 8 + len(brands)) + b"ftyp" + brands + bytes(16)


def _wave_extensible() -> bytes:
    fmt = struct.pack("<HHIIHH", 0xFFFE, 2, 48000, 288000, 6, 24)
    return b"RIFF" + struct.pack("<I", 1000) + b"WAVEfmt " + struct.pack("<I", 40) + fmt + bytes(20)


SIGNATURES = [
    ("jpeg", b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + bytes(20), "image", "JPEG", True),
    ("png", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(20), "image", "PNG", True),
    ("gif87", b"GIF87a" + bytes(20), "image", "GIF", True),
    ("gif89", b"GIF89a" + bytes(20), "image", "GIF", True),
    ("bmp", b"BM" + bytes(12) + struct.pack("<I", 40) + bytes(20), "image", "BMP", True),
    ("webp", _riff(b"WEBP", b"VP8 "), "image", "WebP", True),
    ("tiff_le", b"II*\x00" + bytes(20), "image", "TIFF", True),
    ("tiff_be", b"MM\x00*" + bytes(20), "image", "TIFF", True),
    (
        "ico",
        b"\x00\x00\x01\x00\x01\x00\x10\x10\x00\x00\x01\x00\x20\x00" + bytes(20),
        "image",
        "ICO",
        True,
    ),
    ("ppm", b"P6\n640 480\n255\n" + bytes(20), "image", "PNM", True),
    ("pgm", b"P5 16 16 255 " + bytes(20), "image", "PNM", True),
    ("jpeg2000", b"\x00\x00\x00\x0cjP  \r\n\x87\n" + bytes(20), "image", "JPEG 2000", True),
    ("heic", _ftyp(b"heic", b"mif1", b"heic"), "image", "HEIF", False),
    ("heif_mif1", _ftyp(b"mif1", b"miaf"), "image", "HEIF", False),
    ("jxl_codestream", b"\xff\x0a" + bytes(20), "image", "JPEG XL", False),
    ("jxl_container", b"\x00\x00\x00\x0cJXL \r\n\x87\n" + bytes(20), "image", "JPEG XL", False),
    ("wav", _riff(b"WAVE"), "audio", "WAV", True),
    ("wav_extensible", _wave_extensible(), "audio", "WAV", True),
    ("rf64", b"RF64" + b"\xff\xff\xff\xff" + b"WAVEds64" + bytes(20), "audio", "RF64", True),
    ("flac", b"fLaC\x00\x00\x00\x22" + bytes(20), "audio", "FLAC", True),
    ("ogg_vorbis", _ogg(b"\x01vorbis"), "audio", "Ogg Vorbis", True),
    ("ogg_opus", _ogg(b"OpusHead"), "audio", "Ogg Opus", True),
    ("ogg_flac", _ogg(b"\x7fFLAC"), "audio", "Ogg FLAC", True),
    ("ogg_speex", _ogg(b"Speex   "), "audio", "Ogg Speex", False),
    ("mp3_id3", b"ID3\x04\x00\x00\x00\x00\x00\x10" + bytes(20), "audio", "MP3", True),
    ("mp3_frame", b"\xff\xfb\x90\x64" + bytes(20), "audio", "MP3", True),
    ("aiff", b"FORM\x00\x00\x10\x00AIFFCOMM" + bytes(20), "audio", "AIFF", True),
    ("aifc", b"FORM\x00\x00\x10\x00AIFCFVER" + bytes(20), "audio", "AIFF-C", True),
    ("au", b".snd\x00\x00\x00\x18" + bytes(20), "audio", "AU", True),
    ("amr", b"#!AMR\n" + bytes(20), "audio", "AMR", False),
    ("amr_wb", b"#!AMR-WB\n" + bytes(20), "audio", "AMR", False),
    (
        "webm",
        b"\x1a\x45\xdf\xa3\x9f\x42\x86\x81\x01\x42\x82\x84webm" + bytes(20),
        "audio",
        "WebM",
        False,
    ),
    (
        "matroska",
        b"\x1a\x45\xdf\xa3\xa3\x42\x82\x88matroska" + bytes(20),
        "audio",
        "Matroska",
        False,
    ),
    ("m4a", _ftyp(b"M4A ", b"M4A ", b"mp42", b"isom"), "audio", "M4A", False),
    ("mp4", _ftyp(b"isom", b"iso2", b"mp41"), "audio", "MP4", False),
    ("adts_aac", b"\xff\xf1\x50\x80\x2e\x7f\xfc" + bytes(20), "audio", "AAC (ADTS)", False),
]


@pytest.mark.parametrize(
    ("head", "modality", "name", "supported"),
    [
        pytest.param(head, modality, name, supported, id=key)
        for key, head, modality, name, supported in SIGNATURES
    ],
)
def test_signature_detected(head: bytes, modality: str, name: str, supported: bool) -> None:
    detected = sniff_bytes(head)
    assert detected.modality == modality
    assert detected.format == name
    assert detected.supported is supported


def test_avif_support_follows_pillow() -> None:
    from PIL import features

    detected = sniff_bytes(_ftyp(b"avif", b"avif", b"mif1", b"miaf"))
    assert (detected.modality, detected.format) == ("image", "AVIF")
    assert detected.supported is bool(features.check_module("avif"))


@pytest.mark.parametrize(
    ("head", "name"),
    [
        (b"this is a text note, not audio\n", "text"),
        (b"<!DOCTYPE html><html><body>404</body></html>", "HTML"),
        (b"  <html lang='en'>", "HTML"),
        (b"version https://git-lfs.github.com/spec/v1\noid sha256:abc", "Git LFS pointer"),
        (b'{"WEBP": {}}', "text"),
        (b"BMW is a car brand", "text"),
        ("caf\u00e9 na\u00efve \u65e5\u672c".encode(), "text"),
        (b"\xff\xfe" + "a UTF-16 note".encode("utf-16-le"), "text"),
        ("UTF-8 with a byte order mark".encode("utf-8-sig"), "text"),
    ],
)
def test_text_is_not_media(head: bytes, name: str) -> None:
    detected = sniff_bytes(head)
    assert detected.modality is None
    assert detected.format == name


def test_text_cut_inside_multibyte_character() -> None:
    head = ("a" * 62 + "\u00e9").encode()[:63]
    assert sniff_bytes(head).format == "text"


def test_binary_garbage_is_unknown() -> None:
    detected = sniff_bytes(bytes(range(0, 256, 7)))
    assert detected == Detected(None, None)
    assert detected.describe() == "unrecognised binary data"


def test_empty_content() -> None:
    assert sniff_bytes(b"").format == "empty"


def test_describe_messages() -> None:
    assert sniff_bytes(b"\xff\xd8\xff\xe0").describe() == "JPEG image data"
    assert sniff_bytes(b"fLaC\x00\x00\x00\x22").describe() == "FLAC audio data"
    assert sniff_bytes(b"<html>").describe() == "an HTML document"
    assert "git lfs pull" in sniff_bytes(b"version https://git-lfs.github.com/spec/v1").describe()


def test_id3_tag_followed_by_flac(tmp_path: Path) -> None:
    tag_body = bytes(300)
    size = bytes([0, 0, len(tag_body) >> 7, len(tag_body) & 0x7F])
    path = tmp_path / "tagged.flac"
    path.write_bytes(b"ID3\x03\x00\x00" + size + tag_body + b"fLaC\x00\x00\x00\x22" + bytes(40))
    assert sniff(path) == Detected("audio", "FLAC")


def test_id3_tag_followed_by_mpeg_frames(tmp_path: Path) -> None:
    path = tmp_path / "song.mp3"
    path.write_bytes(
        b"ID3\x04\x00\x00\x00\x00\x00\x0a" + bytes(10) + b"\xff\xfb\x90\x64" + bytes(100)
    )
    assert sniff(path) == Detected("audio", "MP3")


def test_sniff_missing_file_raises(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        sniff(tmp_path / "missing.wav")


# What every shared edge and case file sniffs as.
SHARED_FILES = {
    "edge/image/animated_knitted_toy.webp": ("image", "WebP"),
    "edge/image/animated_tiny.gif": ("image", "GIF"),
    "edge/image/apng_animated.png": ("image", "PNG"),
    "edge/image/bmp_cat.bmp": ("image", "BMP"),
    "edge/image/broken_80_bytes.png": ("image", "PNG"),
    "edge/image/cmyk.jpg": ("image", "JPEG"),
    "edge/image/decompression_bomb_65535x66601.gif": ("image", "GIF"),
    "edge/image/heic_still.heic": ("image", "HEIF"),
    "edge/image/jpeg_xl.jxl": ("image", "JPEG XL"),
    "edge/image/json_text_with_webp_extension.webp": (None, "text"),
    "edge/image/tiff_16bit_rgb.tiff": ("image", "TIFF"),
    "edge/image/zero_bytes.jpg": (None, "empty"),
    "edge/audio/aac_adts_raw.aac": ("audio", "AAC (ADTS)"),
    "edge/audio/aac_in_3gp_container.m4a": ("audio", "3GP"),
    "edge/audio/aiff_c_alaw_8k.aif": ("audio", "AIFF-C"),
    "edge/audio/flac_with_id3v2_tag.flac": ("audio", "FLAC"),
    "edge/audio/git_lfs_pointer_not_audio.wav": (None, "Git LFS pointer"),
    "edge/audio/mp3_mono_64k_id3v24.mp3": ("audio", "MP3"),
    "edge/audio/ogg_container_flac_codec.ogg": ("audio", "Ogg FLAC"),
    "edge/audio/opus_48k_mono.opus": ("audio", "Ogg Opus"),
    "edge/audio/rf64_pcm32.wav": ("audio", "RF64"),
    "edge/audio/speex.spx": ("audio", "Ogg Speex"),
    "edge/audio/webm_opus_audio.webm": ("audio", "WebM"),
    "edge/audio/wavex_float64_stereo_48k.wav": ("audio", "WAV"),
    "cases/08_wavex_pcm24_stereo_48k_2s.wav": ("audio", "WAV"),
    "cases/10_mp3_stereo_44k1_3s.mp3": ("audio", "MP3"),
    "cases/11_text_named_wav.wav": (None, "text"),
    "cases/11_zero_bytes.wav": (None, "empty"),
    "cases/18_html_named_jpg.jpg": (None, "HTML"),
    "cases/21_cmyk_320x240.jpg": ("image", "JPEG"),
}


@pytest.mark.parametrize(("relative", "expected"), sorted(SHARED_FILES.items()))
def test_shared_file_sniffed(relative: str, expected: tuple[str | None, str]) -> None:
    folder, _, name = relative.rpartition("/")
    path = (SHARED / "data" / relative) if folder.startswith("edge") else (SHARED / relative)
    if not path.is_file():
        pytest.skip(f"{NO_SHARED} (missing {name})")
    detected = sniff(path)
    assert (detected.modality, detected.format) == expected


@pytest.mark.parametrize(
    ("name", "modality"),
    [
        ("photo.JPG", "image"),
        ("photo.jpeg", "image"),
        ("scan.TiFf", "image"),
        ("phone.HEIC", "image"),
        ("song.MP3", "audio"),
        ("take.Wav", "audio"),
        ("voice.opus", "audio"),
        ("clip.webm", "audio"),
        ("notes.txt", None),
        ("archive.tar.gz", None),
        ("README", None),
        (".wav", None),
    ],
)
def test_extension_modality(name: str, modality: str | None) -> None:
    assert extension_modality(name) == modality


def test_extension_sets() -> None:
    assert MEDIA_EXTENSIONS == IMAGE_EXTENSIONS | AUDIO_EXTENSIONS
    assert not IMAGE_EXTENSIONS & AUDIO_EXTENSIONS
    assert all(ext.startswith(".") and ext == ext.lower() for ext in MEDIA_EXTENSIONS)
