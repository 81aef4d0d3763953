"""The Index facade over real files, real SQLite and real FAISS, with a fake encoder."""

from __future__ import annotations

import os
import shutil
import threading
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from conftest import FakeEncoder

from bindindex.errors import IndexBusyError, ModelMismatchError, NotFoundError, UsageError
from bindindex.index import VECTORS_FILE, Index
from bindindex.search import QueryTerm
from bindindex.store.vectors import normalise


@pytest.fixture
def media(tmp_path: Path, paired: Path) -> Path:
    """A writable copy of the paired corpus."""
    target = tmp_path / "media"
    shutil.copytree(paired, target)
    return target


def _count_files(folder: Path) -> int:
    return sum(1 for p in folder.rglob("*") if p.is_file())


def test_index_adds_every_paired_file(open_fake_index, media: Path) -> None:
    idx = open_fake_index()
    report = idx.add_paths([media])
    total = _count_files(media)
    assert report.added == total
    assert report.failed == 0
    assert idx.vectors().ntotal == total
    ids, raw = idx.catalog.vectors(idx.dim)
    assert len(ids) == total
    assert np.isfinite(raw).all()
    info = idx.info()
    assert info["items"]["indexed"]["image"] + info["items"]["indexed"]["audio"] == total
    assert info["meaningless"] is True


def test_reindex_unchanged_embeds_nothing(open_fake_index, media: Path, fake_encoder) -> None:
    idx = open_fake_index()
    idx.add_paths([media])
    before = dict(fake_encoder.calls)
    report = idx.add_paths([media])
    assert report.unchanged == _count_files(media)
    assert report.added == report.updated == report.removed == report.failed == 0
    assert fake_encoder.calls == before
    assert idx.vectors().ntotal == _count_files(media)


def test_deleted_file_disappears_from_search(open_fake_index, media: Path) -> None:
    idx = open_fake_index()
    idx.add_paths([media])
    victim = next(media.glob("dog/images/*.jpg"))
    victim_row = idx.catalog.item_by_path(os.fsencode(victim))
    assert victim_row is not None
    victim.unlink()
    report = idx.add_paths([media])
    assert report.removed == 1
    hits = idx.search([QueryTerm("image", str(next(media.glob("dog/images/*.jpg"))))], k=100)
    assert victim_row.id not in {hit.id for hit in hits}
    assert str(victim) not in {hit.path for hit in hits}
    idx.close()
    reopened = Index.open(idx.path, model="fake")
    reopened._encoder = FakeEncoder()
    hits = reopened.search([QueryTerm("text", "a dog")], k=100)
    assert victim_row.id not in {hit.id for hit in hits}
    reopened.close()


def test_changed_file_is_reembedded_with_same_id(open_fake_index, media: Path) -> None:
    idx = open_fake_index()
    idx.add_paths([media])
    target = next(media.glob("cat/images/*.jpg"))
    other = next(media.glob("car/images/*.jpg"))
    row = idx.catalog.item_by_path(os.fsencode(target))
    assert row is not None
    shutil.copyfile(other, target)
    report = idx.add_paths([media])
    assert report.updated == 1
    after = idx.catalog.item_by_path(os.fsencode(target))
    assert after is not None
    assert after.id == row.id
    assert after.content_hash != row.content_hash


def test_moved_file_keeps_its_vector(open_fake_index, media: Path, fake_encoder) -> None:
    idx = open_fake_index()
    idx.add_paths([media])
    source = next(media.glob("bird/audio/*"))
    row = idx.catalog.item_by_path(os.fsencode(source))
    assert row is not None
    destination = media / "bird" / "renamed" / source.name
    destination.parent.mkdir()
    source.rename(destination)
    before = dict(fake_encoder.calls)
    report = idx.add_paths([media])
    assert report.moved == 1
    assert report.removed == 0
    assert fake_encoder.calls == before
    moved = idx.catalog.item_by_path(os.fsencode(destination))
    assert moved is not None
    assert moved.id == row.id


