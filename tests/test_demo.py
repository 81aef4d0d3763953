"""The demo command and the sample download it starts with."""

from __future__ import annotations

import hashlib
import http.server
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from bindindex.cli.app import app
from bindindex.samples import NetworkError, fetch_samples, read_manifest

runner = CliRunner()
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def served(tmp_path: Path, paired: Path) -> Iterator[tuple[str, Path]]:
    """A loopback HTTP server over a folder with two real media files."""
    root = tmp_path / "www"
    root.mkdir()
    (root / "bark.wav").write_bytes(next((paired / "dog" / "audio").glob("*.wav")).read_bytes())
    (root / "dog.jpg").write_bytes(next((paired / "dog" / "images").glob("*.jpg")).read_bytes())

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, directory=str(root), **kwargs)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", root
    finally:
        server.shutdown()
        server.server_close()


def _manifest(tmp_path: Path, base: str, root: Path, corrupt: bool = False) -> Path:
    lines = ["concept,modality,url,sha256,bytes,license"]
    for name, modality in (("bark.wav", "audio"), ("dog.jpg", "image")):
        data = (root / name).read_bytes()
        digest = hashlib.sha256(data).hexdigest()
        if corrupt:
            digest = "0" * 64
        lines.append(f"dog,{modality},{base}/{name},{digest},{len(data)},CC0")
    manifest = tmp_path / "samples.csv"
    manifest.write_text("\n".join(lines) + "\n")
    return manifest


def test_shipped_manifest_is_valid() -> None:
    samples = read_manifest(REPO / "data" / "samples.csv")
    assert len(samples) >= 10
    assert {s.modality for s in samples} == {"image", "audio"}
    assert all(len(s.sha256) == 64 for s in samples)
    assert any(s.concept == "dog" and s.modality == "audio" for s in samples)


def test_fetch_downloads_then_reuses(tmp_path: Path, served: tuple[str, Path]) -> None:
    base, root = served
    manifest = _manifest(tmp_path, base, root)
    dest = tmp_path / "samples"
    assert fetch_samples(manifest, dest) == (2, 0)
    assert (dest / "dog" / "audio" / "bark.wav").read_bytes() == (root / "bark.wav").read_bytes()
    assert (dest / "dog" / "images" / "dog.jpg").exists()
    assert fetch_samples(manifest, dest) == (0, 2)


def test_fetch_rejects_wrong_checksum(tmp_path: Path, served: tuple[str, Path]) -> None:
    base, root = served
    manifest = _manifest(tmp_path, base, root, corrupt=True)
    with pytest.raises(NetworkError, match="expected 0000"):
        fetch_samples(manifest, tmp_path / "samples")
    assert not list((tmp_path / "samples").rglob("*.wav"))


def test_fetch_unreachable_says_how_to_use_local_folder(tmp_path: Path) -> None:
    manifest = tmp_path / "samples.csv"
    # Port 9 on loopback has no listener here, so the connection is refused at once.
    manifest.write_text(
        "concept,modality,url,sha256,bytes,license\n"
        f"dog,audio,http://127.0.0.1:9/bark.wav,{'0' * 64},10,CC0\n"
    )
    with pytest.raises(NetworkError, match="--media FOLDER"):
        fetch_samples(manifest, tmp_path / "samples")


def test_demo_without_network_exits_with_advice(tmp_path: Path) -> None:
    manifest = tmp_path / "samples.csv"
    manifest.write_text(
        "concept,modality,url,sha256,bytes,license\n"
        f"dog,audio,http://127.0.0.1:9/bark.wav,{'0' * 64},10,CC0\n"
    )
    result = runner.invoke(app, ["demo", "--manifest", str(manifest), "--model", "imagebind-test"])
    assert result.exit_code == 1
    assert "unreachable" in result.stderr
    assert "--media FOLDER" in result.stderr


def test_demo_on_local_folder(tmp_path: Path, paired: Path) -> None:
    result = runner.invoke(
        app,
        [
            "demo",
            "--media",
            str(paired),
            "--model",
            "imagebind-test",
            "--index",
            str(tmp_path / "i"),
        ],
    )
    assert result.exit_code == 0, result.stderr
    out = result.stdout
    assert "failed 0" in out
    assert "results below mean nothing" in out
    assert "images nearest to the sound" in out
    assert out.count('"modality": "image"') == 3
    assert "purity" in out


def test_demo_downloads_samples_first(tmp_path: Path, served: tuple[str, Path]) -> None:
    base, root = served
    manifest = _manifest(tmp_path, base, root)
    result = runner.invoke(
        app,
        [
            "demo",
            "--manifest",
            str(manifest),
            "--model",
            "imagebind-test",
            "--index",
            str(tmp_path / "i"),
        ],
    )
    assert result.exit_code == 0, result.stderr
    assert "2 downloaded" in result.stderr
    assert "added 2" in result.stdout


def test_demo_keeps_media_folders_apart(tmp_path: Path, paired: Path) -> None:
    first = runner.invoke(
        app, ["demo", "--media", str(paired / "dog"), "--model", "imagebind-test"]
    )
    assert first.exit_code == 0, first.stderr
    second = runner.invoke(
        app, ["demo", "--media", str(paired / "cat"), "--model", "imagebind-test"]
    )
    assert second.exit_code == 0, second.stderr
    cat_files = sum(1 for p in (paired / "cat").rglob("*") if p.is_file())
    assert f"added {cat_files}, updated 0, unchanged 0, removed 0" in second.stdout
    assert "/dog/" not in second.stdout
