"""The public facade: one index folder with its catalog, vectors and model."""

from __future__ import annotations

import fcntl
import logging
import os
import sqlite3
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from bindindex.cluster import history as cluster_history
from bindindex.cluster import runs as cluster_runs
from bindindex.cluster import store as cluster_store
from bindindex.cluster.runs import ClusterOptions, ClusterRun
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
from bindindex.media import PREPROCESS_VERSION, sniff
from bindindex.media.image import DEFAULT_MAX_PIXELS, pillow_pixel_limit
from bindindex.model.config import get_spec
from bindindex.scan import scan
from bindindex.search import Hit, QueryTerm, check_terms, combine
from bindindex.store.catalog import Catalog, ItemRow
from bindindex.store.vectors import VectorIndex, normalise, row_norms
from bindindex.vector_import import ImportReport, import_rows, read_vector_file

log = logging.getLogger(__name__)

DEFAULT_MODEL = "imagebind-huge"
CATALOG_FILE = "catalog.db"
VECTORS_FILE = "vectors.faiss"
LOCK_FILE = "write.lock"
# Seconds a writer keeps trying to take the write lock before it reports the index busy.
LOCK_RETRY_S = 0.5
# "auto" picks bf16 only where the hardware computes it natively (see Encoder).
PRECISIONS = ("fp32", "bf16", "auto")
# The modalities an imported vector can claim; "text" rows are searchable too.
IMPORT_MODALITIES = ("image", "audio", "text")


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
        # "requested_model" is the --model of an earlier run that embedded
        # nothing yet (every file failed, or it was killed first), so that the
        # next run without --model does not fall back to the default model.
        self.model_name = (
            model or meta.get("model_name") or meta.get("requested_model") or DEFAULT_MODEL
        )
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
        # The catalog's vector generation when _vectors was loaded, for refresh().
        self._vectors_generation: int | None = None
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
        encoder: Any = None,
    ) -> Index:
        """Open the index folder at ``path``; with ``create``, make it when it is missing.

        ``encoder`` shares an already loaded model, such as the one that a
        long-running service keeps warm, instead of building one on first use.
        """
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
        opened = cls(
            folder,
            catalog,
            model=model,
            checkpoint=Path(checkpoint) if checkpoint is not None else None,
            precision=precision,
            device=device,
        )
        opened._encoder = encoder
        return opened

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

    @contextmanager
    def _writing(self) -> Iterator[None]:
        """Hold the write lock for one write, with the model name and vector index ready."""
        self._acquire_write_lock()
        try:
            self._remember_requested_model()
            self.vectors()
            yield
        finally:
            self._release_lock()

    def _save_vectors(self) -> None:
        self.vectors().save(self.path / VECTORS_FILE, self.catalog.vector_generation())

    def _remember_requested_model(self) -> None:
        """Store the model name of a write before any vector fixes the model for good."""
        if self.catalog.get_meta("model_id") is None:
            self.catalog.set_meta({"requested_model": self.model_name})

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
        if loaded is None and self._write_lock_held_elsewhere():
            # A writer has committed vectors but not saved the file yet. Its last saved
            # file is a consistent older state and far cheaper than a rebuild, and
            # refresh() replaces it once the writer is done.
            older = VectorIndex.load(self.path / VECTORS_FILE, self.dim, None)
            if older is not None and older.generation is not None:
                log.info("index %s is being written; searching its last saved vectors", self.path)
                self._vectors = older
                self._vectors_generation = older.generation
                return older
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
        self._vectors_generation = generation
        return loaded

    def refresh(self) -> None:
        """Drop the loaded FAISS index if another writer changed the vectors since it was loaded.

        A long-lived reader calls this before each search, so that files indexed by
        another process or another ``Index`` become searchable. The next
        ``vectors()`` call loads the current file or rebuilds it from the catalog.
        """
        if self._vectors is None:
            return
        if self._vectors_generation == self.catalog.vector_generation():
            return
        if self._write_lock_held_elsewhere():
            # A writer commits vectors to the catalog before it saves the index file, so
            # until it releases the lock the file is stale and loading it would rebuild
            # the whole index from the catalog. The loaded index serves until then.
            log.debug("index %s is being written; searching the loaded vectors", self.path)
            return
        self._vectors = None
        self._vectors_generation = None

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

    def _write_lock_held_elsewhere(self) -> bool:
        """Return whether another ``Index`` or process holds the write lock now."""
        if self._lock_handle is not None:
            return False
        try:
            handle = open(self.path / LOCK_FILE, "rb")  # noqa: SIM115 (closed below)
        except OSError:
            return False  # no lock file: nothing has written to this index yet
        with handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                return True
            fcntl.flock(handle, fcntl.LOCK_UN)
        return False

    def _acquire_write_lock(self) -> None:
        # Readers probe the lock for a moment (_write_lock_held_elsewhere, and vectors()
        # when it saves a rebuilt file), so a writer retries briefly before giving up.
        deadline = time.monotonic() + LOCK_RETRY_S
        while not self._try_lock():
            if time.monotonic() >= deadline:
                try:
                    holder = (self.path / LOCK_FILE).read_text().strip() or "unknown"
                except OSError:
                    holder = "unknown"
                raise IndexBusyError(
                    f"index {self.path} is being written by process {holder}; wait for it "
                    "to finish and run the command again"
                )
            time.sleep(0.02)

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
        on_progress: Callable[[int, int], None] | None = None,
    ) -> IndexReport:
        """Index the files under ``paths``: add new, re-embed changed, drop deleted ones.

        Images with more than ``max_pixels`` pixels are rejected from their
        header, before any pixel is decoded. ``on_progress(done, total)`` is
        called after each new or changed file is decoded or rejected.
        """
        if isinstance(paths, (str, os.PathLike)):
            # A single path would otherwise be read as a sequence of one-letter paths.
            paths = [paths]
        if not paths:
            raise UsageError("no path given: name at least one folder or file to index")
        missing = [str(p) for p in paths if not os.path.lexists(p)]
        if missing:
            raise NotFoundError(
                f"path not found: {', '.join(missing)}; check the spelling. To drop the items "
                "of a folder that was deleted, index the folder that contained it"
            )
        if max_pixels < 1 or max_pixels > pillow_pixel_limit():
            raise UsageError(
                f"invalid --max-pixels {max_pixels}: it must be between 1 and "
                f"{pillow_pixel_limit()}, the size above which Pillow refuses any image"
            )
        self._check_model_name()
        if self._encoder is None:
            # An unknown model name fails here, before any file is decoded.
            try:
                get_spec(self.model_name)
            except ModelError as exc:
                raise UsageError(str(exc)) from exc
        with self._writing():
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
                on_progress=on_progress,
            )
            report = run.run(result)
            self._save_vectors()
            # Items new since the latest cluster run join its nearest cluster until the next run.
            assigned = cluster_runs.assign_provisional(self.catalog, self.dim)
            if assigned:
                log.info("assigned %d items provisionally to the latest cluster run", assigned)
            return report

    def import_vectors(
        self,
        path: str | os.PathLike[str],
        *,
        modality: str,
        names: Sequence[str] | None = None,
    ) -> ImportReport:
        """Add the rows of a ``.npy`` file as items of ``modality``.

        The rows must be embeddings of this index's model (the same dimension
        is checked; the same model cannot be). Each row becomes an item named
        ``vectors:FILE#N``, or ``vectors:FILE#NAME`` with ``names``; importing
        the same file again replaces its rows' vectors and keeps their ids.
        """
        if modality not in IMPORT_MODALITIES:
            raise UsageError(
                f"unknown modality {modality!r}; use one of {', '.join(IMPORT_MODALITIES)}"
            )
        source = Path(path).resolve()
        self._check_model_name()
        with self._writing():
            encoder = self.encoder
            # In an empty index the model fixes the dimension here, as in add_paths.
            self._check_model(encoder)
            vectors = self.vectors()
            rows = read_vector_file(source, encoder.dim)  # (n, dim)
            labels = [str(i) for i in range(len(rows))] if names is None else list(names)
            if len(labels) != len(rows):
                raise UsageError(
                    f"{len(labels)} names for {len(rows)} rows in {source}; give one name per "
                    "row (blank lines in a names file are skipped)"
                )
            if len(set(labels)) != len(labels):
                raise UsageError("the names are not unique; each row needs its own name")
            report = import_rows(
                self.catalog,
                vectors,
                source,
                rows,
                modality=modality,
                labels=labels,
                model_id=encoder.model_id,
                record_model=lambda conn: self._record_model(conn, encoder),
            )
            self._save_vectors()
            log.info(
                "imported %d vectors from %s as %s items (%d failed)",
                report.imported, source, modality, report.failed,
            )  # fmt: skip
            return report

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
        # The decoders load torch, so they are imported only when a query needs them.
        from bindindex.media import load_audio, load_image, tokenize

        self._check_model_name()
        encoder = self.encoder
        self._check_model_for_query(encoder)
        if term.kind == "text":
            return np.asarray(encoder.embed_tokens(tokenize([term.value])), dtype=np.float32)[0]
        path = Path(term.value)
        if path.is_dir():
            raise UsageError(f"query path {path} is a folder; --{term.kind} takes a file")
        if path.exists() and not path.is_file():
            raise UsageError(
                f"query path {path} is not a regular file; give an image or audio file"
            )
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
        self,
        terms: Sequence[QueryTerm],
        *,
        modality: str = "any",
        k: int = 10,
        center: bool = False,
    ) -> list[Hit]:
        """Return the ``k`` stored items nearest to the combined query, best first.

        Items used as query terms are left out of the results. With
        ``center``, each stored vector and each query term has the mean unit
        vector of its modality subtracted before scoring (see
        :meth:`_search_centered`).
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
        if center:
            return self._search_centered(terms, raw, modality, k, excluded)

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

    def _search_centered(
        self,
        terms: list[QueryTerm],
        raw: np.ndarray,
        modality: str,
        k: int,
        excluded: set[int],
    ) -> list[Hit]:
        """Score every stored item exactly, after centring both sides on the modality means.

        The means are those of the index's current unit vectors. Text terms
        are only normalised, because the index stores no text to take a mean
        from. The score is the cosine between the centred vectors.
        """
        from bindindex.cluster.centering import center as center_rows
        from bindindex.cluster.centering import modality_means

        ids, stored = self.catalog.vectors(self.dim)
        items = self.catalog.items_by_ids(ids.tolist())
        modalities = [items[int(i)].modality or "unknown" for i in ids]
        unit = normalise(stored)  # (n, d)
        means = modality_means(unit, modalities)
        xb = center_rows(unit, modalities, means)  # (n, d)
        term_modalities = [
            (items[int(t.value)].modality or "unknown") if t.kind == "item" else t.kind
            for t in terms
        ]
        xq = combine(
            center_rows(normalise(raw), term_modalities, means),
            np.array([t.weight for t in terms]),
        )  # (d,)
        scores = xb @ xq  # (n,)
        keep = np.array(
            [
                int(i) not in excluded and (modality == "any" or m == modality)
                for i, m in zip(ids, modalities, strict=True)
            ],
            dtype=bool,
        )
        order = [int(j) for j in np.argsort(-scores, kind="stable") if keep[j]][:k]
        return [
            Hit(
                id=int(ids[j]),
                path=str(items[int(ids[j])].fs_path),
                modality=modalities[j],
                score=min(1.0, max(-1.0, float(scores[j]))),
            )
            for j in order
        ]

    # -- clustering -------------------------------------------------------------

    def cluster(
        self,
        k: int = 8,
        *,
        auto_k: tuple[int, int] | None = None,
        labels: str | os.PathLike[str] | None = None,
        seed: int = 0,
        niter: int = 20,
        center: bool = False,
        names: bool = False,
        vocabulary: str | os.PathLike[str] | None = None,
        min_similarity: float = cluster_runs.DEFAULT_MIN_SIMILARITY,
    ) -> ClusterRun:
        """Run K-Means over every stored vector, store the run and return its measures.

        ``auto_k`` (MIN, MAX) picks k by silhouette instead of using ``k``.
        ``labels`` is ``"top-folder"`` (the first folder below the indexed
        root names the concept) or the path of a ``path,label`` CSV file.
        ``center`` subtracts each modality's mean before clustering. Cluster
        ids are matched to the previous run's. ``names`` embeds the prompts of
        ``vocabulary`` (default: the shipped list) with the model's text
        encoder and names each cluster after the nearest one.
        """
        options = ClusterOptions(
            k=k,
            auto_k=auto_k,
            labels=labels,
            seed=seed,
            niter=niter,
            center=center,
            min_similarity=min_similarity,
        )
        namer = None
        if names:
            namer = self._cluster_namer(Path(vocabulary) if vocabulary is not None else None)
        return cluster_runs.cluster_catalog(self.catalog, self.dim, options, namer=namer)

    def _cluster_namer(self, vocabulary: Path | None) -> cluster_runs.Namer:
        from bindindex.cluster import naming

        prompts = naming.read_vocabulary(vocabulary) if vocabulary else naming.default_vocabulary()
        if self.catalog.get_meta("model_id") is None:
            raise UsageError("the index contains no vectors to cluster; index some files first")
        self._check_model_name()
        encoder = self.encoder
        self._check_model_for_query(encoder)

        def embed_texts(texts: list[str]) -> np.ndarray:
            from bindindex.media import tokenize

            return np.asarray(encoder.embed_tokens(tokenize(texts)), dtype=np.float32)

        def namer(centroids: np.ndarray) -> list[tuple[str, float]]:
            prompt_vectors = naming.embed_prompts(prompts, embed_texts)
            return naming.name_clusters(centroids, prompt_vectors, prompts)

        return namer

    def cluster_runs(self) -> list[dict[str, Any]]:
        """Return a summary of every stored cluster run, oldest first."""
        return cluster_history.list_runs(self.catalog)

    def cluster_run(self, run: str | int, *, members: bool = False) -> dict[str, Any]:
        """Return one run (a number or ``latest``): parameters, measures and clusters."""
        run_id = cluster_store.resolve_run(self.catalog, run)
        return cluster_history.show_run(self.catalog, self.dim, run_id, with_members=members)

    def cluster_diff(self, run_a: str | int, run_b: str | int) -> dict[str, Any]:
        """Compare two runs by stable cluster id."""
        return cluster_history.diff_runs(
            self.catalog,
            cluster_store.resolve_run(self.catalog, run_a),
            cluster_store.resolve_run(self.catalog, run_b),
        )

    def export_cluster_run(
        self, run: str | int, fmt: str, target: str | os.PathLike[str] | None = None
    ) -> str | None:
        """Write a run's members as csv, json or parquet; without ``target``, return csv or json."""
        run_id = cluster_store.resolve_run(self.catalog, run)
        path = Path(target) if target is not None else None
        return cluster_history.export_run(self.catalog, self.dim, run_id, fmt, path)

    def cluster_change(self) -> dict[str, Any]:
        """Return the share of items added, removed or re-indexed since the latest run."""
        return cluster_runs.change_since_latest(self.catalog)

    def plot_cluster_run(
        self, run: str | int, target: str | os.PathLike[str], *, projection: str = "pca"
    ) -> None:
        """Draw a run's items in 2-D (in the space it clustered in) into a PNG file."""
        from bindindex.cluster import labels as cluster_labels
        from bindindex.cluster.plot import plot_run, project

        run_id = cluster_store.resolve_run(self.catalog, run)
        row = cluster_store.run_row(self.catalog, run_id)
        membership = cluster_store.members(self.catalog, run_id)
        ids, raw = self.catalog.vectors(self.dim, list(membership))
        items = self.catalog.items_by_ids(ids.tolist())
        rows = [items[int(i)] for i in ids]
        modalities = [r.modality or "unknown" for r in rows]
        space = cluster_runs.run_space(self.catalog, self.dim, run_id, normalise(raw), modalities)
        spec = row["params"].get("labels")
        labels = None
        if spec is not None and (spec == "top-folder" or Path(spec).is_file()):
            labels = cluster_labels.item_labels(rows, spec)
        points = project(space, projection, seed=int(row["params"].get("seed", 0)))
        plot_run(
            Path(target),
            points,
            [membership[int(i)][0] for i in ids],
            modalities,
            labels,
            title=f"cluster run {run_id}: k={row['k']}, {projection.upper()} projection",
        )

    def cluster_report(
        self, run: str | int, target: str | os.PathLike[str], *, link_audio: bool = False
    ) -> int:
        """Write a self-contained HTML page of a run; return the number of items on it."""
        from bindindex.cluster.report import write_report

        run_id = cluster_store.resolve_run(self.catalog, run)
        return write_report(self.catalog, self.dim, run_id, Path(target), link_audio=link_audio)

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
        bad_rows = ~np.isfinite(raw).all(axis=1) | (row_norms(raw) == 0)
        non_finite = [int(i) for i in ids[bad_rows]]

        generation = self.catalog.vector_generation()
        on_disk = VectorIndex.load(self.path / VECTORS_FILE, self.dim, generation)
        expected_ids = sorted(set(ids.tolist()) - set(non_finite))
        file_state = "ok"
        if on_disk is None:
            file_state = "missing, stale or unreadable"
        elif sorted(on_disk.ids().tolist()) != expected_ids:
            file_state = "holds other ids than the catalog"
        else:
            good = ~bad_rows
            if good.all():  # the usual case, without copying every vector
                differing = on_disk.differing_ids(ids, raw)
            else:
                differing = on_disk.differing_ids(ids[good], raw[good])
            if len(differing):
                listed = ", ".join(str(int(i)) for i in differing[:5])
                if len(differing) > 5:
                    listed += ", ..."
                file_state = (
                    f"holds vectors that differ from the catalog for {len(differing)} items "
                    f"(ids {listed})"
                )

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
            imported = {
                int(row[0]) for row in conn.execute("SELECT id FROM items WHERE format = 'npy'")
            }
            for item_id in non_finite:
                self.catalog.delete_vector(conn, item_id)
                if item_id in imported:
                    # No file to embed again: the user must import a good row.
                    conn.execute(
                        "UPDATE items SET status = 'failed', reason = 'non_finite', "
                        "detail = 'stored vector was not finite or zero; removed by check' "
                        "WHERE id = ?",
                        (item_id,),
                    )
                else:
                    # The file may be fine and the stored vector damaged: embed it again.
                    conn.execute(
                        "UPDATE items SET status = 'pending', size = -1 WHERE id = ?", (item_id,)
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

    def roots(self) -> list[Path]:
        """Return the folders that the catalog's items were found under, sorted."""
        rows = self.catalog.conn.execute(
            "SELECT DISTINCT root FROM items WHERE root IS NOT NULL ORDER BY root"
        )
        return [Path(row[0]) for row in rows]

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