def test_item_query_matches_brute_force(open_fake_index, media: Path) -> None:
    idx = open_fake_index()
    idx.add_paths([media])
    ids, raw = idx.catalog.vectors(idx.dim)
    unit = normalise(raw)
    query_id = int(ids[0])
    hits = idx.search([QueryTerm("item", str(query_id))], k=5)
    assert query_id not in {hit.id for hit in hits}
    expected = unit @ unit[0]
    order = [int(ids[i]) for i in np.argsort(-expected) if int(ids[i]) != query_id][:5]
    assert [hit.id for hit in hits] == order
    for hit in hits:
        assert hit.score == pytest.approx(float(expected[list(ids).index(hit.id)]), abs=1e-5)


def test_modality_filter(open_fake_index, media: Path) -> None:
    idx = open_fake_index()
    idx.add_paths([media])
    audio = next(media.glob("dog/audio/*.wav"))
    hits = idx.search([QueryTerm("audio", str(audio))], modality="image", k=3)
    assert len(hits) == 3
    assert {hit.modality for hit in hits} == {"image"}
    assert hits[0].score >= hits[1].score >= hits[2].score
    assert idx.search([QueryTerm("audio", str(audio))], modality="text", k=3) == []


def test_weighted_terms_combine_unit_vectors(open_fake_index, media: Path) -> None:
    idx = open_fake_index()
    idx.add_paths([media])
    ids, raw = idx.catalog.vectors(idx.dim)
    a, b = int(ids[0]), int(ids[1])
    unit = normalise(raw[:2])
    combined = normalise((0.25 * unit[0] + 0.75 * unit[1])[None])[0]
    hits = idx.search([QueryTerm("item", str(a), 0.25), QueryTerm("item", str(b), 0.75)], k=3)
    all_unit = normalise(raw)
    scores = {int(i): float(s) for i, s in zip(ids, all_unit @ combined, strict=True)}
    for hit in hits:
        assert hit.score == pytest.approx(scores[hit.id], abs=1e-5)


def test_cancelling_weights_are_rejected(open_fake_index, media: Path) -> None:
    idx = open_fake_index()
    idx.add_paths([media])
    item = str(int(idx.catalog.vectors(idx.dim)[0][0]))
    with pytest.raises(UsageError, match="cancel out"):
        idx.search([QueryTerm("item", item, 1.0), QueryTerm("item", item, -1.0)])


@pytest.mark.parametrize("text", ["", "   ", "\n"])
def test_blank_text_query_is_rejected(open_fake_index, media: Path, text: str) -> None:
    idx = open_fake_index()
    idx.add_paths([media])
    with pytest.raises(UsageError, match="empty --text query"):
        idx.search([QueryTerm("text", text)])


def test_item_id_as_int_or_string(open_fake_index, media: Path) -> None:
    idx = open_fake_index()
    idx.add_paths([media])
    item_id = int(idx.catalog.vectors(idx.dim)[0][0])

    by_int = idx.search([QueryTerm("item", item_id)], k=3)

    assert by_int == idx.search([QueryTerm("item", str(item_id))], k=3)
    assert item_id not in [hit.id for hit in by_int]


def test_unknown_item_query(open_fake_index, media: Path) -> None:
    idx = open_fake_index()
    idx.add_paths([media])
    with pytest.raises(NotFoundError, match="item 99999"):
        idx.search([QueryTerm("item", "99999")])


def test_other_model_is_refused(open_fake_index, media: Path, tmp_path: Path) -> None:
    idx = open_fake_index()
    idx.add_paths([media / "dog"])
    idx.close()
    other = open_fake_index(tmp_path / "index", FakeEncoder(model_id="fake@2"))
    with pytest.raises(ModelMismatchError, match="fake@1"):
        other.add_paths([media / "cat"])
    with pytest.raises(ModelMismatchError):
        other.search([QueryTerm("text", "a cat")])


