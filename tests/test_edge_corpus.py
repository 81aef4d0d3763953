"""Indexing folders of odd and broken media in one run."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from bindindex.index import Index
from bindindex.store.vectors import normalise

# Expected outcome for the bug-report inputs: a reason code for rejected files,
# or the flags an indexed file must carry.
REJECTED = {
    "04_empty_audio_0frames_16k.wav": "empty",
    "11_text_named_wav.wav": "undecodable",
    "18_html_named_jpg.jpg": "undecodable",
    "23_bomb_error_13400x13400_1bit.png": "too_many_pixels",
}
INDEXED_WITH_FLAGS = {
    "01_short_audio_0p5s_16k_mono.wav": {"short"},
    "02_tiny_audio_368samples_16k_mono.wav": {"short"},
    "05_stereo_44k1_2s.wav": {"downmixed"},
    "13_silent_3s_16k.wav": {"silent"},
    "14_reference_tone_16k_mono_2s.wav": set(),
    "19_gray16_gradient_512x256.png": set(),
    "21_cmyk_320x240.jpg": set(),
    "22_exif_orientation6_stored640x480.jpg": {"rotated"},
}


@pytest.fixture(scope="module")
def edge_index(tmp_path_factory: pytest.TempPathFactory, edge: Path, cases: Path):
    index = Index.open(tmp_path_factory.mktemp("edge") / "index", model="imagebind-test")
    report = index.add_paths([edge, cases], batch_size=4)
    yield index, report
    index.close()


def test_every_file_gets_an_outcome(edge_index, edge: Path, cases: Path) -> None:
    index, report = edge_index
    media = [p for folder in (edge, cases) for p in folder.rglob("*") if p.is_file()]
    media = [p for p in media if p.suffix.lower() not in (".md", ".npy")]
    rows = {row.path: row for row in index.catalog.items()}
    for path in media:
        assert str(path) in rows, f"{path} has no catalog row"
        assert rows[str(path)].status in ("indexed", "failed")
    assert report.added + report.failed == len(media)


def test_stored_vectors_are_finite_and_unit(edge_index) -> None:
    index, _ = edge_index
    ids, raw = index.catalog.vectors(index.dim)
    assert len(ids) > 0
    assert np.isfinite(raw).all()
    assert (np.linalg.norm(raw, axis=1) > 0).all()
    vectors = index.vectors()
    assert vectors.ntotal == len(ids)
    stored = np.stack([vectors.index.reconstruct(int(i)) for i in ids])
    np.testing.assert_allclose(np.linalg.norm(stored, axis=1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(stored, normalise(raw), atol=1e-6)


@pytest.mark.parametrize(("name", "reason"), sorted(REJECTED.items()))
def test_case_rejected_with_reason(edge_index, cases: Path, name: str, reason: str) -> None:
    index, _ = edge_index
    row = index.catalog.item_by_path(os.fsencode(cases / name))
    assert row is not None
    assert row.status == "failed"
    assert row.reason == reason
    assert row.detail


@pytest.mark.parametrize(("name", "flags"), sorted(INDEXED_WITH_FLAGS.items()))
def test_case_indexed_with_flags(edge_index, cases: Path, name: str, flags: set[str]) -> None:
    index, _ = edge_index
    row = index.catalog.item_by_path(os.fsencode(cases / name))
    assert row is not None
    assert row.status == "indexed", row.detail
    assert flags <= set(row.flags)


def test_stereo_matches_mono_reference(edge_index, cases: Path) -> None:
    index, _ = edge_index
    stereo = index.catalog.item_by_path(os.fsencode(cases / "05_stereo_44k1_2s.wav"))
    mono = index.catalog.item_by_path(os.fsencode(cases / "05_stereo_44k1_2s_monoref.wav"))
    assert stereo is not None and mono is not None
    _, vectors = index.catalog.vectors(index.dim, [stereo.id, mono.id])
    unit = normalise(vectors)
    assert float(unit[0] @ unit[1]) > 0.999
