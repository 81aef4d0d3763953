"""The FAISS index of unit-normalised vectors, keyed by catalog item id.

The index is a cache of the catalog's ``vectors`` table. A sidecar next to its
file records the catalog's vector generation. When the file is missing, stale or
unreadable, it is rebuilt from the catalog instead of trusted.

Every vector is kept in an exact flat index. Above ``EXACT_MAX_VECTORS`` a second,
approximate index (IVF lists of 4-bit product-quantised codes, FAISS "fast scan")
proposes candidates, and their exact cosines from the flat index decide the order.
So scores stay exact and only recall is approximate. Exact search over a million
1024-d vectors reads 4 GB per query, while the approximate index reads a few
lists of 128-byte codes. The flat file is memory-mapped when read, so opening a
million-vector index reads only the approximate index (about 150 MB). Above
``PREAD_MIN_BYTES``, re-ranking reads the candidates' rows from the flat file with
``pread`` instead of through the mapping: the kernel may map a whole 2 MB page-cache
folio on each fault, which put most of a 4 GB file in the resident set after 200
queries. ``scripts/bench.py search`` measures
latency, recall and memory of this choice.
"""

from __future__ import annotations

import io
import json
import logging
import math
import os
import struct
import threading
import weakref
from pathlib import Path

import faiss
import numpy as np

from bindindex.errors import IndexStateError

log = logging.getLogger(__name__)

INDEX_TYPE = "IndexIDMap2(IndexFlatIP)"
# Above this many vectors searches go through the approximate index. At this size
# one exact query scans 200 MB of float32. On a shared 2-core AVX2 machine the
# benchmark measured 68 ms per exact query at 100,000 vectors, and 37 s to build
# the approximate index there.
EXACT_MAX_VECTORS = 50_000
# The approximate index is trained again once the collection has grown this many
# times past the size it was trained at, so its lists do not grow without bound.
RETRAIN_GROWTH = 4
# K-Means of the IVF lists trains on this many vectors per list. It is the minimum
# below which FAISS warns, and more points cost training time.
TRAIN_POINTS_PER_LIST = 40
# Candidates taken from the approximate index per requested result, re-ranked
# exactly; and lists probed per query, as a share of the list count. On the
# benchmark's clustered vectors, 200 candidates from 8 lists gave a recall@10 of
# 0.9995 at a million vectors (2,048 lists) but 0.91 at 100,000 (512 lists);
# 32 lists gave 1.0 and 0.97. 100 candidates from 8 lists gave 0.97 at a million.
CANDIDATES_PER_RESULT = 20
MIN_CANDIDATES = 200
NPROBE_FRACTION = 1 / 64
MIN_NPROBE = 32
# Written to the sidecar with the approximate index. An approximate index whose sidecar
# lacks it may have had ids removed with FAISS's remove_ids, which corrupts vectors added
# later (see VectorIndex.remove), so it is rebuilt.
ANN_VERSION = 2
# Flat vector files larger than this are re-ranked with pread instead of through the
# mapping. A pread costs a system call per row, 2 to 4 us each on the benchmark's virtual
# machine, while a mapped row costs nothing once touched. Below this size the mapping is
# faster, and even fully mapped the file stays small.
PREAD_MIN_BYTES = 1 << 30
# FAISS fast-scan search implementation 15 splits each query's probed lists over the
# threads. The default choice runs a single query on one thread. On 2 cores at a
# million vectors, implementation 15 took 0.77 ms per single query instead of 1.17 ms,
# and 0.29 ms per query in batches instead of 0.35 ms (faiss-cpu 1.15.1).
# NOTE: the threads' results are merged in completion order, so candidates with equal
# 4-bit scores at the cut can differ between runs of one query. On the benchmark's
# million vectors every top 10 was identical over three runs. On 300,000 vectors made
# of 500 tight near-duplicate groups, 10 of 300 top-5 lists differed, among items whose
# cosines differed by less than 1e-4. The default implementation gave identical lists.
FAST_SCAN_IMPLEM = 15

