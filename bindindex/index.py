"""The public facade: one index folder with its catalog, vectors and model."""

from __future__ import annotations

import fcntl
import logging
import os
import sqlite3
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bindindex import cluster as clustering
from bindindex.errors import (
    IndexBusyError,
    IndexStateError,
    MediaError,
    ModelError,
    ModelMismatchError,
    NotFoundError,
    UsageError,
)
from bindindex.export import export_vectors
from bindindex.ingest import Failure, IndexReport, Ingest
from bindindex.media import PREPROCESS_VERSION, load_audio, load_image, sniff, tokenize
from bindindex.media.image import DEFAULT_MAX_PIXELS
from bindindex.model.config import get_spec
from bindindex.scan import scan
from bindindex.search import Hit, QueryTerm, check_terms, combine
from bindindex.store.catalog import Catalog, ItemRow
from bindindex.store.vectors import VectorIndex, normalise

log = logging.getLogger(__name__)

DEFAULT_MODEL = "imagebind-huge"
CATALOG_FILE = "catalog.db"
VECTORS_FILE = "vectors.faiss"
LOCK_FILE = "write.lock"
# "auto" picks bf16 only where the hardware computes it natively (see Encoder).
PRECISIONS = ("fp32", "bf16", "auto")


@dataclass
class ClusterRun:
    """A stored K-Means run: its id, the k used and every measure computed."""

    id: int
    k: int
    k_requested: int
    n_items: int
    metrics: dict[str, Any]
    warnings: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "run": self.id,
            "k": self.k,
            "k_requested": self.k_requested,
            "n_items": self.n_items,
            "warnings": self.warnings,
            **self.metrics,
        }


