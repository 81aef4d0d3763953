"""Checkpoint cache, download and loading of ImageBind weights.

Environment variables:

- ``BINDINDEX_CACHE_DIR``: cache root. Checkpoints go in ``<root>/checkpoints``.
  The default root is ``platformdirs.user_cache_dir("bindindex")``.
- ``BINDINDEX_CHECKPOINT``: checkpoint file to use in place of the cache. An explicit
  ``checkpoint`` argument takes precedence.
- ``BINDINDEX_CHECKPOINT_URL``: download URL in place of the registry's.
- ``BINDINDEX_CHECKPOINT_SHA256``: expected SHA-256 of the downloaded or cached file.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import json
import logging
import os
import pickle
import re
import sys
import urllib.error
import urllib.request
import zipfile
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path

import platformdirs
import torch
from torch import Tensor
from tqdm import tqdm

from bindindex.errors import ModelError, UsageError, WeightsError
from bindindex.model.config import MODALITIES, ModelSpec, get_spec
from bindindex.model.imagebind import ImageBind, expected_shapes, init_random_weights

logger = logging.getLogger(__name__)

CACHE_DIR_ENV = "BINDINDEX_CACHE_DIR"
CHECKPOINT_ENV = "BINDINDEX_CHECKPOINT"
CHECKPOINT_URL_ENV = "BINDINDEX_CHECKPOINT_URL"
CHECKPOINT_SHA256_ENV = "BINDINDEX_CHECKPOINT_SHA256"

PRECISIONS: dict[str, torch.dtype] = {"fp32": torch.float32, "bf16": torch.bfloat16}

# Socket timeout in seconds for connecting and for each read of the download.
DOWNLOAD_TIMEOUT_S = 60.0
# A download is retried, resuming from the partial file, only after an attempt that
# received data. A failure before the first byte (no network, DNS, 404) is raised at once.
MAX_DOWNLOAD_ATTEMPTS = 5
DOWNLOAD_CHUNK_BYTES = 1 << 20
# Bytes read from each of the start, middle and end of a file by checkpoint_fingerprint.
FINGERPRINT_SAMPLE_BYTES = 1 << 20

# Prefixes of the state-dict keys that belong to one modality's tower.
_TOWER_PARTS = (
    "modality_preprocessors",
    "modality_trunks",
    "modality_heads",
    "modality_postprocessors",
)
# Number of offending keys that an error message lists per category.
_KEYS_SHOWN = 5
# Bytes of checkpoint tensors converted per pass over a memory-mapped file. File pages
# that were read stay in the resident set until the whole mapping is released. One pass
# over a 2.5 GB fp32 tower would keep all of it resident next to its bf16 copy.
# Each pass unpickles the checkpoint's index again (0.15 s for imagebind_huge), so
# smaller passes trade load time for memory.
CONVERT_CHUNK_BYTES = 512 << 20


# ---------------------------------------------------------------------------
# Cache location and checkpoint resolution
# ---------------------------------------------------------------------------


def cache_root() -> Path:
    """Return the cache root: ``$BINDINDEX_CACHE_DIR`` or the platform's user cache dir."""
    override = os.environ.get(CACHE_DIR_ENV)
    if override:
        return Path(override).expanduser()
    return Path(platformdirs.user_cache_dir("bindindex"))


def checkpoint_dir() -> Path:
    """Return the directory that contains downloaded checkpoints."""
    return cache_root() / "checkpoints"


def sidecar_path(checkpoint: Path) -> Path:
    """Return the path of the JSON file with the URL, size and SHA-256 of a download."""
    return checkpoint.with_name(checkpoint.name + ".json")


