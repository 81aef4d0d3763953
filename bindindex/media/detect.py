"""Identify media files by their leading bytes and by their file name extension.

``sniff`` never trusts the extension: a ``.wav`` that contains text or a JPEG
renamed to ``.png`` is reported as what its bytes are. The loaders use the result
to turn a decoder failure into a precise message, and the folder walker uses
``MEDIA_EXTENSIONS`` to tell files it should ignore from files that claim to be
media but are not.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Final, Literal

from bindindex.errors import MediaError

Modality = Literal["image", "audio"]

# Bytes read from the start of a file. Every signature below fits in this window,
# including the codec identification packet of the first Ogg page.
SNIFF_BYTES: Final = 64

# An ID3v2 tag can precede MP3 and, in files seen in the wild, FLAC data. Tags
# larger than this are treated as MP3 without looking behind them.
_MAX_ID3_SKIP: Final = 16 * 1024 * 1024

IMAGE_EXTENSIONS: Final[frozenset[str]] = frozenset(
    {
        ".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".apng", ".gif", ".bmp", ".dib",
        ".webp", ".tif", ".tiff", ".ico", ".ppm", ".pgm", ".pbm", ".pnm",
        ".heic", ".heif", ".avif", ".jxl", ".jp2", ".j2k",
    }
)  # fmt: skip

# .webm, .mka, .m4a and .aac are listed although libsndfile cannot read them, so
# that such files are reported as unsupported instead of being skipped silently.
AUDIO_EXTENSIONS: Final[frozenset[str]] = frozenset(
    {
        ".wav", ".wave", ".flac", ".ogg", ".oga", ".opus", ".spx", ".mp3",
        ".aif", ".aiff", ".aifc", ".au", ".snd", ".amr", ".m4a", ".aac",
        ".webm", ".weba", ".mka",
    }
)  # fmt: skip

MEDIA_EXTENSIONS: Final[frozenset[str]] = IMAGE_EXTENSIONS | AUDIO_EXTENSIONS


@dataclass(frozen=True, slots=True)
class Detected:
    """Result of sniffing the leading bytes of a file.

    ``modality`` is None for content that is not media (text, unknown binary data,
    an empty file). ``format`` names the format for messages, for example "JPEG",
    "Ogg Vorbis", "HEIF", "text" or "empty". It is None only for unrecognised
    binary content. ``supported`` is False for formats that Pillow or libsndfile
    as shipped cannot decode, such as HEIF, JPEG XL, AMR, WebM and MP4.
    """

    modality: Modality | None
    format: str | None
    supported: bool = True

    def describe(self) -> str:
        """Return a phrase for messages, such as "JPEG image data" or "text"."""
        if self.format is None:
            return "unrecognised binary data"
        if self.modality is None:
            return _TEXT_DESCRIPTIONS.get(self.format, self.format)
        return f"{self.format} {self.modality} data"


_TEXT_DESCRIPTIONS: Final = {
    "empty": "empty",
    "text": "text",
    "HTML": "an HTML document",
    "Git LFS pointer": "a Git LFS pointer, not the file itself (run `git lfs pull` to fetch it)",
}

EMPTY: Final = Detected(None, "empty")
# A file of 0 bytes gets the reason "undecodable", like any other file without
# media in it. The reason "empty" is kept for a valid header that declares no content.
EMPTY_FILE_DETAIL: Final = "the file is empty (0 bytes); there is nothing to decode"


def extension_modality(path: str | os.PathLike[str]) -> Modality | None:
    """Return the modality that the file name extension claims, ignoring case."""
    suffix = Path(path).suffix.lower()
    if suffix in IMAGE_EXTENSIONS:
        return "image"
    if suffix in AUDIO_EXTENSIONS:
        return "audio"
    return None


def sniff(path: str | os.PathLike[str]) -> Detected:
    """Identify the content of ``path`` from its first bytes.

    Raises OSError when the file cannot be opened or read.
    """
    with open(path, "rb") as file:
        head = file.read(SNIFF_BYTES)
        if head.startswith(b"ID3"):
            return sniff_after_id3(file, head)
    return sniff_bytes(head)


def sniff_bytes(head: bytes) -> Detected:
    """Identify content from its first bytes (``SNIFF_BYTES`` are enough)."""
    if not head:
        return EMPTY
    # A UTF-16 byte order mark also matches an MPEG Layer I frame header, and
    # such text files are far more common than Layer I audio.
    if head.startswith((b"\xff\xfe", b"\xfe\xff")):
        return Detected(None, "text")
    return _sniff_image(head) or _sniff_audio(head) or _sniff_text(head) or Detected(None, None)


def sniff_after_id3(file: BinaryIO, head: bytes) -> Detected:
    """Identify the data behind the ID3v2 tag at the start of ``file``, defaulting to MP3.

    ``head`` is the first ``SNIFF_BYTES`` of the file. Moves the file position.
    """
    mp3 = Detected("audio", "MP3")
    tag_size = _id3_tag_size(head)
    if tag_size is None or tag_size > _MAX_ID3_SKIP:
        return mp3
    file.seek(tag_size)
    behind = file.read(SNIFF_BYTES)
    detected = _sniff_audio(behind)
    # Several ID3 tags in a row or padding after the tag are still an MP3 file.
    if detected is None or detected.format == "MP3":
        return mp3
    return detected


def _id3_tag_size(head: bytes) -> int | None:
    """Return the total length of the ID3v2 tag at the start of ``head``."""
    if len(head) < 10:
        return None
    size_bytes = head[6:10]
    # The size is "synchsafe": 4 bytes of 7 bits each, so every byte is below 0x80.
    if any(b & 0x80 for b in size_bytes):
        return None
    size = 0
    for b in size_bytes:
        size = (size << 7) | b
    has_footer = bool(head[5] & 0x10)
    return 10 + size + (10 if has_footer else 0)


def _sniff_image(head: bytes) -> Detected | None:
    if head.startswith(b"\xff\xd8\xff"):
        return Detected("image", "JPEG")
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return Detected("image", "PNG")
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return Detected("image", "GIF")
    if head.startswith(b"RIFF") and head[8:12] == b"WEBP":
        return Detected("image", "WebP")
    if head[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        return Detected("image", "TIFF")
    if _is_bmp(head):
        return Detected("image", "BMP")
    if _is_ico(head):
        return Detected("image", "ICO")
    if len(head) >= 3 and head[0:1] == b"P" and head[1:2] in b"1234567" and head[2:3].isspace():
        return Detected("image", "PNM")
    if head.startswith(b"\x00\x00\x00\x0cjP  \r\n\x87\n") or head.startswith(b"\xff\x4f\xff\x51"):
        return Detected("image", "JPEG 2000")
    if head.startswith(b"\xff\x0a") or head.startswith(b"\x00\x00\x00\x0cJXL \r\n\x87\n"):
        return Detected("image", "JPEG XL", supported=False)
    if head[4:8] == b"ftyp":
        return _sniff_iso_media(head)
    return None


def _is_bmp(head: bytes) -> bool:
    # "BM" alone is too weak (text can start with it), so also require one of the
    # known DIB header sizes at offset 14.
    if not head.startswith(b"BM") or len(head) < 18:
        return False
    dib_header_size = int.from_bytes(head[14:18], "little")
    return dib_header_size in (12, 16, 40, 52, 56, 64, 108, 124)


def _is_ico(head: bytes) -> bool:
    # ICONDIR is reserved=0, type=1 (icon) or 2 (cursor), count>0, and the first
    # ICONDIRENTRY has a zero reserved byte at offset 9.
    if len(head) < 22 or head[:2] != b"\x00\x00" or head[2:4] not in (b"\x01\x00", b"\x02\x00"):
        return False
    count = int.from_bytes(head[4:6], "little")
    return count > 0 and head[9] == 0


def _sniff_iso_media(head: bytes) -> Detected:
    """Classify an ISO base media file (HEIF, AVIF, MP4, M4A, 3GP) by its brands."""
    box_size = int.from_bytes(head[0:4], "big")
    major_brand = head[8:12]
    # Compatible brands follow the major brand and the 4-byte minor version.
    brands_end = min(max(box_size, 16), len(head))
    compatible = {head[i : i + 4] for i in range(16, brands_end - 3, 4)}
    brands = {major_brand} | compatible

    if brands & {b"avif", b"avis"}:
        return Detected("image", "AVIF", supported=_pillow_has_avif())
    heif_brands = {b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"hevm", b"hevs"}
    if brands & heif_brands or major_brand in (b"mif1", b"msf1"):
        return Detected("image", "HEIF", supported=False)
    if major_brand in (b"M4A ", b"M4B ", b"M4P "):
        return Detected("audio", "M4A", supported=False)
    if major_brand.startswith((b"3gp", b"3g2")):
        return Detected("audio", "3GP", supported=False)
    return Detected("audio", "MP4", supported=False)


def _pillow_has_avif() -> bool:
    from PIL import features

    return bool(features.check_module("avif"))


def _sniff_audio(head: bytes) -> Detected | None:
    if head[:4] in (b"RIFF", b"RIFX") and head[8:12] == b"WAVE":
        return Detected("audio", "WAV")
    if head[:4] in (b"RF64", b"BW64") and head[8:12] == b"WAVE":
        return Detected("audio", "RF64")
    if head.startswith(b"fLaC"):
        return Detected("audio", "FLAC")
    if head.startswith(b"OggS"):
        return _sniff_ogg(head)
    if head.startswith(b"FORM") and head[8:12] in (b"AIFF", b"AIFC"):
        return Detected("audio", "AIFF" if head[8:12] == b"AIFF" else "AIFF-C")
    if head.startswith(b".snd"):
        return Detected("audio", "AU")
    if head.startswith(b"#!AMR"):
        return Detected("audio", "AMR", supported=False)
    if head.startswith(b"\x1a\x45\xdf\xa3"):
        # The EBML header names the DocType within its first few dozen bytes.
        name = "WebM" if b"webm" in head else "Matroska"
        return Detected("audio", name, supported=False)
    if head.startswith(b"ID3"):
        return Detected("audio", "MP3")
    return _sniff_mpeg_frame(head)


def _sniff_ogg(head: bytes) -> Detected:
    """Name the codec of an Ogg stream from the first packet of its first page."""
    if len(head) < 27:
        return Detected("audio", "Ogg")
    segment_count = head[26]
    packet = head[27 + segment_count :]
    if packet.startswith(b"\x01vorbis"):
        return Detected("audio", "Ogg Vorbis")
    if packet.startswith(b"OpusHead"):
        return Detected("audio", "Ogg Opus")
    if packet.startswith(b"\x7fFLAC"):
        return Detected("audio", "Ogg FLAC")
    if packet.startswith(b"Speex   "):
        return Detected("audio", "Ogg Speex", supported=False)
    if packet.startswith(b"\x80theora"):
        return Detected("audio", "Ogg Theora", supported=False)
    return Detected("audio", "Ogg")


def _sniff_mpeg_frame(head: bytes) -> Detected | None:
    """Recognise an MPEG audio frame header or an ADTS AAC header without an ID3 tag."""
    if len(head) < 4 or head[0] != 0xFF or (head[1] & 0xE0) != 0xE0:
        return None
    layer = (head[1] >> 1) & 0x03
    if layer == 0:
        # Layer bits 00 under a 12-bit sync word are ADTS, the raw AAC framing.
        if (head[1] & 0xF0) == 0xF0:
            return Detected("audio", "AAC (ADTS)", supported=False)
        return None
    version = (head[1] >> 3) & 0x03
    bitrate_index = head[2] >> 4
    sample_rate_index = (head[2] >> 2) & 0x03
    if version == 1 or bitrate_index == 0x0F or sample_rate_index == 0x03:
        return None
    return Detected("audio", "MP3" if layer == 1 else "MPEG audio")


def _sniff_text(head: bytes) -> Detected | None:
    """Recognise text content: plain text, HTML or a Git LFS pointer."""
    if head.startswith(b"\xef\xbb\xbf"):
        return Detected(None, "text")
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as error:
        # A multi-byte character may be cut at the end of the window.
        if error.start < len(head) - 3:
            return None
        text = head[: error.start].decode("utf-8")
    if not text or any(not (ch.isprintable() or ch in "\t\n\r\f\v") for ch in text):
        return None
    lowered = text.lstrip().lower()
    if lowered.startswith("version https://git-lfs"):
        return Detected(None, "Git LFS pointer")
    if lowered.startswith(("<!doctype html", "<html", "<head", "<body")):
        return Detected(None, "HTML")
    return Detected(None, "text")


def open_with_head(path: str | os.PathLike[str]) -> tuple[BinaryIO, bytes]:
    """Open ``path`` for decoding and read its first SNIFF_BYTES; the caller closes the file.

    Raises MediaError with reason "vanished", "unreadable" or "undecodable" (for
    a file of 0 bytes, which no decoder can read).
    """
    try:
        file = open(path, "rb")  # noqa: SIM115 - returned open to the caller
    except FileNotFoundError as error:
        raise MediaError(path, "vanished", "the file no longer exists") from error
    except OSError as error:
        raise MediaError(path, "unreadable", f"failed to open the file: {error}") from error
    try:
        head = file.read(SNIFF_BYTES)
    except OSError as error:
        file.close()
        raise MediaError(path, "unreadable", f"failed to read the file: {error}") from error
    if not head:
        file.close()
        raise MediaError(path, "undecodable", EMPTY_FILE_DETAIL)
    return file, head