# IO_FLAG_MMAP_IFC maps the vectors of a flat index in place, so opening it reads
# nothing and a search process holds only the pages it touches. With IO_FLAG_MMAP
# alone, faiss-cpu 1.15.1 copies a flat index into memory (4 GB at a million
# vectors). Releases without IO_FLAG_MMAP_IFC fall back to that copy.
_FLAT_MMAP_FLAGS = getattr(faiss, "IO_FLAG_MMAP_IFC", faiss.IO_FLAG_MMAP | faiss.IO_FLAG_READ_ONLY)


def normalise(x: np.ndarray) -> np.ndarray:
    """Return rows of ``x`` (n, d) scaled to unit length, as contiguous float32.

    Rows of zero length stay zero, so they score 0 against every query instead
    of producing NaN.
    """
    x = np.ascontiguousarray(x, dtype=np.float32)
    norms = row_norms(x)[:, None]  # (n, 1) float64
    norms[norms == 0] = 1.0
    return np.ascontiguousarray(x / norms, dtype=np.float32)


def row_norms(x: np.ndarray) -> np.ndarray:
    """Return the Euclidean length of each row of ``x`` (n, d) as float64 (n,).

    The float32 sum of squares overflows for entries above about 1.8e19 and
    underflows below about 1e-23, which would make a valid vector look zero.
    Rows where that can happen are measured again in float64.
    """
    with np.errstate(over="ignore", under="ignore"):
        norms = np.linalg.norm(x, axis=1).astype(np.float64)  # (n,)
    unsafe = ~np.isfinite(norms) | (norms < _SAFE_NORM)
    if unsafe.any():
        exact = np.asarray(x[unsafe], dtype=np.float64)
        # Scaling by the largest entry keeps the squares in range.
        scale = np.abs(exact).max(axis=1)
        scale[~np.isfinite(scale) | (scale == 0)] = 1.0
        norms[unsafe] = scale * np.linalg.norm(exact / scale[:, None], axis=1)
    return norms


# Below this float32 length, squares of the entries may have underflowed.
_SAFE_NORM = 1e-15


def ivf_list_count(n: int) -> int:
    """Return the IVF list count for ``n`` vectors: about 2 * sqrt(n), a power of two."""
    return int(2 ** round(math.log2(max(16.0, 2 * math.sqrt(n)))))


def build_ann(dim: int, ids: np.ndarray, unit: np.ndarray, *, seed: int = 0) -> faiss.IndexIVF:
    """Train the approximate index on a sample of ``unit`` (n, dim) and add all rows.

    ``unit`` may be memory-mapped: it is read in chunks, and only the training
    sample is copied whole.
    """
    n = len(unit)
    nlist = ivf_list_count(n)
    # 4-bit codes for every 4 dimensions: 128 bytes per 1024-d vector (float32: 4 KiB).
    subquantizers = dim
    if dim % 4 == 0:
        subquantizers = dim // 4
    elif dim % 2 == 0:
        subquantizers = dim // 2
    quantizer = faiss.IndexFlatIP(dim)
    index = faiss.IndexIVFPQFastScan(
        quantizer, dim, nlist, subquantizers, 4, faiss.METRIC_INNER_PRODUCT
    )
    train_n = min(n, nlist * TRAIN_POINTS_PER_LIST)
    rng = np.random.default_rng(seed)
    rows = np.sort(rng.choice(n, size=train_n, replace=False))
    sample = np.ascontiguousarray(unit[rows], dtype=np.float32)

    # The lists' K-Means runs first, on all threads. A quantizer that already contains
    # nlist centroids makes index.train() skip it and train only the product quantizer.
    clustering = faiss.Clustering(dim, nlist)
    clustering.seed = seed
    clustering.spherical = True
    clustering.max_points_per_centroid = TRAIN_POINTS_PER_LIST
    clustering.train(sample, quantizer)
    # The product quantizer is hundreds of K-Means runs on 4-d slices, each too small
    # to share: with two OpenMP threads on a busy 2-core machine, their thread
    # synchronisation took 170 s of a 100,000-vector build. With one thread the whole
    # build took 37 s.
    threads = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    try:
        index.train(sample)
    finally:
        faiss.omp_set_num_threads(threads)
    chunk = 65_536
    for start in range(0, n, chunk):
        block = np.ascontiguousarray(unit[start : start + chunk], dtype=np.float32)
        index.add_with_ids(block, np.ascontiguousarray(ids[start : start + chunk], dtype=np.int64))
    index.nprobe = max(MIN_NPROBE, int(nlist * NPROBE_FRACTION))
    _set_search_options(index)
    log.info("built an approximate index of %d vectors in %d lists", n, nlist)
    return index


