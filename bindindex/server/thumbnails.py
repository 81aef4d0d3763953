"""Image thumbnails, cached as JPEG files keyed by item id and content hash."""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path

from PIL import Image, ImageOps

from bindindex.errors import MediaError, NotFoundError
from bindindex.media.image import DEFAULT_MAX_PIXELS, to_rgb
from bindindex.server.views import missing_file_message
from bindindex.store.catalog import ItemRow

log = logging.getLogger(__name__)

# The decoders that indexing accepts; others (EPS runs Ghostscript) are never opened.
_FORMATS = ("JPEG", "PNG", "GIF", "BMP", "DIB", "WEBP", "TIFF", "ICO", "PPM", "JPEG2000")


class ThumbnailCache:
    """A folder of thumbnails, ``{item id}-{content hash}-{size}.jpg``.

    A re-indexed file with new content gets a new hash and so a new thumbnail;
    writing it deletes the item's older ones.
    """

    def __init__(self, folder: Path, *, size: int) -> None:
        self.folder = folder
        self.size = size

    def path_for(self, item: ItemRow) -> Path:
        content = (item.content_hash or "nohash")[:16]
        return self.folder / f"{item.id}-{content}-{self.size}.jpg"

    def get(self, item: ItemRow) -> Path:
        """Return the cached thumbnail of an image item, making it first if needed.

        Raises NotFoundError when the file is gone and MediaError when it no
        longer decodes. Runs Pillow, so call it off the event loop.
        """
        cached = self.path_for(item)
        if cached.is_file():
            return cached
        source = item.fs_path
        if not source.is_file():
            raise NotFoundError(missing_file_message(item))
        self.folder.mkdir(parents=True, exist_ok=True)
        image = _decode_small(source, self.size)
        # Written under a temporary name and renamed, so a concurrent request
        # never serves a half-written file.
        handle, temporary = tempfile.mkstemp(dir=self.folder, suffix=".part")
        try:
            with os.fdopen(handle, "wb") as file:
                image.save(file, format="JPEG", quality=85)
            os.replace(temporary, cached)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
        self._remove_stale(item, keep=cached)
        return cached

    def _remove_stale(self, item: ItemRow, *, keep: Path) -> None:
        for old in self.folder.glob(f"{item.id}-*.jpg"):
            if old != keep:
                old.unlink(missing_ok=True)


def _decode_small(path: Path, size: int) -> Image.Image:
    try:
        with Image.open(path, formats=_FORMATS) as opened:
            width, height = opened.size
            if width * height > DEFAULT_MAX_PIXELS:
                detail = f"{width}x{height} pixels exceeds the limit of {DEFAULT_MAX_PIXELS}"
                raise MediaError(path, "too_many_pixels", detail)
            # draft() lets the JPEG decoder scale down while decoding.
            opened.draft("RGB", (size, size))
            image = ImageOps.exif_transpose(opened)
            rgb, _ = to_rgb(image, path)
            rgb.thumbnail((size, size))
            return rgb
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise MediaError(path, "undecodable", f"failed to make a thumbnail: {exc}") from exc