def resolve_checkpoint(
    model_name: str, checkpoint: Path | str | None = None, *, download: bool = True
) -> Path:
    """Return the checkpoint file of ``model_name``, downloading it if needed.

    The order is: the ``checkpoint`` argument, then ``$BINDINDEX_CHECKPOINT``, then the
    cached download, then a new download (only if ``download`` is true). A cached file
    whose size or pinned hash disagrees with its sidecar is deleted and downloaded again.

    Raises:
        WeightsError: the file is missing, the download failed or was disabled, or the
            downloaded file does not fit the architecture. The message explains how to
            install the file by hand.
    """
    spec = get_spec(model_name)

    if checkpoint is None and os.environ.get(CHECKPOINT_ENV):
        checkpoint = os.environ[CHECKPOINT_ENV]
        logger.debug("using checkpoint from $%s: %s", CHECKPOINT_ENV, checkpoint)
    if checkpoint is not None:
        path = Path(checkpoint).expanduser()
        if not path.is_file():
            raise WeightsError(f"checkpoint file not found: {path}")
        return path

    if spec.checkpoint_filename is None:
        raise WeightsError(
            f"model {spec.name!r} has no checkpoint file; it is built from seeded random weights"
        )
    destination = checkpoint_dir() / spec.checkpoint_filename
    url = os.environ.get(CHECKPOINT_URL_ENV) or spec.checkpoint_url
    pinned_sha256 = _pinned_sha256()

    if destination.is_file() and _cached_file_is_valid(destination, pinned_sha256):
        return destination
    if not download:
        raise WeightsError(
            f"the {spec.name} checkpoint is not in the cache and downloading is disabled.\n"
            + _manual_download_help(url, destination)
        )
    if url is None:
        raise WeightsError(
            f"model {spec.name!r} has no download URL; set ${CHECKPOINT_URL_ENV}.\n"
            + _manual_download_help(url, destination)
        )

    destination.parent.mkdir(parents=True, exist_ok=True)
    with _download_lock(destination):
        # Another process may have completed the download while this one waited.
        if destination.is_file() and _cached_file_is_valid(destination, pinned_sha256):
            return destination
        _download_checkpoint(spec, url, destination, pinned_sha256)
    return destination


def _pinned_sha256() -> str | None:
    value = os.environ.get(CHECKPOINT_SHA256_ENV, "").strip().lower()
    if not value:
        return None
    if not re.fullmatch(r"[0-9a-f]{64}", value):
        raise UsageError(f"${CHECKPOINT_SHA256_ENV} must be 64 hexadecimal digits, got {value!r}")
    return value


def _manual_download_help(url: str | None, destination: Path) -> str:
    source = url or "the model's published URL"
    return (
        f"To install it by hand, download {source} and either save it as {destination}, "
        f"or pass its path with --checkpoint FILE or the {CHECKPOINT_ENV} environment "
        f"variable. For an offline demo with meaningless random weights, "
        f"use --model imagebind-test."
    )


def _cached_file_is_valid(path: Path, pinned_sha256: str | None) -> bool:
    """Check a cached checkpoint against its sidecar and delete both if they disagree."""
    sidecar = _read_sidecar(path)
    size = path.stat().st_size
    problem: str | None = None

    if sidecar is not None:
        if sidecar.get("size") != size:
            problem = f"size {size} differs from the recorded {sidecar.get('size')}"
        elif pinned_sha256 is not None and sidecar.get("sha256") != pinned_sha256:
            problem = f"recorded SHA-256 {sidecar.get('sha256')} differs from the pinned one"
    elif pinned_sha256 is not None:
        # A file placed by hand has no sidecar, so hash it once and record the result.
        digest = _sha256_of_file(path)
        if digest != pinned_sha256:
            problem = f"SHA-256 {digest} differs from the pinned one"
        else:
            _write_sidecar(path, url=None, size=size, sha256=digest)

    if problem is None:
        return True
    logger.warning("cached checkpoint %s is corrupt (%s); deleting it", path, problem)
    path.unlink(missing_ok=True)
    sidecar_path(path).unlink(missing_ok=True)
    return False


