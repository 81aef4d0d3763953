"""Download the public sample media that the demo indexes.

The manifest is a CSV with the columns concept, modality, url, sha256, bytes
and license. Files land in ``<dest>/<concept>/<images|audio>/<name>`` so that
the concept is the top folder, which ``cluster --labels top-folder`` reads.
"""

from __future__ import annotations

import csv
import hashlib
import logging
import os
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from urllib.parse import urlparse

from bindindex.errors import BindIndexError, UsageError

log = logging.getLogger(__name__)

TIMEOUT_S = 30


class NetworkError(BindIndexError):
    """A download failed because the network or the server could not be reached."""


@dataclass(frozen=True)
class Sample:
    concept: str
    modality: str
    url: str
    sha256: str
    size: int
    license: str

    def target(self, dest: Path) -> Path:
        folder = "images" if self.modality == "image" else "audio"
        return dest / self.concept / folder / PurePosixPath(urlparse(self.url).path).name


def read_manifest(path: Path) -> list[Sample]:
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            rows = list(csv.DictReader(handle))
    except FileNotFoundError as exc:
        raise UsageError(f"sample manifest {path} not found") from exc
    samples = []
    for number, row in enumerate(rows, start=2):
        try:
            samples.append(
                Sample(
                    concept=row["concept"],
                    modality=row["modality"],
                    url=row["url"],
                    sha256=row["sha256"].lower(),
                    size=int(row["bytes"]),
                    license=row.get("license") or "",
                )
            )
        except (KeyError, ValueError, TypeError) as exc:
            raise UsageError(f"{path}, line {number}: invalid manifest row ({exc})") from exc
    return samples


def _sha256(path: Path) -> str:
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def fetch_samples(manifest: Path, dest: Path) -> tuple[int, int]:
    """Download every sample that is missing or corrupt; return (downloaded, already present)."""
    samples = read_manifest(manifest)
    downloaded = present = 0
    for sample in samples:
        target = sample.target(dest)
        if (
            target.is_file()
            and target.stat().st_size == sample.size
            and _sha256(target) == sample.sha256
        ):
            present += 1
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(target.name + ".part")
        try:
            with (
                urllib.request.urlopen(sample.url, timeout=TIMEOUT_S) as response,
                open(partial, "wb") as out,
            ):
                while chunk := response.read(1 << 16):
                    out.write(chunk)
        except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
            partial.unlink(missing_ok=True)
            host = urlparse(sample.url).netloc
            reason = getattr(exc, "reason", exc)
            raise NetworkError(
                f"cannot download the demo samples: {host} is unreachable ({reason}). "
                "Run the demo on a local folder instead: bindindex demo --media FOLDER, where "
                "FOLDER has one sub-folder per concept (for example dog/ and cat/) holding its "
                "images and audio. The model weights need the network too: add --checkpoint FILE "
                "with a local imagebind_huge.pth, or --model imagebind-test for a run without "
                "weights"
            ) from exc
        digest = _sha256(partial)
        if digest != sample.sha256:
            partial.unlink(missing_ok=True)
            raise NetworkError(
                f"{sample.url} downloaded with SHA-256 {digest}, expected {sample.sha256}; "
                "the file changed on the server or the download was corrupted: run the demo again"
            )
        os.replace(partial, target)
        downloaded += 1
        log.info("downloaded %s to %s", sample.url, target)
    return downloaded, present
