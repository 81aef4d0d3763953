"""Folder walking and files that change under the indexer, in temporary folders."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest

import bindindex.index as index_module
from bindindex.scan import scan
from bindindex.search import QueryTerm


@pytest.fixture()
def folder(tmp_path: Path, paired: Path) -> Path:
    """Two images and one sound from the paired set in a folder with a non-ASCII name."""
    root = tmp_path / "Médiathèque été"
    (root / "photos").mkdir(parents=True)
    (root / "sons").mkdir()
    for source, target in [
        (next(paired.glob("dog/images/*.jpg")), root / "photos" / "dog.jpg"),
        (next(paired.glob("cat/images/*.jpg")), root / "photos" / "cat.jpg"),
        (next(paired.glob("dog/audio/*.wav")), root / "sons" / "bark.wav"),
    ]:
        shutil.copyfile(source, target)
    return root


def _statuses(idx) -> dict[str, tuple[str, str | None]]:
    return {Path(r.path).name: (r.status, r.reason) for r in idx.catalog.items()}


def test_broken_link_in_non_ascii_folder_is_recorded(open_fake_index, folder: Path) -> None:
    (folder / "photos" / "gone.jpg").symlink_to(folder / "nowhere.jpg")
    (folder / "photos" / "self.jpg").symlink_to(folder / "photos" / "self.jpg")
    idx = open_fake_index()
    report = idx.add_paths([folder])
    assert report.added == 3
    statuses = _statuses(idx)
    assert statuses["gone.jpg"] == ("failed", "broken_link")
    assert statuses["self.jpg"] == ("failed", "broken_link")
    failure = next(f for f in report.failures if f.path.endswith("gone.jpg"))
    assert "nowhere.jpg" in failure.detail
    assert "Médiathèque été" in failure.path


def test_link_loops_end_and_linked_files_count_once(open_fake_index, folder: Path) -> None:
    (folder / "photos" / "back-up").symlink_to(folder)
    (folder / "sons" / "again.wav").symlink_to(folder / "sons" / "bark.wav")
    os.link(folder / "photos" / "cat.jpg", folder / "photos" / "cat-hardlink.jpg")
    result = scan([folder, folder / "photos"])
    names = [f.path.name for f in result.files]
    assert len(names) == 3
    assert result.problems == []

    idx = open_fake_index()
    idx.add_paths([folder])
    assert idx.vectors().ntotal == 3


def test_file_replaced_by_broken_link_loses_its_vector(open_fake_index, folder: Path) -> None:
    idx = open_fake_index()
    idx.add_paths([folder])
    cat = folder / "photos" / "cat.jpg"
    cat_id = idx.catalog.item_by_path(os.fsencode(cat)).id
    cat.unlink()
    cat.symlink_to(folder / "missing-target.jpg")
    idx.add_paths([folder])
    assert _statuses(idx)["cat.jpg"] == ("failed", "broken_link")
    assert cat_id not in idx.vectors().ids().tolist()
    hits = idx.search([QueryTerm("item", str(idx.catalog.items(status="indexed")[0].id))], k=10)
    assert cat_id not in [h.id for h in hits]


def _scan_then(action):
    """A scan function that runs ``action`` after the real scan, before any decoding."""

    def scan_and_act(paths, **kwargs):
        result = scan(paths, **kwargs)
        action()
        return result

    return scan_and_act


def test_file_deleted_between_scan_and_decode(
    open_fake_index, folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    dog = folder / "photos" / "dog.jpg"
    monkeypatch.setattr(index_module, "scan", _scan_then(dog.unlink))
    idx = open_fake_index()
    report = idx.add_paths([folder])
    assert report.added == 2
    assert _statuses(idx)["dog.jpg"] == ("failed", "vanished")

    monkeypatch.setattr(index_module, "scan", scan)
    report = idx.add_paths([folder])
    assert report.removed == 1
    assert "dog.jpg" not in _statuses(idx)


def test_indexed_file_deleted_between_scan_and_decode(
    open_fake_index, folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    idx = open_fake_index()
    idx.add_paths([folder])
    bark = folder / "sons" / "bark.wav"
    bark_id = idx.catalog.item_by_path(os.fsencode(bark)).id
    # A newer mtime makes the run decode the file again, and it is gone by then.
    os.utime(bark, ns=(bark.stat().st_atime_ns, bark.stat().st_mtime_ns + 10**9))
    monkeypatch.setattr(index_module, "scan", _scan_then(bark.unlink))
    idx.add_paths([folder])
    assert _statuses(idx)["bark.wav"] == ("failed", "vanished")
    assert bark_id not in idx.vectors().ids().tolist()
    assert idx.check(repair=False)["vector_file"] == "ok"


def test_file_replaced_between_scan_and_decode(
    open_fake_index, folder: Path, paired: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    dog = folder / "photos" / "dog.jpg"
    other = next(paired.glob("car/images/*.jpg"))
    monkeypatch.setattr(index_module, "scan", _scan_then(lambda: shutil.copyfile(other, dog)))
    idx = open_fake_index()
    idx.add_paths([folder])
    monkeypatch.setattr(index_module, "scan", scan)

    # The stored vector is that of the content that was decoded, and the next
    # run notices the new size and time but finds the content unchanged.
    reference = open_fake_index(folder.parent / "reference-index")
    reference.add_paths([other])
    row = idx.catalog.item_by_path(os.fsencode(dog))
    _, stored = idx.catalog.vectors(idx.dim, [row.id])
    _, expected = reference.catalog.vectors(reference.dim)
    np.testing.assert_allclose(stored, expected, rtol=1e-5)
    report = idx.add_paths([folder])
    assert (report.added, report.updated, report.unchanged) == (0, 0, 3)


def test_unchanged_folder_twice_gives_no_duplicates(open_fake_index, folder: Path) -> None:
    idx = open_fake_index()
    idx.add_paths([folder])
    idx.add_paths([folder])
    idx.add_paths([folder / "photos"])
    assert idx.vectors().ntotal == 3
    hits = idx.search([QueryTerm("text", "a dog")], k=10)
    assert len(hits) == len({h.id for h in hits}) == 3


def test_retry_failed_tries_unchanged_failures_again(
    open_fake_index, folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    broken = folder / "photos" / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 64)
    idx = open_fake_index()
    first = idx.add_paths([folder])
    assert first.failed == 1
    again = idx.add_paths([folder])
    assert again.failed == 0
    assert again.unchanged == 4
    retried = idx.add_paths([folder], retry_failed=True)
    assert retried.failed == 1
    assert [f.reason for f in idx.failures()] == ["undecodable"]


def test_folder_named_through_link_is_not_indexed_twice(open_fake_index, folder: Path) -> None:
    alias = folder.parent / "alias"
    alias.symlink_to(folder)
    idx = open_fake_index()
    idx.add_paths([folder])
    report = idx.add_paths([alias])
    assert report.added == 0
    assert report.unchanged == 3
    assert idx.vectors().ntotal == 3
    assert len(idx.catalog.items()) == 3


def test_requested_model_survives_empty_run(tmp_path: Path) -> None:
    from bindindex.index import Index

    folder = tmp_path / "media"
    folder.mkdir()
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff" + b"\x00" * 40)
    with Index.open(tmp_path / "index", model="imagebind-test") as idx:
        assert idx.add_paths([folder]).failed == 1
    with Index.open(tmp_path / "index") as idx:
        assert idx.model_name == "imagebind-test"
    with Index.open(tmp_path / "index", model="imagebind-huge") as idx:
        assert idx.model_name == "imagebind-huge"


def test_file_replaced_by_folder_between_scan_and_decode(
    open_fake_index, folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cat = folder / "photos" / "cat.jpg"

    def replace() -> None:
        cat.unlink()
        cat.mkdir()

    monkeypatch.setattr(index_module, "scan", _scan_then(replace))
    idx = open_fake_index()
    report = idx.add_paths([folder])
    assert report.added == 2
    assert _statuses(idx)["cat.jpg"] == ("failed", "vanished")


def test_single_path_string_is_one_path(open_fake_index, folder: Path) -> None:
    idx = open_fake_index()
    assert idx.add_paths(str(folder)).added == 3
