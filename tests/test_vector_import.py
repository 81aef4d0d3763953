"""Importing precomputed embeddings from .npy files."""

from __future__ import annotations

import json
import pickle
import re
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from bindindex.cli.app import app
from bindindex.errors import UsageError
from bindindex.search import QueryTerm
from bindindex.store.vectors import normalise

# The case files hold 1024-dimensional rows, the size of ImageBind's joint space.
DIM = 1024


@pytest.fixture()
def wide_encoder(fake_encoder):
    return type(fake_encoder)(dim=DIM)


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


def _label(hit_path: str) -> str:
    return hit_path.rsplit("#", 1)[1]


def _neighbours(idx, ids: list[int]) -> list[list[tuple[str, float]]]:
    """For each item, its neighbours as (row label, score)."""
    return [
        [(_label(h.path), round(h.score, 5)) for h in idx.search([QueryTerm("item", str(i))], k=5)]
        for i in ids
    ]


def test_float64_rows_are_stored_as_float32(open_fake_index, wide_encoder, cases: Path) -> None:
    source = cases / "28_embeddings_float64_10x1024.npy"
    idx = open_fake_index(encoder=wide_encoder)
    report = idx.import_vectors(source, modality="image")
    assert (report.imported, report.failed) == (10, 0)

    ids, raw = idx.catalog.vectors(DIM)
    assert raw.dtype == np.float32
    assert raw.flags.c_contiguous
    expected = np.load(source).astype(np.float32)
    order = np.argsort(ids)
    np.testing.assert_array_equal(raw[order], expected)
    assert idx.vectors().ntotal == 10

    hits = idx.search([QueryTerm("item", str(report.ids[3]))], k=9)
    unit = normalise(expected)
    scores = unit @ unit[3]
    best = [str(i) for i in np.argsort(-scores) if i != 3]
    assert [_label(h.path) for h in hits] == best
    row = idx.catalog.item(report.ids[3])
    assert row is not None
    assert row.modality == "image"
    assert "imported" in row.flags


def test_fortran_order_searches_like_c_order(
    open_fake_index, wide_encoder, cases: Path, tmp_path: Path
) -> None:
    fortran = cases / "29_embeddings_fortran_order_10x1024.npy"
    assert np.load(fortran).flags.f_contiguous
    c_copy = tmp_path / "c_order.npy"
    np.save(c_copy, np.ascontiguousarray(np.load(fortran)))

    a = open_fake_index(tmp_path / "a", encoder=wide_encoder)
    b = open_fake_index(tmp_path / "b", encoder=wide_encoder)
    ids_a = a.import_vectors(fortran, modality="audio").ids
    ids_b = b.import_vectors(c_copy, modality="audio").ids
    assert _neighbours(a, ids_a) == _neighbours(b, ids_b)


def test_bad_rows_fail_and_others_import(open_fake_index, wide_encoder, tmp_path: Path) -> None:
    rows = np.random.default_rng(0).standard_normal((5, DIM))
    rows[1, 7] = np.nan
    rows[2] = 0.0
    rows[3, 0] = 1e300  # beyond float32: becomes inf
    source = tmp_path / "rows.npy"
    np.save(source, rows)
    idx = open_fake_index(encoder=wide_encoder)
    report = idx.import_vectors(source, modality="image")
    assert (report.imported, report.failed) == (2, 3)
    assert {f.reason for f in report.failures} == {"non_finite"}
    assert idx.vectors().ntotal == 2
    _, raw = idx.catalog.vectors(DIM)
    assert np.isfinite(raw).all()
    assert len(idx.failures()) == 3


def test_reimport_replaces_vectors_and_keeps_ids(
    open_fake_index, wide_encoder, tmp_path: Path
) -> None:
    rng = np.random.default_rng(1)
    source = tmp_path / "rows.npy"
    np.save(source, rng.standard_normal((4, DIM)).astype(np.float32))
    idx = open_fake_index(encoder=wide_encoder)
    first = idx.import_vectors(source, modality="audio", names=["a", "b", "c", "d"])

    changed = rng.standard_normal((4, DIM)).astype(np.float32)
    changed[2] = np.inf
    np.save(source, changed)
    second = idx.import_vectors(source, modality="audio", names=["a", "b", "c", "d"])
    assert (second.imported, second.replaced, second.failed) == (3, 3, 1)
    assert second.ids == [first.ids[0], first.ids[1], first.ids[3]]
    assert idx.vectors().ntotal == 3
    ids, raw = idx.catalog.vectors(DIM)
    by_id = dict(zip(ids.tolist(), raw, strict=True))
    np.testing.assert_array_equal(by_id[first.ids[0]], changed[0])
    assert first.ids[2] not in by_id
    report = idx.check(repair=False)
    assert report["items_without_vector"] == report["vectors_without_item"] == []
    assert report["vector_file"] == "ok"


