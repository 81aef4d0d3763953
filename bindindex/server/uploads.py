"""Query files uploaded to ``POST /search``: saved to a private folder and sniffed."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import BinaryIO, Literal

from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from bindindex.media.detect import Detected, sniff
from bindindex.server.errors import ApiError

UploadKind = Literal["audio", "image"]
# Form fields that carry the query file: "audio" and "image" also declare what
# the file must be; "file" accepts either.
UPLOAD_FIELDS: dict[str, UploadKind | None] = {"file": None, "audio": "audio", "image": "image"}
SUPPORTED_HINT = "send a WAV, FLAC, Ogg Vorbis, Ogg Opus or MP3 sound, or a JPEG, PNG, GIF, WebP, BMP or TIFF image"


async def save_upload(
    upload: UploadFile, declared: UploadKind | None, folder: Path
) -> tuple[UploadKind, Path]:
    """Copy ``upload`` into ``folder`` and return its sniffed modality and the copy's path.

    The file name sent by the client is used in messages only, never as a
    path. Raises ApiError 415 when the content is not audio or an image that
    bindindex can decode, or not the modality the form field declares.
    """
    target = folder / "query"
    await upload.seek(0)
    detected = await run_in_threadpool(_copy_and_sniff, upload.file, target)
    name = upload.filename or "upload"
    if detected.modality is None:
        raise ApiError(
            415,
            "unsupported_media_type",
            f"upload {name!r} is {detected.describe()}, not an audio or image file; {SUPPORTED_HINT}",
        )
    if not detected.supported:
        raise ApiError(
            415,
            "unsupported_media_type",
            f"upload {name!r} is {detected.describe()}, which bindindex cannot decode; {SUPPORTED_HINT}",
        )
    if declared is not None and detected.modality != declared:
        raise ApiError(
            415,
            "unsupported_media_type",
            f"upload {name!r} was sent as {declared} but contains {detected.describe()}; "
            f"send it as {detected.modality} or as file",
        )
    return detected.modality, target


def _copy_and_sniff(source: BinaryIO, target: Path) -> Detected:
    with target.open("wb") as file:
        shutil.copyfileobj(source, file)
    return sniff(target)
