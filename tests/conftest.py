"""Shared fixtures: a private data home per test, the shared media corpus, a fake encoder."""

from __future__ import annotations

import contextlib
import hashlib
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

# Resolved, because the index stores the real path of a folder reached through a link.
SHARED = (Path(__file__).resolve().parents[1].parent / "shared").resolve()
PAIRED = SHARED / "data" / "paired"
EDGE = SHARED / "data" / "edge"
CASES = SHARED / "cases"


@pytest.fixture(autouse=True)
def private_home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point every bindindex folder at a fresh temporary one and clear the option variables."""
    home = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("BINDINDEX_HOME", str(home / "data"))
    monkeypatch.setenv("BINDINDEX_CACHE_DIR", str(home / "cache"))
    for name in (
        "BINDINDEX_INDEX",
        "BINDINDEX_MODEL",
        "BINDINDEX_CHECKPOINT",
        "BINDINDEX_PRECISION",
        "BINDINDEX_CHECKPOINT_URL",
        "BINDINDEX_CHECKPOINT_SHA256",
    ):
        monkeypatch.delenv(name, raising=False)
    return home


@pytest.fixture
def isolated_cache(private_home: Path) -> Path:
    """The cache root (``BINDINDEX_CACHE_DIR``) that this test's private home uses."""
    return private_home / "cache"


@pytest.fixture(scope="session")
def paired() -> Path:
    if not PAIRED.is_dir():
        pytest.skip(f"shared media corpus not found at {PAIRED}")
    return PAIRED


@pytest.fixture(scope="session")
def edge() -> Path:
    if not EDGE.is_dir():
        pytest.skip(f"shared edge corpus not found at {EDGE}")
    return EDGE


@pytest.fixture(scope="session")
def cases() -> Path:
    if not CASES.is_dir():
        pytest.skip(f"shared case corpus not found at {CASES}")
    return CASES


class FakeEncoder:
    """A deterministic stand-in for the model, for tests of storage and search logic.

    It projects pooled pixels or filterbank features with a fixed random
    matrix, so similar inputs get similar vectors. Audio outputs have norm 20
    and text outputs norm 14, like ImageBind's scaled outputs.
    """

    model_name = "fake"
    model_id = "fake@1"
    meaningless = True
    precision = "fp32"
    precision_note = "float32"

    def __init__(self, dim: int = 32, model_id: str = "fake@1"):
        self.dim = dim
        self.model_id = model_id
        rng = np.random.default_rng(7)
        self.w_image = rng.standard_normal((dim, 3 * 8 * 8)).astype(np.float32)
        self.w_audio = rng.standard_normal((dim, 16 * 16)).astype(np.float32)
        self.calls = {"image": 0, "audio": 0, "text": 0}

    def embed_images(self, x: torch.Tensor) -> np.ndarray:
        self.calls["image"] += len(x)
        pooled = torch.nn.functional.adaptive_avg_pool2d(x.float(), 8).reshape(len(x), -1)
        return pooled.numpy() @ self.w_image.T

    def embed_audio(self, x: torch.Tensor) -> np.ndarray:
        self.calls["audio"] += len(x)
        mean = x.float().mean(dim=1)[:, 0]  # (B, 128, 204)
        pooled = torch.nn.functional.adaptive_avg_pool2d(mean[:, None], 16).reshape(len(x), -1)
        out = pooled.numpy() @ self.w_audio.T
        return 20.0 * out / np.linalg.norm(out, axis=1, keepdims=True)

    def embed_tokens(self, tokens: torch.Tensor) -> np.ndarray:
        self.calls["text"] += len(tokens)
        out = []
        for row in tokens.tolist():
            seed = int.from_bytes(hashlib.sha256(repr(row).encode()).digest()[:8], "little")
            vector = np.random.default_rng(seed).standard_normal(self.dim).astype(np.float32)
            out.append(14.0 * vector / np.linalg.norm(vector))
        return np.stack(out)