def _read_sidecar(path: Path) -> dict[str, object] | None:
    sidecar = sidecar_path(path)
    if not sidecar.is_file():
        return None
    try:
        data = json.loads(sidecar.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        logger.warning("ignoring unreadable checkpoint sidecar %s: %s", sidecar, exc)
        return None
    if not isinstance(data, dict):
        logger.warning("ignoring checkpoint sidecar %s: not a JSON object", sidecar)
        return None
    return data


def _write_sidecar(path: Path, *, url: str | None, size: int, sha256: str) -> None:
    sidecar = sidecar_path(path)
    temporary = sidecar.with_name(sidecar.name + ".tmp")
    payload = {"url": url, "size": size, "sha256": sha256}
    temporary.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    os.replace(temporary, sidecar)


def _sha256_of_file(path: Path) -> str:
    hasher = hashlib.sha256()
    _hash_file_into(hasher, path)
    return hasher.hexdigest()


def _hash_file_into(hasher: hashlib._Hash, path: Path) -> None:
    with path.open("rb") as handle:
        while chunk := handle.read(DOWNLOAD_CHUNK_BYTES):
            hasher.update(chunk)


@contextlib.contextmanager
def _download_lock(destination: Path) -> Iterator[None]:
    """Hold an exclusive lock so that two processes do not append to the same .part file."""
    try:
        import fcntl
    except ImportError:
        # NOTE: without fcntl (Windows) concurrent downloads into one cache are not serialised.
        yield
        return
    lock_path = destination.with_name(destination.name + ".lock")
    with lock_path.open("a") as lock_file:
        fcntl.flock(lock_file, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock_file, fcntl.LOCK_UN)


# ---------------------------------------------------------------------------
# Download
# ---------------------------------------------------------------------------


def _download_checkpoint(
    spec: ModelSpec, url: str, destination: Path, pinned_sha256: str | None
) -> None:
    """Download ``url`` into ``<destination>.part``, verify it and move it into place."""
    part = destination.with_name(destination.name + ".part")
    logger.info("downloading the %s checkpoint from %s to %s", spec.name, url, destination)

    attempt = 0
    while True:
        attempt += 1
        transfer = _Transfer()
        try:
            size, digest = _fetch_to_part(url, part, transfer)
            break
        except (OSError, http.client.HTTPException, _IncompleteDownload) as exc:
            if transfer.received > 0 and attempt < MAX_DOWNLOAD_ATTEMPTS:
                logger.warning(
                    "download of %s interrupted after %d bytes (%s); resuming, attempt %d of %d",
                    url,
                    transfer.received,
                    exc,
                    attempt + 1,
                    MAX_DOWNLOAD_ATTEMPTS,
                )
                continue
            raise WeightsError(
                f"failed to download the {spec.name} checkpoint from {url}: {exc}.\n"
                + _manual_download_help(url, destination)
            ) from exc

    if pinned_sha256 is not None and digest != pinned_sha256:
        part.unlink(missing_ok=True)
        raise WeightsError(
            f"the file downloaded from {url} has SHA-256 {digest}, but "
            f"${CHECKPOINT_SHA256_ENV} pins {pinned_sha256}; the downloaded file was deleted"
        )

    try:
        _check_downloaded_structure(spec, part)
    except WeightsError as exc:
        part.unlink(missing_ok=True)
        raise WeightsError(
            f"the file downloaded from {url} is not a {spec.name} checkpoint and was deleted: {exc}"
        ) from exc

    _write_sidecar(destination, url=url, size=size, sha256=digest)
    os.replace(part, destination)
    logger.info("saved the %s checkpoint to %s (%d bytes)", spec.name, destination, size)


class _IncompleteDownload(Exception):
    """The server closed the response before sending the announced number of bytes."""


class _Transfer:
    """Byte count of one download attempt, kept when the attempt raises."""

    def __init__(self) -> None:
        self.received = 0


def _fetch_to_part(url: str, part: Path, transfer: _Transfer) -> tuple[int, str]:
    """Download ``url`` into ``part``, resuming from its current size, and return size and hash.

    The SHA-256 covers the whole file, so the bytes already in ``part`` are hashed first.
    A server that ignores the Range header responds with 200, and the file is then restarted.
    """
    offset = part.stat().st_size if part.exists() else 0
    headers = {"User-Agent": "bindindex"}
    if offset > 0:
        headers["Range"] = f"bytes={offset}-"
    request = urllib.request.Request(url, headers=headers)

    try:
        response = urllib.request.urlopen(request, timeout=DOWNLOAD_TIMEOUT_S)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and offset > 0:
            # The partial file is not a prefix that the server can continue.
            logger.warning("server rejected resuming at byte %d; restarting the download", offset)
            part.unlink()
            return _fetch_to_part(url, part, transfer)
        raise

    with response:
        total: int | None
        if offset > 0 and response.status == 206:
            start, total = _parse_content_range(response.headers.get("Content-Range"))
            if start != offset:
                raise _IncompleteDownload(f"server resumed at byte {start} instead of {offset}")
            mode = "ab"
            hasher = hashlib.sha256()
            _hash_file_into(hasher, part)
        else:
            if offset > 0:
                logger.info("server ignored the Range header; restarting the download")
            offset = 0
            length = response.headers.get("Content-Length")
            total = int(length) if length is not None else None
            mode = "wb"
            hasher = hashlib.sha256()

        with (
            part.open(mode) as handle,
            tqdm(
                total=total,
                initial=offset,
                unit="B",
                unit_scale=True,
                unit_divisor=1024,
                desc=part.name.removesuffix(".part"),
                file=sys.stderr,
            ) as progress,
        ):
            while chunk := response.read(DOWNLOAD_CHUNK_BYTES):
                handle.write(chunk)
                hasher.update(chunk)
                progress.update(len(chunk))
                transfer.received += len(chunk)

    size = part.stat().st_size
    if total is not None and size != total:
        raise _IncompleteDownload(f"received {size} of {total} bytes")
    return size, hasher.hexdigest()


def _parse_content_range(value: str | None) -> tuple[int, int | None]:
    """Parse ``bytes START-END/TOTAL`` into START and TOTAL (None when TOTAL is ``*``)."""
    match = re.fullmatch(r"\s*bytes\s+(\d+)-(\d+)/(\d+|\*)\s*", value or "")
    if match is None:
        raise _IncompleteDownload(f"invalid Content-Range header {value!r}")
    total = None if match.group(3) == "*" else int(match.group(3))
    return int(match.group(1)), total


def _check_downloaded_structure(spec: ModelSpec, path: Path) -> None:
    """Raise WeightsError unless ``path`` has every vision, text and audio tensor of ``spec``."""
    state = read_checkpoint(path)
    check_state_dict(
        select_modalities(state, MODALITIES),
        expected_shapes(spec.config, MODALITIES),
        path,
    )


# ---------------------------------------------------------------------------
# Reading and checking state dicts
# ---------------------------------------------------------------------------


def read_checkpoint(path: Path) -> dict[str, Tensor]:
    """Load a state dict saved with torch.save, memory-mapped when the format allows.

    Only tensors and plain containers are unpickled (``weights_only=True``). Files in the
    zip format of torch >= 1.6 are memory-mapped, so tensors that are later dropped are
    never read from disk. Older files are read whole.
    """
    mmap = zipfile.is_zipfile(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except (RuntimeError, pickle.UnpicklingError, EOFError, ValueError, OSError) as exc:
        # torch's own message suggests weights_only=False, which is wrong advice
        # for a file that is not a checkpoint at all, so only its type is shown.
        raise WeightsError(
            f"cannot read checkpoint {path}: it is not a state dict saved with torch.save "
            f"({type(exc).__name__}); expected a file such as the official imagebind_huge.pth"
        ) from exc
    if not mmap:
        logger.info("checkpoint %s is not in the zip format; it was read without mmap", path)

    if not isinstance(state, Mapping):
        raise WeightsError(
            f"checkpoint {path} contains a {type(state).__name__}, expected a state dict"
        )
    bad = [key for key, value in state.items() if not isinstance(value, Tensor)]
    if bad:
        raise WeightsError(
            f"checkpoint {path} is not a flat state dict; entries that are not tensors: "
            f"{', '.join(map(str, bad[:_KEYS_SHOWN]))}"
        )
    return dict(state)


def select_modalities(state: Mapping[str, Tensor], modalities: Iterable[str]) -> dict[str, Tensor]:
    """Keep the entries of ``state`` that belong to the towers of ``modalities``."""
    prefixes = tuple(f"{part}.{m}." for part in _TOWER_PARTS for m in modalities)
    return {key: value for key, value in state.items() if key.startswith(prefixes)}


def check_state_dict(
    state: Mapping[str, Tensor], expected: Mapping[str, torch.Size], path: Path
) -> None:
    """Raise WeightsError naming the first missing, unexpected and mis-shaped keys."""
    missing = [key for key in expected if key not in state]
    unexpected = [key for key in state if key not in expected]
    mismatched = [
        f"{key} {tuple(state[key].shape)} != {tuple(shape)}"
        for key, shape in expected.items()
        if key in state and state[key].shape != shape
    ]
    if not (missing or unexpected or mismatched):
        return

    problems = []
    for label, keys in (
        ("missing keys", missing),
        ("unexpected keys", unexpected),
        ("shape mismatches (file != model)", mismatched),
    ):
        if keys:
            more = f" and {len(keys) - _KEYS_SHOWN} more" if len(keys) > _KEYS_SHOWN else ""
            problems.append(f"{len(keys)} {label}: {', '.join(keys[:_KEYS_SHOWN])}{more}")
    if not state:
        problems.append("the file has no keys of the requested towers")
    raise WeightsError(f"checkpoint {path} does not fit the architecture: " + "; ".join(problems))


# ---------------------------------------------------------------------------
# Building models
# ---------------------------------------------------------------------------


def parse_precision(precision: str) -> torch.dtype:
    """Map ``"fp32"`` or ``"bf16"`` to its torch dtype, raising ModelError otherwise."""
    try:
        return PRECISIONS[precision]
    except KeyError:
        raise ModelError(
            f"invalid precision {precision!r}; expected one of: {', '.join(PRECISIONS)}"
        ) from None


def parse_device(device: str | torch.device) -> torch.device:
    """Parse ``device`` and raise ModelError if it is malformed or not available."""
    try:
        parsed = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ModelError(f"invalid device {device!r}: {exc}") from exc
    if parsed.type == "cuda":
        if not torch.cuda.is_available():
            raise ModelError(f"device {device!r} requested, but CUDA is not available")
        if parsed.index is not None and parsed.index >= torch.cuda.device_count():
            raise ModelError(
                f"device {device!r} requested, but only {torch.cuda.device_count()} "
                "CUDA devices are visible"
            )
    elif parsed.type == "mps":
        if not torch.backends.mps.is_available():
            raise ModelError(f"device {device!r} requested, but MPS is not available")
    elif parsed.type != "cpu":
        raise ModelError(f"unsupported device {device!r}; use cpu, cuda[:N] or mps")
    return parsed


def load_model(
    model_name: str,
    *,
    modalities: Iterable[str],
    checkpoint: Path | str | None = None,
    precision: str = "fp32",
    device: str | torch.device = "cpu",
) -> ImageBind:
    """Build an ImageBind with the towers of ``modalities`` and assign its weights.

    Models with a seed in the registry (``imagebind-test``) get seeded random weights
    and take no checkpoint. Other models read the file from ``resolve_checkpoint``,
    which may download it. For bf16 the weights are converted to bfloat16 while they
    are read (see ``read_converted``), but the postprocessors (the logit scales) stay
    in float32.

    Raises:
        ModelError: unknown model, precision or device.
        UsageError: a checkpoint was given for a model with random weights.
        WeightsError: the checkpoint is missing or does not fit the architecture.
    """
    spec = get_spec(model_name)
    dtype = parse_precision(precision)
    target = parse_device(device)
    model = ImageBind(spec.config, modalities)

    if spec.init_seed is not None:
        if checkpoint is not None:
            raise UsageError(
                f"model {spec.name!r} uses seeded random weights and takes no checkpoint"
            )
        init_random_weights(model, spec.init_seed)
    else:
        path = resolve_checkpoint(model_name, checkpoint)
        state = select_modalities(read_checkpoint(path), model.modalities)
        expected = {key: value.shape for key, value in model.state_dict().items()}
        check_state_dict(state, expected, path)
        weights = read_converted(path, state, dtype=dtype, device=target)
        model.load_state_dict(weights, strict=True, assign=True)
        logger.info("loaded %s towers %s from %s", spec.name, ",".join(model.modalities), path)
        return model.eval().requires_grad_(False)

    model = model.to(device=target, dtype=dtype)
    model.modality_postprocessors.float()
    return model.eval().requires_grad_(False)


def _target_dtype(key: str, tensor: Tensor, dtype: torch.dtype) -> torch.dtype:
    if not tensor.is_floating_point():
        return tensor.dtype
    # The logit scales are single numbers, and keeping them in float32 avoids rounding
    # exp(log_logit_scale) to bfloat16.
    if key.startswith("modality_postprocessors."):
        return torch.float32
    return dtype


def read_converted(
    path: Path,
    state: dict[str, Tensor],
    *,
    dtype: torch.dtype,
    device: torch.device,
    chunk_bytes: int = CONVERT_CHUNK_BYTES,
) -> dict[str, Tensor]:
    """Return ``state``'s tensors as ``dtype`` on ``device``, mapping ``path`` again as needed.

    ``state`` is the checkpoint as ``read_checkpoint`` returned it, or the part of it
    to keep. It serves as the first pass and is empty on return, so the caller keeps
    no view of the file. When ``dtype`` is the file's and the device is the CPU, the
    tensors stay memory-mapped views of the file. Otherwise every tensor is copied, so
    that no view keeps the mapping alive. The copies are made in passes of about
    ``chunk_bytes`` of file data, and each pass drops its mapping before the next one
    maps the file again. The peak resident memory is then the converted weights plus
    one pass, not the converted weights plus every file page read.
    """
    if not zipfile.is_zipfile(path):
        # A file in the legacy format is read whole on every pass, so one pass is cheapest.
        chunk_bytes = sys.maxsize
    pending = list(state)
    mapped = state
    converted: dict[str, Tensor] = {}
    while pending:
        if not mapped:
            mapped = read_checkpoint(path)
        read = 0
        while pending and read < chunk_bytes:
            key = pending.pop()
            tensor = mapped[key]
            target_dtype = _target_dtype(key, tensor, dtype)
            if device.type == "cpu" and tensor.dtype == target_dtype == dtype:
                converted[key] = tensor
            else:
                converted[key] = tensor.to(device=device, dtype=target_dtype, copy=True)
                read += tensor.numel() * tensor.element_size()
        mapped.clear()  # also empties the caller's dict after the first pass
    return converted


def checkpoint_fingerprint(path: Path | str) -> str:
    """Return a SHA-256 hex digest over a file's size and three 1 MiB samples.

    The samples are the first, middle and last MiB, so fingerprinting a multi-GB
    checkpoint reads at most 3 MiB. Files that differ only outside the samples and
    have the same size get the same fingerprint.
    """
    path = Path(path)
    size = path.stat().st_size
    hasher = hashlib.sha256(f"{size}\n".encode())
    offsets = (
        0,
        max(0, size // 2 - FINGERPRINT_SAMPLE_BYTES // 2),
        max(0, size - FINGERPRINT_SAMPLE_BYTES),
    )
    with path.open("rb") as handle:
        for offset in offsets:
            handle.seek(offset)
            hasher.update(handle.read(FINGERPRINT_SAMPLE_BYTES))
    return hasher.hexdigest()


def model_id_for(model_name: str, checkpoint: Path | None) -> str:
    """Return the id stored with every vector, e.g. ``imagebind-huge@3f9c0a1b2d4e``.

    The id of a checkpoint model contains the first 12 hex digits of its
    fingerprint, so indexes built from different weight files are never mixed. A
    model with seeded random weights gets ``<name>@seed<N>``.
    """
    spec = get_spec(model_name)
    if spec.init_seed is not None:
        return f"{spec.name}@seed{spec.init_seed}"
    if checkpoint is None:
        raise WeightsError(f"model {spec.name!r} needs a checkpoint file to derive its id")
    return f"{spec.name}@{checkpoint_fingerprint(checkpoint)[:12]}"