def test_indexing_the_folder_keeps_imported_rows(
    open_fake_index, wide_encoder, tmp_path: Path, paired: Path
) -> None:
    folder = tmp_path / "media"
    folder.mkdir()
    image = next(paired.glob("dog/images/*.jpg"))
    (folder / image.name).write_bytes(image.read_bytes())
    np.save(folder / "extra.npy", np.random.default_rng(2).standard_normal((3, DIM)))
    idx = open_fake_index(encoder=wide_encoder)
    idx.import_vectors(folder / "extra.npy", modality="image")
    report = idx.add_paths([folder])
    assert (report.added, report.removed) == (1, 0)
    report = idx.add_paths([folder])
    assert report.removed == 0
    assert idx.vectors().ntotal == 4


@pytest.mark.parametrize(
    ("array", "message"),
    [
        (np.zeros((3, 16)), "16 dimensions"),
        (np.zeros((2, 3, DIM)), "shape (2, 3, 1024)"),
        (np.zeros(DIM), "shape (1024,)"),
        (np.array([["a"] * DIM]), "expected real numbers"),
    ],
    ids=["wrong-dim", "three-d", "one-d", "strings"],
)
def test_unusable_arrays_are_usage_errors(
    open_fake_index, wide_encoder, tmp_path: Path, array: np.ndarray, message: str
) -> None:
    source = tmp_path / "bad.npy"
    np.save(source, array)
    idx = open_fake_index(encoder=wide_encoder)
    with pytest.raises(UsageError, match=re.escape(message)):
        idx.import_vectors(source, modality="image")
    assert idx.catalog.items() == []


def test_pickled_and_non_npy_files_are_refused(
    open_fake_index, wide_encoder, tmp_path: Path
) -> None:
    objects = tmp_path / "objects.npy"
    np.save(objects, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    text = tmp_path / "text.npy"
    text.write_text("not an array")
    pickled = tmp_path / "pickled.npy"
    pickled.write_bytes(pickle.dumps([1.0] * DIM))
    idx = open_fake_index(encoder=wide_encoder)
    for source in (objects, text, pickled):
        with pytest.raises(UsageError, match=r"not a NumPy \.npy array file"):
            idx.import_vectors(source, modality="image")
    with pytest.raises(UsageError, match="vector file not found"):
        idx.import_vectors(tmp_path / "missing.npy", modality="image")


def test_names_and_modality_are_checked(open_fake_index, wide_encoder, cases: Path) -> None:
    source = cases / "28_embeddings_float64_10x1024.npy"
    idx = open_fake_index(encoder=wide_encoder)
    with pytest.raises(UsageError, match="3 names for 10 rows"):
        idx.import_vectors(source, modality="image", names=["a", "b", "c"])
    with pytest.raises(UsageError, match="not unique"):
        idx.import_vectors(source, modality="image", names=["a"] * 10)
    with pytest.raises(UsageError, match="unknown modality 'video'"):
        idx.import_vectors(source, modality="video")


@pytest.mark.parametrize(
    ("name", "k"), [("30_kmeans_5_points_1024.npy", 8), ("30b_kmeans_100_points_1024.npy", 40)]
)
def test_clustering_imported_points_clamps_or_warns(
    open_fake_index, wide_encoder, cases: Path, name: str, k: int
) -> None:
    idx = open_fake_index(encoder=wide_encoder)
    count = len(np.load(cases / name))
    idx.import_vectors(cases / name, modality="image")
    run_ = idx.cluster(k)
    assert run_.k == min(k, count)
    assert run_.warnings, "a clamped k or thin clusters must be reported"


def test_cli_import_with_names(tmp_path: Path, cases: Path) -> None:
    index = tmp_path / "index"
    names = tmp_path / "names.txt"
    names.write_text("\n".join(f"clip-{i}" for i in range(10)) + "\n", encoding="utf-8")
    source = cases / "28_embeddings_float64_10x1024.npy"
    code, out, err = run(
        "import", str(source), "--modality", "audio", "--names", str(names),
        "--index", str(index), "--model", "imagebind-test", "--json",
    )  # fmt: skip
    assert code == 0, err
    assert json.loads(out)["imported"] == 10
    code, out, err = run("search", "--index", str(index), "--text", "a dog", "--json", "-k", "3")
    assert code == 0, err
    assert "#clip-" in out

    code, _, err = run(
        "import", str(source), "--modality", "smell", "--index", str(index), "--model",
        "imagebind-test",
    )  # fmt: skip
    assert code == 2
    assert "unknown modality 'smell'" in err


@pytest.mark.parametrize("value", [1e30, 1e-30, 3e38])
def test_extreme_finite_rows_import_as_unit(
    open_fake_index, wide_encoder, tmp_path: Path, value: float
) -> None:
    source = tmp_path / "extreme.npy"
    rows = np.full((2, DIM), value, dtype=np.float32)
    rows[1, ::2] = -value
    np.save(source, rows)
    idx = open_fake_index(encoder=wide_encoder)
    report = idx.import_vectors(source, modality="image")
    assert report.failed == 0
    stored = np.stack([idx.vectors().index.reconstruct(i) for i in report.ids])
    np.testing.assert_allclose(np.linalg.norm(stored, axis=1), 1.0, rtol=1e-5)
    assert idx.check(repair=False)["non_finite_vectors"] == []