@pytest.fixture
def fake_encoder() -> FakeEncoder:
    return FakeEncoder()


@pytest.fixture
def open_fake_index(tmp_path: Path, fake_encoder: FakeEncoder):
    """Open an index folder whose model is the fake encoder."""
    from bindindex.index import Index

    opened = []

    def opener(path: Path | None = None, encoder: FakeEncoder | None = None) -> Index:
        idx = Index.open(path or tmp_path / "index", model="fake")
        idx._encoder = encoder or fake_encoder
        opened.append(idx)
        return idx

    yield opener
    for idx in opened:
        idx.close()


@contextlib.contextmanager
def run_server(app: Any) -> Iterator[str]:
    """Serve ``app`` with uvicorn on a free loopback port in a thread; yield its base URL."""
    import uvicorn

    config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="on")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="test-uvicorn", daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start within 20 s")
        time.sleep(0.02)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(20)


def free_port() -> int:
    """Return a loopback TCP port that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def planted_vectors(
    concepts: int,
    per_modality: int,
    *,
    d: int = 32,
    spread: float = 0.1,
    modality_offset: float = 0.0,
    seed: int = 0,
) -> tuple[np.ndarray, list[str], list[str]]:
    """Return raw vectors (n, d), modalities and concept labels with planted clusters.

    Every concept has ``per_modality`` images and as many audio items around
    one random centre. ``modality_offset`` adds a shared direction per
    modality, like the gap between ImageBind's image and audio cones.
    """
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((concepts, d))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    offsets = rng.standard_normal((2, d))
    offsets /= np.linalg.norm(offsets, axis=1, keepdims=True)
    rows, modalities, labels = [], [], []
    for concept in range(concepts):
        for m, modality in enumerate(("image", "audio")):
            for _ in range(per_modality):
                noise = spread * rng.standard_normal(d) / np.sqrt(d) * 4
                rows.append(centres[concept] + modality_offset * offsets[m] + noise)
                modalities.append(modality)
                labels.append(f"concept{concept}")
    return np.array(rows, dtype=np.float32), modalities, labels


def add_planted_items(
    index_path: Path,
    vectors: np.ndarray,
    modalities: list[str],
    labels: list[str],
    *,
    start: int = 0,
) -> list[int]:
    """Write items with the given vectors straight into the catalog of ``index_path``.

    Paths are ``/planted/<label>/<modality>/<n>``, so ``--labels top-folder``
    finds the planted concepts. Returns the item ids.
    """
    import time

    from bindindex.store.catalog import Catalog

    catalog = Catalog(index_path / "catalog.db")
    ids = []
    try:
        with catalog.transaction() as conn:
            catalog.set_meta(
                {
                    "model_id": "planted@1",
                    "model_name": "fake",
                    "meaningless": "1",
                    "preprocess_version": "planted",
                    "dim": str(vectors.shape[1]),
                },
                conn,
            )
            for n, (vector, modality, label) in enumerate(
                zip(vectors, modalities, labels, strict=True), start=start
            ):
                path = f"/planted/{label}/{modality}/{n}"
                item_id = catalog.upsert_item(
                    conn,
                    {
                        "path": path,
                        "path_bytes": path.encode(),
                        "root": "/planted",
                        "modality": modality,
                        "format": "planted",
                        "size": 1,
                        "mtime_ns": 1,
                        "status": "indexed",
                        "model_id": "planted@1",
                        "precision": "fp32",
                        "indexed_at": time.time(),
                    },
                )
                catalog.put_vector(conn, item_id, vector)
                ids.append(item_id)
            catalog.bump_generation(conn)
    finally:
        catalog.close()
    return ids


@pytest.fixture
def planted_index(tmp_path: Path):
    """Build an index folder from planted vectors, without a model; returns a builder."""

    def build(
        vectors: np.ndarray, modalities: list[str], labels: list[str], name: str = "planted"
    ) -> Path:
        path = tmp_path / name
        add_planted_items(path, vectors, modalities, labels)
        return path

    return build