class Index:
    """A folder holding ``catalog.db`` (SQLite, the source of truth) and ``vectors.faiss``.

    Open it with :meth:`open`. The model is built only when a file or text
    has to be embedded, so ``info``, ``export`` and item queries start at once.
    """

    def __init__(
        self,
        path: Path,
        catalog: Catalog,
        *,
        model: str | None,
        checkpoint: Path | None,
        precision: str,
        device: str,
    ):
        self.path = path
        self.catalog = catalog
        meta = catalog.meta()
        self.model_name = model or meta.get("model_name") or DEFAULT_MODEL
        if (
            checkpoint is None
            and meta.get("checkpoint")
            and self.model_name == meta.get("model_name")
        ):
            remembered = Path(meta["checkpoint"])
            checkpoint = remembered if remembered.is_file() else None
        self.checkpoint = checkpoint
        self.precision = precision
        self.device = device
        self._encoder: Any = None
        self._vectors: VectorIndex | None = None
        self._lock_handle: Any = None

    # -- opening ----------------------------------------------------------------

    @classmethod
    def open(
        cls,
        path: str | os.PathLike[str],
        *,
        model: str | None = None,
        checkpoint: str | os.PathLike[str] | None = None,
        precision: str = "fp32",
        device: str = "cpu",
        create: bool = True,
    ) -> Index:
        """Open the index folder at ``path``; with ``create``, make it when it is missing."""
        folder = Path(path).expanduser()
        if precision not in PRECISIONS:
            raise UsageError(f"invalid precision {precision!r}: use one of {', '.join(PRECISIONS)}")
        if folder.exists() and not folder.is_dir():
            raise UsageError(f"index path {folder} is a file; --index must name a folder")
        catalog_path = folder / CATALOG_FILE
        if not catalog_path.exists() and not create:
            raise NotFoundError(
                f"no index at {folder}; build one with 'bindindex index FOLDER --index {folder}'"
            )
        try:
            catalog = Catalog(catalog_path)
        except Exception as exc:
            if isinstance(exc, IndexStateError):
                raise
            raise IndexStateError(f"cannot open the catalog {catalog_path}: {exc}") from exc
        return cls(
            folder,
            catalog,
            model=model,
            checkpoint=Path(checkpoint) if checkpoint is not None else None,
            precision=precision,
            device=device,
        )

    def close(self) -> None:
        self._release_lock()
        self.catalog.close()

    def __enter__(self) -> Index:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- model ------------------------------------------------------------------

    @property
    def encoder(self) -> Any:
        if self._encoder is None:
            from bindindex.model.encoder import Encoder

            self._encoder = Encoder(
                self.model_name,
                checkpoint=self.checkpoint,
                precision=self.precision,
                device=self.device,
            )
        return self._encoder

    def _check_model_name(self) -> None:
        """Fail early, before any checkpoint is resolved, when the model name differs."""
        recorded = self.catalog.get_meta("model_name")
        if recorded is not None and recorded != self.model_name:
            raise ModelMismatchError(
                f"index {self.path} was built with model {recorded}, not {self.model_name}; "
                f"use --model {recorded} or a new --index folder"
            )

    def _check_model(self, encoder: Any) -> None:
        """Raise when the index was built with another model or preprocessing version."""
        meta = self.catalog.meta()
        recorded = meta.get("model_id")
        if recorded is None:
            vectors = self._vectors
            if vectors is not None and vectors.dim != encoder.dim and vectors.ntotal == 0:
                # The first model fixes the dimension; nothing was stored before it.
                self._vectors = VectorIndex(encoder.dim)
            return
        if recorded != encoder.model_id:
            raise ModelMismatchError(
                f"index {self.path} contains vectors of model {recorded}, but the model in use is "
                f"{encoder.model_id}; use the same --model/--checkpoint as when it was built, "
                "or a new --index folder"
            )
        if meta.get("preprocess_version") != PREPROCESS_VERSION:
            raise ModelMismatchError(
                f"index {self.path} was built with preprocessing version "
                f"{meta.get('preprocess_version')}, this bindindex uses {PREPROCESS_VERSION}; "
                "build a new index"
            )

    def _record_model(self, conn: sqlite3.Connection, encoder: Any) -> None:
        """Write the model into the index in the transaction of its first vectors.

        Recording it any earlier would bind the index to a model whose weights
        may still fail to load.
        """
        if conn.execute("SELECT 1 FROM meta WHERE key = 'model_id'").fetchone() is not None:
            return
        values = {
            "model_id": encoder.model_id,
            "model_name": encoder.model_name,
            "meaningless": "1" if encoder.meaningless else "0",
            "preprocess_version": PREPROCESS_VERSION,
            "dim": str(encoder.dim),
            "created_at": str(time.time()),
        }
        if self.checkpoint is not None:
            values["checkpoint"] = str(Path(self.checkpoint).resolve())
        self.catalog.set_meta(values, conn)

    @property
    def dim(self) -> int:
        stored = self.catalog.get_meta("dim")
        return int(stored) if stored else 1024

    # -- vectors ----------------------------------------------------------------

    def vectors(self) -> VectorIndex:
        """Return the FAISS index, loaded from its file or rebuilt from the catalog."""
        if self._vectors is not None:
            return self._vectors
        generation = self.catalog.vector_generation()
        loaded = VectorIndex.load(self.path / VECTORS_FILE, self.dim, generation)
        if loaded is None:
            loaded = self._rebuild_vectors()
            # Save the rebuilt file only under the write lock. A writer that
            # already holds the lock keeps it: add_paths releases it at the end.
            held_before = self._lock_handle is not None
            if self._try_lock():
                try:
                    loaded.save(self.path / VECTORS_FILE, generation)
                finally:
                    if not held_before:
                        self._release_lock()
        self._vectors = loaded
        return loaded

    def _rebuild_vectors(self) -> VectorIndex:
        ids, raw = self.catalog.vectors(self.dim)
        rebuilt = VectorIndex.build(self.dim, ids, normalise(raw))
        log.info("rebuilt the vector index of %s from %d stored vectors", self.path, len(ids))
        return rebuilt

    # -- locking ----------------------------------------------------------------

    def _try_lock(self) -> bool:
        if self._lock_handle is not None:
            return True
        self.path.mkdir(parents=True, exist_ok=True)
        handle = open(self.path / LOCK_FILE, "a+")  # noqa: SIM115 (held until release)
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            return False
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        self._lock_handle = handle
        return True

    def _acquire_write_lock(self) -> None:
        if self._try_lock():
            return
        try:
            holder = (self.path / LOCK_FILE).read_text().strip() or "unknown"
        except OSError:
            holder = "unknown"
        raise IndexBusyError(
            f"index {self.path} is being written by process {holder}; wait for it to finish "
            "and run the command again"
        )

    def _release_lock(self) -> None:
        if self._lock_handle is not None:
            fcntl.flock(self._lock_handle, fcntl.LOCK_UN)
            self._lock_handle.close()
            self._lock_handle = None

    # -- indexing ---------------------------------------------------------------

    def add_paths(
        self,
        paths: Sequence[str | os.PathLike[str]],
        *,
        batch_size: int = 8,
        workers: int | None = None,
        retry_failed: bool = False,
        progress: bool = False,
        max_pixels: int = DEFAULT_MAX_PIXELS,
    ) -> IndexReport:
        """Index the files under ``paths``: add new, re-embed changed, drop deleted ones.

        Images with more than ``max_pixels`` pixels are rejected from their
        header, before any pixel is decoded.
        """
        if not paths:
            raise UsageError("no path given: name at least one folder or file to index")
        missing = [str(p) for p in paths if not os.path.lexists(p)]
        if missing:
            raise NotFoundError(
                f"path not found: {', '.join(missing)}; check the spelling. To drop the items "
                "of a folder that was deleted, index the folder that contained it"
            )
        self._check_model_name()
        if self._encoder is None:
            # An unknown model name fails here, before any file is decoded.
            try:
                get_spec(self.model_name)
            except ModelError as exc:
                raise UsageError(str(exc)) from exc
        self._acquire_write_lock()
        try:
            self.vectors()
            result = scan([Path(p) for p in paths], skip=[self.path])
            run = Ingest(
                self.catalog,
                self.vectors,
                lambda: self.encoder,
                self._check_model,
                self._record_model,
                batch_size=batch_size,
                workers=workers,
                retry_failed=retry_failed,
                progress=progress,
                max_pixels=max_pixels,
            )
            report = run.run(result)
            self.vectors().save(self.path / VECTORS_FILE, self.catalog.vector_generation())
            return report
        finally:
            self._release_lock()

    # -- queries ----------------------------------------------------------------

    def embed_term(self, term: QueryTerm) -> np.ndarray:
        """Return the raw embedding (dim,) of one query term."""
        if term.kind == "item":
            try:
                item_id = int(term.value)
            except ValueError as exc:
                raise UsageError(f"invalid item id {term.value!r}: ids are integers") from exc
            ids, raw = self.catalog.vectors(self.dim, [item_id])
            if len(ids) == 0:
                raise NotFoundError(f"item {item_id} is not in index {self.path} or has no vector")
            return raw[0]
        self._check_model_name()
        encoder = self.encoder
        self._check_model_for_query(encoder)
        if term.kind == "text":
            return np.asarray(encoder.embed_tokens(tokenize([term.value])), dtype=np.float32)[0]
        path = Path(term.value)
        if path.is_dir():
            raise UsageError(f"query path {path} is a folder; --{term.kind} takes a file")
        if not path.is_file():
            raise NotFoundError(f"query file {path} not found")
        try:
            detected = sniff(path)
            if term.kind == "image":
                if detected.modality != "image":
                    raise UsageError(
                        f"{path} is not an image (detected: {detected.format or 'unknown'})"
                    )
                pixels = load_image(path).pixels
                return np.asarray(encoder.embed_images(pixels[None]), dtype=np.float32)[0]
            if detected.modality != "audio":
                raise UsageError(
                    f"{path} is not an audio file (detected: {detected.format or 'unknown'})"
                )
            clips = load_audio(path).clips
            return np.asarray(encoder.embed_audio(clips[None]), dtype=np.float32)[0]
        except MediaError as exc:
            raise UsageError(f"cannot use {path} as a query: {exc.reason}: {exc.detail}") from exc

    def _check_model_for_query(self, encoder: Any) -> None:
        recorded = self.catalog.get_meta("model_id")
        if recorded is not None and recorded != encoder.model_id:
            raise ModelMismatchError(
                f"index {self.path} contains vectors of model {recorded}, but the query would be "
                f"embedded with {encoder.model_id}; pass the --model/--checkpoint the index was "
                "built with"
            )

    def search(
        self, terms: Sequence[QueryTerm], *, modality: str = "any", k: int = 10
    ) -> list[Hit]:
        """Return the ``k`` stored items nearest to the combined query, best first.

        Items used as query terms are left out of the results.
        """
        terms = list(terms)
        check_terms(terms, modality, k)
        vectors = self.vectors()
        if vectors.ntotal == 0:
            # Checked before embedding, so that an empty index never starts a
            # model download.
            raise UsageError(
                f"index {self.path} contains no vectors to search; index some files first"
            )
        raw = np.stack([self.embed_term(term) for term in terms])  # (n_terms, dim)
        query = combine(raw, np.array([t.weight for t in terms]))  # (dim,)
        excluded = {int(t.value) for t in terms if t.kind == "item"}

        allowed = None
        if modality != "any":
            allowed = np.array(
                [item.id for item in self.catalog.items(status="indexed", modality=modality)],
                dtype=np.int64,
            )
            if len(allowed) == 0:
                return []
        limit = min(k + len(excluded), vectors.ntotal)
        scores, ids = vectors.search(query[None], limit, allowed)
        found = [(int(i), float(s)) for i, s in zip(ids[0], scores[0], strict=True) if i >= 0]
        found = [(i, s) for i, s in found if i not in excluded][:k]
        items = self.catalog.items_by_ids(i for i, _ in found)
        return [
            # Float32 rounding can put a cosine slightly outside [-1, 1].
            Hit(
                id=i,
                # fs_path keeps names that are not UTF-8 as surrogate escapes, which
                # os functions turn back into the original bytes.
                path=str(items[i].fs_path),
                modality=items[i].modality or "unknown",
                score=min(1.0, max(-1.0, s)),
            )
            for i, s in found
            if i in items
        ]

    # -- clustering -------------------------------------------------------------

    def cluster(
        self,
        k: int,
        *,
        labels: str | os.PathLike[str] | None = None,
        seed: int = 0,
        niter: int = 20,
    ) -> ClusterRun:
        """Run K-Means over every stored vector, store the run and return its measures.

        ``labels`` is ``"top-folder"`` (the first folder below the indexed
        root names the concept) or the path of a ``path,label`` CSV file.
        """
        ids, raw = self.catalog.vectors(self.dim)
        if len(ids) == 0:
            raise UsageError(
                f"index {self.path} contains no vectors to cluster; index some files first"
            )
        unit = normalise(raw)
        items = self.catalog.items_by_ids(ids.tolist())
        rows = [items[int(i)] for i in ids]
        modalities = [row.modality or "unknown" for row in rows]
        item_labels = self._labels(rows, labels) if labels is not None else None

        result = clustering.kmeans(unit, k, niter=niter, seed=seed)
        metrics: dict[str, Any] = {
            "inertia": result.inertia,
            "silhouette": clustering.silhouette(unit, result.assignments, seed=seed),
            "sizes": clustering.sizes_by_modality(result.assignments, modalities, result.k),
            "cross_modal": clustering.cross_modal_cosines(unit, modalities, item_labels),
        }
        if item_labels is not None:
            metrics["consistency"] = clustering.consistency(
                result.assignments, item_labels, modalities
            )
        params = {
            "k": k,
            "seed": seed,
            "niter": niter,
            "labels": None if labels is None else str(labels),
        }
        model_id = self.catalog.get_meta("model_id") or "unknown"
        run_id = self.catalog.insert_cluster_run(
            k=result.k,
            k_requested=k,
            model_id=model_id,
            params=params,
            metrics={**metrics, "warnings": result.warnings},
            item_ids=ids,
            assignments=result.assignments,
            distances=result.distances,
            centroids=result.centroids,
        )
        for warning in result.warnings:
            log.info("cluster run %d: %s", run_id, warning)
        return ClusterRun(
            id=run_id,
            k=result.k,
            k_requested=k,
            n_items=len(ids),
            metrics=metrics,
            warnings=result.warnings,
        )

    def _labels(self, rows: list[ItemRow], labels: str | os.PathLike[str]) -> list[str | None]:
        if str(labels) == "top-folder":
            return [clustering.top_folder_label(row.path, row.root) for row in rows]
        csv_path = Path(labels)
        table = clustering.read_label_csv(csv_path)
        folder = csv_path.resolve().parent
        return [clustering.csv_label(table, row.path, row.root, folder) for row in rows]

    # -- checking ---------------------------------------------------------------

    def check(self, *, repair: bool = True) -> dict[str, Any]:
        """Compare the catalog with its vectors and the FAISS file; with ``repair``, fix them.

        Returns the problems found, by kind, with the item ids involved. An
        indexed item without a vector cannot be repaired here, so it becomes
        ``pending`` and the next ``index`` run embeds its file again.
        """
        if repair:
            self._acquire_write_lock()
        try:
            return self._check(repair)
        finally:
            if repair:
                self._release_lock()

    def _check(self, repair: bool) -> dict[str, Any]:
        conn = self.catalog.conn
        without_vector = [
            int(row[0])
            for row in conn.execute(
                "SELECT i.id FROM items i LEFT JOIN vectors v ON v.item_id = i.id "
                "WHERE i.status = 'indexed' AND v.item_id IS NULL"
            )
        ]
        orphan_vectors = [
            int(row[0])
            for row in conn.execute(
                "SELECT v.item_id FROM vectors v LEFT JOIN items i ON i.id = v.item_id "
                "WHERE i.id IS NULL OR i.status != 'indexed'"
            )
        ]
        ids, raw = self.catalog.vectors(self.dim)
        bad_rows = ~np.isfinite(raw).all(axis=1) | (np.linalg.norm(raw, axis=1) == 0)
        non_finite = [int(i) for i in ids[bad_rows]]

        generation = self.catalog.vector_generation()
        on_disk = VectorIndex.load(self.path / VECTORS_FILE, self.dim, generation)
        expected_ids = sorted(set(ids.tolist()) - set(non_finite))
        file_state = "ok"
        if on_disk is None:
            file_state = "missing, stale or unreadable"
        elif sorted(on_disk.ids().tolist()) != expected_ids:
            file_state = "holds other ids than the catalog"

        report: dict[str, Any] = {
            "items_without_vector": without_vector,
            "vectors_without_item": orphan_vectors,
            "non_finite_vectors": non_finite,
            "vector_file": file_state,
            "repaired": False,
        }
        problems = without_vector or orphan_vectors or non_finite or file_state != "ok"
        if not repair or not problems:
            return report

        with self.catalog.transaction() as conn:
            for item_id in without_vector:
                # A pending item is embedded again by the next index run.
                conn.execute(
                    "UPDATE items SET status = 'pending', size = -1 WHERE id = ?", (item_id,)
                )
            for item_id in orphan_vectors:
                self.catalog.delete_vector(conn, item_id)
            for item_id in non_finite:
                self.catalog.delete_vector(conn, item_id)
                conn.execute(
                    "UPDATE items SET status = 'failed', reason = 'non_finite', "
                    "detail = 'stored vector was not finite; removed by check' WHERE id = ?",
                    (item_id,),
                )
            generation = self.catalog.bump_generation(conn)
        rebuilt = self._rebuild_vectors()
        rebuilt.save(self.path / VECTORS_FILE, generation)
        self._vectors = rebuilt
        report["repaired"] = True
        log.info("check repaired %s: %s", self.path, report)
        return report

    # -- reading ----------------------------------------------------------------

    def item(self, item_id: int) -> ItemRow:
        row = self.catalog.item(item_id)
        if row is None:
            raise NotFoundError(f"item {item_id} is not in index {self.path}")
        return row

    def failures(self) -> list[Failure]:
        return [
            Failure(row.path, row.reason or "unknown", row.detail or "")
            for row in self.catalog.items(status="failed")
        ]

    def info(self) -> dict[str, Any]:
        meta = self.catalog.meta()
        counts = self.catalog.counts()
        vectors = self.vectors()
        meaningless = meta.get("meaningless") == "1"
        return {
            "index": str(self.path),
            "model_name": meta.get("model_name"),
            "model_id": meta.get("model_id"),
            "meaningless": meaningless,
            "note": (
                "built with the random-weight test model: its vectors carry no meaning"
                if meaningless
                else None
            ),
            "preprocess_version": meta.get("preprocess_version"),
            "dim": self.dim,
            "index_type": vectors.index_type,
            "vectors": vectors.ntotal,
            "items": counts,
            "precision": self.catalog.precision_counts(),
            "cluster_runs": len(self.catalog.cluster_runs()),
        }

    def export(self, path: str | os.PathLike[str]) -> int:
        """Write every indexed item's id, path, modality and vectors to ``.npz`` or ``.parquet``.

        Returns the number of items written.
        """
        return export_vectors(self.catalog, self.dim, Path(path))
