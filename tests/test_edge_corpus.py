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
    "11_zero_bytes.wav": "undecodable",
    "15_truncated_baseline_640x480.jpg": "truncated",
    "16_truncated_progressive_640x480.jpg": "truncated",
    "18_html_named_jpg.jpg": "undecodable",
    "18_zero_bytes.jpg": "undecodable",
    "23_bomb_error_13400x13400_1bit.png": "too_many_pixels",
}
INDEXED_WITH_FLAGS = {
    "01_short_audio_0p5s_16k_mono.wav": {"short"},
    "02_tiny_audio_368samples_16k_mono.wav": {"short"},
    "05_stereo_44k1_2s.wav": {"downmixed"},
    "05_stereo_44k1_2s_monoref.wav": set(),
    "07_pcm24_stereo_44k1_2s.wav": {"downmixed"},
    "08_wavex_pcm24_stereo_48k_2s.wav": {"downmixed"},
    "13_silent_3s_16k.wav": {"silent"},
    "14_reference_tone_16k_mono_2s.wav": set(),
    "19_gray16_gradient_512x256.png": {"high_bit_depth"},
    "21_cmyk_320x240.jpg": set(),
    "22_exif_orientation6_stored640x480.jpg": {"rotated"},
}
# Edge files whose flags a user needs to see.
EDGE_FLAGS = {
    "audio/truncated_data_early_eof.wav": {"partial"},
    "audio/silent_float32_digital_zero.wav": {"silent", "short"},
    "image/large_4800x3600_progressive_noise.jpg": {"downscaled"},
    "image/exif_orientation_6_landscape.jpg": {"rotated"},
    "image/animated_tiny.gif": {"animated"},
}
UNSUPPORTED_EDGE = {
    "audio/aac_adts_raw.aac": "AAC",
    "audio/aac_in_3gp_container.m4a": "3GP",
    "audio/speex.spx": "Speex",
    "audio/webm_opus_audio.webm": "WebM",
    "image/heic_still.heic": "HEIF",
    "image/jpeg_xl.jxl": "JPEG XL",
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


def test_mp3_case_indexed_or_names_decoder(edge_index, cases: Path) -> None:
    index, _ = edge_index
    row = index.catalog.item_by_path(os.fsencode(cases / "10_mp3_stereo_44k1_3s.mp3"))
    assert row is not None
    if row.status == "failed":
        assert row.reason == "unsupported_format"
        assert "libsndfile" in (row.detail or "")
    else:
        assert row.status == "indexed"
        assert row.duration_s == pytest.approx(3.0, abs=0.1)


def test_rotated_case_stores_turned_size(edge_index, cases: Path) -> None:
    index, _ = edge_index
    row = index.catalog.item_by_path(os.fsencode(cases / "22_exif_orientation6_stored640x480.jpg"))
    assert row is not None
    assert (row.width, row.height) == (480, 640)


def test_short_case_stores_duration(edge_index, cases: Path) -> None:
    index, _ = edge_index
    row = index.catalog.item_by_path(os.fsencode(cases / "01_short_audio_0p5s_16k_mono.wav"))
    assert row is not None
    assert row.duration_s == pytest.approx(0.5)


@pytest.mark.parametrize(("name", "flags"), sorted(EDGE_FLAGS.items()))
def test_edge_file_flags(edge_index, edge: Path, name: str, flags: set[str]) -> None:
    index, _ = edge_index
    row = index.catalog.item_by_path(os.fsencode(edge / name))
    assert row is not None
    assert row.status == "indexed", row.detail
    assert flags <= set(row.flags)


@pytest.mark.parametrize(("name", "format_name"), sorted(UNSUPPORTED_EDGE.items()))
def test_unsupported_formats_are_named(edge_index, edge: Path, name: str, format_name: str) -> None:
    index, _ = edge_index
    row = index.catalog.item_by_path(os.fsencode(edge / name))
    assert row is not None
    assert (row.status, row.reason) == ("failed", "unsupported_format")
    assert format_name in (row.detail or "")


def test_every_case_file_has_an_expected_outcome(cases: Path) -> None:
    listed = set(REJECTED) | set(INDEXED_WITH_FLAGS) | {"10_mp3_stereo_44k1_3s.mp3"}
    media = {p.name for p in cases.iterdir() if p.suffix not in (".md", ".npy")}
    assert media == listed