# The start of a file written by faiss.write_index for IndexIDMap2(IndexFlatIP): each
# index's four-byte tag and header (d, ntotal, two unused int64, is_trained,
# metric_type), then the count of floats in the flat vectors, then the vectors.
_IDMAP_TAG = b"IxM2"
_FLAT_TAG = b"IxFI"
_HEADER = struct.Struct("<iqqq?i")
_FLOAT_COUNT = struct.Struct("<Q")
_ROWS_OFFSET = 2 * (len(_IDMAP_TAG) + _HEADER.size) + _FLOAT_COUNT.size


class _SlotLookup:
    """Positions (slots) of item ids in a flat index's rows, from its id map."""

    def __init__(self, id_map: np.ndarray):
        self._order = np.argsort(id_map, kind="stable")
        self._sorted_ids = id_map[self._order]

    def find(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Return the slot of each id and whether the id is in the map.

        The slot returned for a missing id is meaningless.
        """
        if len(self._sorted_ids) == 0:
            return np.zeros(len(ids), dtype=np.int64), np.zeros(len(ids), dtype=bool)
        positions = np.searchsorted(self._sorted_ids, ids)
        positions = np.minimum(positions, len(self._sorted_ids) - 1)
        return self._order[positions], self._sorted_ids[positions] == ids


class _RowReader:
    """Reader of rows of a saved flat index by item id, with ``pread`` on an open file.

    ``VectorIndex.load`` opens the file before FAISS maps it and checks that both are
    the same file. A writer replaces the file by rename, so the open descriptor keeps
    reading the vectors that were mapped.
    """

    def __init__(self, handle: io.FileIO, offset: int, dim: int, id_map: np.ndarray):
        self._handle = handle
        # Closed when the reader is garbage collected, not earlier: a search in
        # another thread may still be reading, and a closed descriptor number can be
        # reused for another file.
        weakref.finalize(self, handle.close)
        self._offset = offset
        self._row_bytes = dim * 4
        self._dim = dim
        self._slots = _SlotLookup(id_map)
        # Each thread reuses one buffer for its queries, so concurrent searches never
        # share one and a query allocates nothing.
        self._local = threading.local()

    @classmethod
    def open(cls, handle: io.FileIO, index: faiss.IndexIDMap2) -> _RowReader | None:
        """Return a reader of ``handle``'s file, or None if its layout is not the expected one.

        The header must describe ``index``, and the first and last rows must equal
        the mapped ones.
        """
        flat = faiss.downcast_index(index.index)
        dim, ntotal = int(index.d), int(index.ntotal)
        head = os.pread(handle.fileno(), _ROWS_OFFSET, 0)
        if ntotal == 0 or not isinstance(flat, faiss.IndexFlatIP) or len(head) < _ROWS_OFFSET:
            return None
        tags = (head[:4], head[4 + _HEADER.size : 8 + _HEADER.size])
        headers = (
            _HEADER.unpack_from(head, len(_IDMAP_TAG)),
            _HEADER.unpack_from(head, 2 * len(_IDMAP_TAG) + _HEADER.size),
        )
        (floats,) = _FLOAT_COUNT.unpack_from(head, _ROWS_OFFSET - _FLOAT_COUNT.size)
        if tags != (_IDMAP_TAG, _FLAT_TAG) or floats != ntotal * dim:
            return None
        if any(header[:2] != (dim, ntotal) for header in headers):
            return None
        mapped = faiss.rev_swig_ptr(flat.get_xb(), ntotal * dim).reshape(ntotal, dim)
        row_bytes = dim * 4
        for slot in (0, ntotal - 1):
            stored = os.pread(handle.fileno(), row_bytes, _ROWS_OFFSET + slot * row_bytes)
            if stored != mapped[slot].tobytes():
                return None
        id_map = faiss.vector_to_array(index.id_map).astype(np.int64)
        return cls(handle, _ROWS_OFFSET, dim, id_map)

    def read(self, ids: np.ndarray) -> np.ndarray:
        """Return the rows of ``ids`` (n, dim), which must all be in the index.

        The array is this thread's buffer and is overwritten by its next call.
        """
        slots, found = self._slots.find(ids)
        if not found.all():
            missing = ids[~found]
            raise IndexStateError(
                f"vector file {self._handle.name} has no rows for ids {missing[:5].tolist()} "
                "that its approximate index proposed; delete the file to have it rebuilt"
            )
        buffer = getattr(self._local, "buffer", None)
        if buffer is None or len(buffer) < len(ids):
            buffer = np.empty((max(len(ids), MIN_CANDIDATES), self._dim), dtype=np.float32)
            self._local.buffer = buffer
            self._local.views = [row.data.cast("B") for row in buffer]
        views = self._local.views
        fd = self._handle.fileno()
        for view, slot in zip(views, slots.tolist(), strict=False):
            if os.preadv(fd, [view], self._offset + slot * self._row_bytes) != self._row_bytes:
                raise IndexStateError(
                    f"vector file {self._handle.name} ended before row {slot}; "
                    "it was truncated while open. Run the command again to rebuild it"
                )
        return buffer[: len(ids)]


class VectorIndex:
    """Inner-product search over unit vectors (so scores are cosines).

    ``index`` contains every vector for exact search and re-ranking. ``ann`` is the
    approximate candidate index, present above ``EXACT_MAX_VECTORS`` vectors. An
    index read from disk is memory-mapped and read-only until its first change,
    which reads it into memory.
    """

    def __init__(self, dim: int):
        self.dim = dim
        self.index: faiss.Index = faiss.IndexIDMap2(faiss.IndexFlatIP(dim))
        self.ann: faiss.IndexIVF | None = None
        # The number of vectors the approximate index was trained on.
        self.ann_trained_n = 0
        # True when vectors were removed since the approximate index's lists were last
        # filled. They are refilled from the flat index before the next search or save.
        self._ann_stale = False
        # The file the index was memory-mapped from; None once it is writable.
        self._mapped_from: Path | None = None
        # The catalog generation of the file it was loaded from; None when built.
        self.generation: int | None = None
        # Reader of re-ranking rows from that file. None when the index is not mapped
        # or has no approximate index.
        self._rows: _RowReader | None = None

    @classmethod
    def build(cls, dim: int, ids: np.ndarray, unit: np.ndarray) -> VectorIndex:
        """Return an index over ``unit`` (n, dim), with the approximate index where n is large."""
        built = cls(dim)
        ids = np.asarray(ids, dtype=np.int64)
        chunk = 65_536
        for start in range(0, len(ids), chunk):
            block = np.ascontiguousarray(unit[start : start + chunk], dtype=np.float32)
            built.index.add_with_ids(block, ids[start : start + chunk])
        if len(ids) > EXACT_MAX_VECTORS:
            built._train_ann()
        return built

    @property
    def ntotal(self) -> int:
        return int(self.index.ntotal)

    @property
    def index_type(self) -> str:
        """The FAISS structures in use, for ``info``."""
        if self.ann is None:
            return INDEX_TYPE
        return (
            f"{INDEX_TYPE} re-ranking IndexIVFPQFastScan "
            f"(nlist={self.ann.nlist}, nprobe={self.ann.nprobe})"
        )

    def add(self, ids: np.ndarray, unit: np.ndarray) -> None:
        if len(ids) == 0:
            return
        unit = np.ascontiguousarray(unit, dtype=np.float32)
        if unit.ndim != 2 or unit.shape[1] != self.dim:
            raise IndexStateError(
                f"vectors of shape {unit.shape} do not fit an index of dimension {self.dim}"
            )
        ids = np.ascontiguousarray(ids, dtype=np.int64)
        self._make_writable()
        # Replacing a vector means removing the old one first: IndexIDMap2
        # would otherwise keep both under the same id.
        self.remove(ids)
        self.index.add_with_ids(unit, ids)
        if self.ann is not None and self.ntotal <= RETRAIN_GROWTH * self.ann_trained_n:
            if not self._ann_stale:  # a stale index is refilled with these rows later
                self.ann.add_with_ids(unit, ids)
        elif self.ntotal > EXACT_MAX_VECTORS:
            self._train_ann()

    def remove(self, ids: np.ndarray) -> int:
        if len(ids) == 0 or self.ntotal == 0:
            return 0
        self._make_writable()
        selector = faiss.IDSelectorBatch(np.ascontiguousarray(ids, dtype=np.int64))
        removed = int(self.index.remove_ids(selector))
        # After remove_ids on a FAISS fast-scan index, vectors added later are often not
        # found by their own vector: 30 % in one test and 80 % in another (faiss-cpu
        # 1.15.1). Removed 4-bit codes seem to stay in the packed blocks and mix with the
        # new ones. So the lists are refilled instead.
        if self.ann is not None and removed:
            self._ann_stale = True
        return removed

    def ids(self) -> np.ndarray:
        return faiss.vector_to_array(self.index.id_map).astype(np.int64)

    def differing_ids(
        self, ids: np.ndarray, vectors: np.ndarray, *, atol: float = 1e-5, chunk: int = 65_536
    ) -> np.ndarray:
        """Return the ids whose stored row differs from their normalised row of ``vectors``.

        A row differs when a component is more than ``atol`` away or not finite. Every id
        must be in the index. Rows are compared in file order, so a memory-mapped index
        is read once from start to end, and ``vectors`` is normalised a chunk at a time.
        """
        ids = np.asarray(ids, dtype=np.int64)
        flat = faiss.downcast_index(self.index.index)
        stored = faiss.rev_swig_ptr(flat.get_xb(), self.ntotal * self.dim).reshape(-1, self.dim)
        id_map = self.ids()
        slots, _ = _SlotLookup(id_map).find(ids)
        by_slot = np.argsort(slots, kind="stable")
        differing = []
        for start in range(0, len(ids), chunk):
            rows = by_slot[start : start + chunk]
            gap = np.abs(stored[slots[rows]] - normalise(vectors[rows])).max(axis=1)
            differing.append(ids[rows][~(gap <= atol)])  # NaN counts as differing
        if not differing:
            return np.empty(0, dtype=np.int64)
        return np.sort(np.concatenate(differing))

    def search(
        self, xq: np.ndarray, k: int, allowed_ids: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Return (D, I), each (nq, k): cosine scores and item ids, -1 where fewer exist."""
        xq = np.ascontiguousarray(xq, dtype=np.float32)
        if self.ntotal == 0 or k <= 0:
            return (
                np.zeros((len(xq), max(k, 0)), dtype=np.float32),
                np.full((len(xq), max(k, 0)), -1, dtype=np.int64),
            )
        selector = (
            None
            if allowed_ids is None
            else faiss.IDSelectorBatch(np.ascontiguousarray(allowed_ids, dtype=np.int64))
        )
        if self.ann is None:
            if selector is None:
                return self.index.search(xq, k)
            return self.index.search(xq, k, params=faiss.SearchParameters(sel=selector))
        if self._ann_stale:
            self._refill_ann()
        return self._search_ann(xq, k, selector)

    def _search_ann(
        self, xq: np.ndarray, k: int, selector: faiss.IDSelector | None
    ) -> tuple[np.ndarray, np.ndarray]:
        assert self.ann is not None
        params = faiss.SearchParametersIVF(nprobe=self.ann.nprobe)
        if selector is not None:
            params.sel = selector
        candidates = max(MIN_CANDIDATES, CANDIDATES_PER_RESULT * k)
        _, found = self.ann.search(xq, candidates, params=params)  # (nq, candidates)
        scores = np.zeros((len(xq), k), dtype=np.float32)
        ids = np.full((len(xq), k), -1, dtype=np.int64)
        rows = self._rows  # one reader for the whole batch of queries
        for row, (query, proposed) in enumerate(zip(xq, found, strict=True)):
            proposed = proposed[proposed >= 0]
            if len(proposed) == 0:
                continue
            if rows is not None:
                vectors = rows.read(proposed)  # (candidates, d)
            else:
                vectors = self.index.reconstruct_batch(proposed)
            exact = vectors @ query  # (candidates,)
            order = np.argsort(-exact, kind="stable")[:k]
            scores[row, : len(order)] = exact[order]
            ids[row, : len(order)] = proposed[order]
        return scores, ids

    def _refill_ann(self) -> None:
        """Empty the approximate index's lists and add every flat vector again, keeping its training."""
        assert self.ann is not None
        self._make_writable()
        flat = faiss.downcast_index(self.index.index)
        unit = faiss.rev_swig_ptr(flat.get_xb(), self.ntotal * self.dim).reshape(-1, self.dim)
        ids = self.ids()
        self.ann.reset()
        chunk = 65_536
        for start in range(0, len(ids), chunk):
            self.ann.add_with_ids(
                np.ascontiguousarray(unit[start : start + chunk]),
                np.ascontiguousarray(ids[start : start + chunk]),
            )
        self._ann_stale = False
        log.info("refilled the approximate index with %d vectors", self.ntotal)

    def _train_ann(self) -> None:
        ids = self.ids()
        flat = faiss.downcast_index(self.index.index)
        unit = faiss.rev_swig_ptr(flat.get_xb(), self.ntotal * self.dim).reshape(-1, self.dim)
        log.info("training the approximate index at %d vectors", self.ntotal)
        self.ann = build_ann(self.dim, ids, unit)
        self.ann_trained_n = self.ntotal
        self._ann_stale = False

    def _make_writable(self) -> None:
        if self._mapped_from is None:
            return
        # A memory-mapped index cannot change, so the files are read into memory once.
        self.index = faiss.read_index(str(self._mapped_from))
        if self.ann is not None:
            self.ann = faiss.read_index(str(_ann_path(self._mapped_from)))
            _set_search_options(self.ann)
        self._mapped_from = None
        self._rows = None

    # -- persistence ------------------------------------------------------------

    def save(self, path: Path, generation: int) -> None:
        """Write the index files and then their generation sidecar, each by atomic rename.

        The sidecar is written last, so a crash in between leaves a stale stamp
        and the next load rebuilds instead of trusting a mixed pair of files. An
        index unchanged since it was mapped from ``path`` gets only a new sidecar:
        its files already contain these vectors, so a re-run that changed nothing
        does not rewrite gigabytes.
        """
        if self.ann is not None and self._ann_stale:
            self._refill_ann()
        if self._mapped_from != path:
            self._make_writable()
            if self.ann is not None:
                _write_atomic(self.ann, _ann_path(path))
            _write_atomic(self.index, path)
        sidecar = _sidecar(path)
        tmp_sidecar = sidecar.with_name(sidecar.name + ".tmp")
        stamp = {
            "generation": generation,
            "ntotal": self.ntotal,
            "ann_ntotal": None if self.ann is None else int(self.ann.ntotal),
            "ann_trained_n": self.ann_trained_n,
            "ann_version": ANN_VERSION,
        }
        tmp_sidecar.write_text(json.dumps(stamp))
        os.replace(tmp_sidecar, sidecar)
        if self.ann is None:
            _ann_path(path).unlink(missing_ok=True)

    @classmethod
    def load(cls, path: Path, dim: int, generation: int | None) -> VectorIndex | None:
        """Return the saved index, or None when it is missing, stale or unreadable.

        With ``generation`` None, a file saved at any generation is returned, and the
        result's ``generation`` is the file's own.
        """
        # The file is opened before FAISS maps the path, see _RowReader.
        try:
            handle = open(path, "rb", buffering=0)  # noqa: SIM115 - kept by the reader
        except FileNotFoundError:
            return None
        except OSError as exc:
            log.warning("vector index %s is unreadable (%s); it will be rebuilt", path, exc)
            return None
        loaded = None
        try:
            loaded = cls._load_mapped(path, dim, generation, handle)
        finally:
            if loaded is None or loaded._rows is None:
                handle.close()
        return loaded

    @classmethod
    def _load_mapped(
        cls, path: Path, dim: int, generation: int | None, handle: io.FileIO
    ) -> VectorIndex | None:
        sidecar = _sidecar(path)
        try:
            stamp = json.loads(sidecar.read_text())
            index = faiss.read_index(str(path), _FLAT_MMAP_FLAGS)
            ann = (
                None
                if stamp.get("ann_ntotal") is None
                else faiss.read_index(
                    str(_ann_path(path)), faiss.IO_FLAG_MMAP | faiss.IO_FLAG_READ_ONLY
                )
            )
        except FileNotFoundError:
            return None
        except (OSError, RuntimeError, ValueError, AttributeError) as exc:
            log.warning("vector index %s is unreadable (%s); it will be rebuilt", path, exc)
            return None
        stale = generation is not None and stamp.get("generation") != generation
        if stale or index.d != dim:
            log.info(
                "vector index %s is stale (generation %s, catalog %s)",
                path,
                stamp.get("generation"),
                generation,
            )
            return None
        ann_ntotal = None if ann is None else ann.ntotal
        if (
            stamp.get("ntotal") != index.ntotal
            or stamp.get("ann_ntotal") != ann_ntotal
            or not isinstance(index, faiss.IndexIDMap2)
            or (ann is not None and not isinstance(ann, faiss.IndexIVF))
        ):
            log.warning(
                "vector index %s contains %d vectors (approximate index: %s), but its sidecar "
                "records %s",
                path,
                index.ntotal,
                ann_ntotal,
                stamp,
            )
            return None
        if ann is not None and stamp.get("ann_version") != ANN_VERSION:
            log.info(
                "the approximate index of %s was written by an earlier version; it will be rebuilt",
                path,
            )
            return None
        loaded = cls(dim)
        loaded.index = index
        loaded.ann = ann
        if ann is not None:
            _set_search_options(ann)
        loaded.ann_trained_n = int(stamp.get("ann_trained_n") or 0)
        loaded.generation = stamp.get("generation")
        loaded._mapped_from = path
        large = index.ntotal * index.d * 4 > PREAD_MIN_BYTES
        if ann is not None and large and _same_file(handle, path):
            loaded._rows = _RowReader.open(handle, index)
            if loaded._rows is None:
                log.info("vector index %s re-ranks through its memory mapping", path)
        return loaded


def _set_search_options(ann: faiss.IndexIVF) -> None:
    # Search options are not saved in the file, so they are set after every read.
    if isinstance(ann, faiss.IndexIVFFastScan):
        ann.implem = FAST_SCAN_IMPLEM


def _same_file(handle: io.FileIO, path: Path) -> bool:
    try:
        now = path.stat()
    except OSError:
        return False
    opened = os.fstat(handle.fileno())
    return (opened.st_dev, opened.st_ino) == (now.st_dev, now.st_ino)


def _write_atomic(index: faiss.Index, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    faiss.write_index(index, str(tmp))
    os.replace(tmp, path)


def _sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".json")


def _ann_path(path: Path) -> Path:
    return path.with_name(path.name + ".ann")