def test_second_writer_gets_busy_error(open_fake_index, media: Path, tmp_path: Path) -> None:
    first = open_fake_index()
    assert first._try_lock()
    second = open_fake_index(tmp_path / "index")
    with pytest.raises(IndexBusyError, match=f"process {os.getpid()}"):
        second.add_paths([media])
    first._release_lock()
    assert second.add_paths([media / "dog"]).added > 0


def test_writer_waits_out_a_short_lock(open_fake_index, media: Path, tmp_path: Path) -> None:
    first = open_fake_index()
    assert first._try_lock()
    releaser = threading.Timer(0.1, first._release_lock)
    releaser.start()
    second = open_fake_index(tmp_path / "index")

    assert second.add_paths([media / "dog"]).added > 0
    releaser.join()


def test_reader_keeps_vectors_while_writer_saves(
    open_fake_index, media: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    writer = open_fake_index()
    writer.add_paths([media / "dog"])
    reader = open_fake_index(tmp_path / "index")
    before = reader.vectors().ntotal
    writer.add_paths([media / "dog", media / "cat"])
    after = writer.vectors().ntotal
    assert after > before

    # As between a writer's catalog commit and its file save: the lock is held.
    assert writer._try_lock()

    def no_rebuild() -> None:
        raise AssertionError("a reader rebuilt the index while a writer held the lock")

    monkeypatch.setattr(reader, "_rebuild_vectors", no_rebuild)
    reader.refresh()
    assert reader.vectors().ntotal == before
    assert reader.search([QueryTerm("text", "dog")], k=3)

    writer._release_lock()
    reader.refresh()
    assert reader.vectors().ntotal == after


def test_new_reader_uses_last_saved_file_during_write(
    open_fake_index, media: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    writer = open_fake_index()
    writer.add_paths([media / "dog"])
    saved = {
        name: (writer.path / name).read_bytes() for name in (VECTORS_FILE, VECTORS_FILE + ".json")
    }
    before = writer.vectors().ntotal
    writer.add_paths([media / "dog", media / "cat"])
    after = writer.vectors().ntotal
    # The state between a writer's catalog commit and its file save: the catalog is
    # ahead of the file, and the writer holds the lock.
    for name, data in saved.items():
        (writer.path / name).write_bytes(data)
    assert writer._try_lock()
    reader = open_fake_index(tmp_path / "index")
    real_rebuild = reader._rebuild_vectors

    def no_rebuild() -> None:
        raise AssertionError("a reader rebuilt the index while a writer held the lock")

    monkeypatch.setattr(reader, "_rebuild_vectors", no_rebuild)
    assert reader.vectors().ntotal == before
    assert reader.search([QueryTerm("text", "dog")], k=3)

    writer._release_lock()
    monkeypatch.setattr(reader, "_rebuild_vectors", real_rebuild)
    reader.refresh()
    assert reader.vectors().ntotal == after


def test_missing_vector_file_is_rebuilt(open_fake_index, media: Path) -> None:
    idx = open_fake_index()
    idx.add_paths([media])
    expected = idx.search([QueryTerm("text", "thunder")], k=5)
    idx.close()
    (idx.path / VECTORS_FILE).unlink()
    reopened = open_fake_index(idx.path)
    assert reopened.search([QueryTerm("text", "thunder")], k=5) == expected
    assert (idx.path / VECTORS_FILE).exists()


def test_stale_vector_file_is_rebuilt(open_fake_index, media: Path, tmp_path: Path) -> None:
    idx = open_fake_index()
    idx.add_paths([media / "dog"])
    stale = tmp_path / "stale.faiss"
    shutil.copyfile(idx.path / VECTORS_FILE, stale)
    shutil.copyfile(idx.path / (VECTORS_FILE + ".json"), tmp_path / "stale.faiss.json")
    idx.add_paths([media / "dog", media / "cat"])
    total = idx.vectors().ntotal
    idx.close()
    shutil.copyfile(stale, idx.path / VECTORS_FILE)
    shutil.copyfile(tmp_path / "stale.faiss.json", idx.path / (VECTORS_FILE + ".json"))
    reopened = open_fake_index(idx.path)
    assert reopened.vectors().ntotal == total


@pytest.mark.parametrize("batch_size", [1, 2, 3, 8])
def test_bad_file_in_batch_does_not_shift_neighbours(
    open_fake_index, paired: Path, tmp_path: Path, batch_size: int
) -> None:
    images = sorted((paired / "dog" / "images").glob("*"))[:2]
    sounds = sorted((paired / "dog" / "audio").glob("*"))[:2]
    folder = tmp_path / "batch"
    folder.mkdir()
    shutil.copyfile(images[0], folder / "a.jpg")
    (folder / "b.jpg").write_text("<html>not an image</html>")
    shutil.copyfile(images[1], folder / "c.jpg")
    shutil.copyfile(sounds[0], folder / f"d{sounds[0].suffix}")
    (folder / "e.wav").write_bytes(b"RIFF\x10\x00\x00\x00WAVEjunkjunkjunk")
    shutil.copyfile(sounds[1], folder / f"f{sounds[1].suffix}")
    idx = open_fake_index()
    report = idx.add_paths([folder], batch_size=batch_size)
    assert report.added == 4
    assert sorted(Path(f.path).name for f in report.failures) == ["b.jpg", "e.wav"]

    good = ["a.jpg", "c.jpg", f"d{sounds[0].suffix}", f"f{sounds[1].suffix}"]
    alone = open_fake_index(tmp_path / "alone")
    alone.add_paths([folder / name for name in good], batch_size=1)
    for name in good:
        row = idx.catalog.item_by_path(os.fsencode(folder / name))
        row_alone = alone.catalog.item_by_path(os.fsencode(folder / name))
        assert row is not None
        assert row_alone is not None
        assert (row.width, row.height, row.duration_s, row.content_hash) == (
            row_alone.width, row_alone.height, row_alone.duration_s, row_alone.content_hash
        )  # fmt: skip
        np.testing.assert_allclose(
            idx.catalog.vectors(idx.dim, [row.id])[1],
            alone.catalog.vectors(alone.dim, [row_alone.id])[1],
            rtol=1e-5,
            atol=1e-4,  # batched matrix products round differently near zero
        )


def test_non_media_files_are_ignored(open_fake_index, tmp_path: Path, paired: Path) -> None:
    folder = tmp_path / "mixed"
    folder.mkdir()
    (folder / "notes.txt").write_text("hello")
    (folder / "fake.wav").write_text("plain text with an audio name")
    shutil.copyfile(next((paired / "dog" / "images").glob("*")), folder / "dog.jpg")
    idx = open_fake_index()
    report = idx.add_paths([folder])
    assert report.added == 1
    assert report.ignored == 1
    assert report.failed == 1
    assert [f.reason for f in idx.failures()] == ["undecodable"]


def test_export_npz_and_parquet(open_fake_index, media: Path, tmp_path: Path) -> None:
    idx = open_fake_index()
    idx.add_paths([media / "dog"])
    count = idx.export(tmp_path / "out.npz")
    data = np.load(tmp_path / "out.npz")
    assert len(data["ids"]) == count == _count_files(media / "dog")
    np.testing.assert_allclose(np.linalg.norm(data["vectors"], axis=1), 1.0, rtol=1e-5)
    assert set(data["modalities"].tolist()) == {"image", "audio"}
    idx.export(tmp_path / "out.parquet")
    table = pq.read_table(tmp_path / "out.parquet")
    assert table.num_rows == count
    assert table.column_names == ["id", "path", "path_bytes", "modality", "vector", "raw"]
    with pytest.raises(UsageError, match=r"\.npz or \.parquet"):
        idx.export(tmp_path / "out.csv")


def test_cluster_run_is_stored(open_fake_index, media: Path) -> None:
    idx = open_fake_index()
    idx.add_paths([media])
    run = idx.cluster(7, labels="top-folder", seed=3)
    assert run.k == 7
    stored = idx.catalog.cluster_runs()
    assert [r["id"] for r in stored] == [run.id]
    assert stored[0]["params"]["seed"] == 3
    members = idx.catalog.cluster_members(run.id)
    assert len(members) == _count_files(media)
    assert {c for _, c, _ in members} <= set(range(7))
    concepts = {row["concept"] for row in run.metrics["consistency"]["concepts"]}
    assert concepts == {p.name for p in media.iterdir()}


def test_open_missing_index_without_create(tmp_path: Path) -> None:
    with pytest.raises(NotFoundError, match="bindindex index FOLDER"):
        Index.open(tmp_path / "nothing", create=False)


def test_unreadable_folder_keeps_its_items(
    open_fake_index, media: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    idx = open_fake_index()
    first = idx.add_paths([media])
    locked = media / "dog"
    real_scandir = os.scandir

    def scandir(path):  # type: ignore[no-untyped-def]
        if Path(path) == locked:
            raise PermissionError(13, "Permission denied", str(path))
        return real_scandir(path)

    monkeypatch.setattr("bindindex.scan.os.scandir", scandir)
    report = idx.add_paths([media])
    assert report.removed == 0
    assert report.failed == 1
    assert report.failures[0].reason == "unreadable"
    assert idx.vectors().ntotal == first.added


def test_write_lock_held_for_whole_run(
    open_fake_index, media: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from bindindex.ingest import Ingest

    idx = open_fake_index()
    other = open_fake_index(tmp_path / "index")
    observed: list[bool] = []
    real_run = Ingest.run

    def run(self, scan):  # type: ignore[no-untyped-def]
        observed.append(other._try_lock())
        return real_run(self, scan)

    monkeypatch.setattr(Ingest, "run", run)
    idx.add_paths([media / "dog"])
    assert observed == [False]


def test_model_recorded_only_with_vectors(tmp_path: Path, paired: Path) -> None:
    class BrokenEncoder(FakeEncoder):
        def embed_images(self, x):  # type: ignore[no-untyped-def]
            raise RuntimeError("weights failed to load")

    idx = Index.open(tmp_path / "index", model="fake")
    idx._encoder = BrokenEncoder(model_id="broken@1")
    with pytest.raises(RuntimeError):
        idx.add_paths([paired / "dog" / "images"])
    assert idx.catalog.get_meta("model_id") is None
    idx._encoder = FakeEncoder()
    assert idx.add_paths([paired / "dog" / "images"]).added > 0
    assert idx.catalog.get_meta("model_id") == "fake@1"
    idx.close()


def test_search_empty_index_and_huge_k(open_fake_index, media: Path) -> None:
    idx = open_fake_index()
    with pytest.raises(UsageError, match="contains no vectors"):
        idx.search([QueryTerm("text", "a dog")])
    idx.add_paths([media / "dog"])
    hits = idx.search([QueryTerm("text", "a dog")], k=10**11)
    assert len(hits) == idx.vectors().ntotal


def test_non_utf8_name_reopens(open_fake_index, paired: Path, tmp_path: Path) -> None:
    folder = tmp_path / "latin1"
    folder.mkdir()
    name = os.fsencode(folder) + b"/caf\xe9.jpg"
    with open(name, "wb") as handle:
        handle.write(next((paired / "dog" / "images").glob("*.jpg")).read_bytes())
    idx = open_fake_index()
    assert idx.add_paths([folder]).added == 1
    hit = idx.search([QueryTerm("text", "x")], k=1)[0]
    assert os.fsencode(hit.path) == name
    assert os.path.exists(hit.path)
    idx.export(tmp_path / "out.npz")
    exported = np.load(tmp_path / "out.npz")["paths"][0]
    assert os.fsencode(str(exported)) == name
    idx.export(tmp_path / "out.parquet")
    table = pq.read_table(tmp_path / "out.parquet")
    assert table.column("path_bytes")[0].as_py() == name


def test_export_to_folder_is_usage_error(open_fake_index, media: Path, tmp_path: Path) -> None:
    idx = open_fake_index()
    idx.add_paths([media / "dog"])
    (tmp_path / "out.npz").mkdir()
    with pytest.raises(UsageError, match="it is a folder"):
        idx.export(tmp_path / "out.npz")
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(UsageError, match="cannot export"):
        idx.export(blocker / "out.npz")


def test_check_finds_damaged_rows_in_vector_file(open_fake_index, media: Path) -> None:
    idx = open_fake_index()
    idx.add_paths([media])
    ids, raw = idx.catalog.vectors(idx.dim)
    dim = idx.dim
    idx.close()
    path = idx.path / VECTORS_FILE
    data = bytearray(path.read_bytes())
    # Rows start after the 82-byte header in slot order; damage the third row.
    row = 82 + 2 * dim * 4
    data[row : row + 16] = np.full(4, 7.0, dtype="<f4").tobytes()
    path.write_bytes(bytes(data))
    reopened = open_fake_index(idx.path)

    found = reopened.check(repair=False)

    damaged = int(reopened.vectors().ids()[2])
    assert found["vector_file"].startswith("holds vectors that differ from the catalog for 1 ")
    assert f"(ids {damaged})" in found["vector_file"]
    assert reopened.check(repair=True)["repaired"] is True
    assert reopened.check(repair=False)["vector_file"] == "ok"
    hits = reopened.search([QueryTerm("item", str(damaged))], k=len(ids))
    expected = normalise(raw) @ normalise(raw[list(ids).index(damaged)][None])[0]
    for hit in hits:
        assert abs(hit.score - expected[list(ids).index(hit.id)]) < 1e-5


def test_check_finds_and_repairs_disagreements(open_fake_index, media: Path) -> None:
    idx = open_fake_index()
    idx.add_paths([media])
    assert idx.check(repair=False)["vector_file"] == "ok"
    ids, _ = idx.catalog.vectors(idx.dim)
    lost, poisoned = int(ids[0]), int(ids[1])
    with idx.catalog.transaction() as conn:
        idx.catalog.delete_vector(conn, lost)
        conn.execute(
            "UPDATE vectors SET raw = ? WHERE item_id = ?",
            (np.full(idx.dim, np.nan, dtype="<f4").tobytes(), poisoned),
        )
    (idx.path / VECTORS_FILE).write_bytes(b"corrupt")

    found = idx.check(repair=False)
    assert found["items_without_vector"] == [lost]
    assert found["non_finite_vectors"] == [poisoned]
    assert found["vector_file"] != "ok"
    assert found["repaired"] is False

    repaired = idx.check(repair=True)
    assert repaired["repaired"] is True
    clean = idx.check(repair=False)
    assert clean["items_without_vector"] == []
    assert clean["non_finite_vectors"] == []
    assert clean["vector_file"] == "ok"
    assert idx.item(poisoned).status == "pending"

    report = idx.add_paths([media])
    assert report.updated == 2
    assert idx.vectors().ntotal == len(ids)
    assert idx.check(repair=False)["items_without_vector"] == []


@pytest.mark.parametrize(
    ("term", "k", "message"),
    [
        (QueryTerm("video", "x"), 3, "invalid query kind 'video'"),  # type: ignore[arg-type]
        (QueryTerm("text", None), 3, "invalid text query None"),  # type: ignore[arg-type]
        (QueryTerm("text", 7), 3, "invalid text query 7"),
        (QueryTerm("item", True), 3, "invalid item query True"),
        (QueryTerm("text", "a dog"), 2.5, "invalid k 2.5"),
    ],
)
def test_library_query_arguments_are_checked(
    open_fake_index, media: Path, term: QueryTerm, k: object, message: str
) -> None:
    idx = open_fake_index()
    idx.add_paths([media])
    with pytest.raises(UsageError, match=message):
        idx.search([term], k=k)  # type: ignore[arg-type]
