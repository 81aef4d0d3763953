"""Every CLI command through Typer's runner, with the tiny imagebind-test model."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from bindindex.cli.app import app

runner = CliRunner()

COMMANDS = sorted(c.name for c in app.registered_commands if c.name)


def run(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    result = runner.invoke(app, list(args), env=env)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory, paired: Path) -> Path:
    """One index of the paired corpus built by the CLI with the test model."""
    index = tmp_path_factory.mktemp("cli") / "index"
    code, out, err = run(
        "index", str(paired), "--index", str(index), "--model", "imagebind-test", "--json"
    )
    assert code == 0, err
    report = json.loads(out)
    assert report["added"] == sum(1 for p in paired.rglob("*") if p.is_file())
    assert report["failed"] == 0
    assert report["failures"] == []
    return index


def test_reindex_reports_all_unchanged(built: Path, paired: Path) -> None:
    total = sum(1 for p in paired.rglob("*") if p.is_file())
    code, out, err = run("index", str(paired), "--index", str(built), "--json")
    assert code == 0, err
    report = json.loads(out)
    assert report["unchanged"] == total
    assert report["added"] == report["failed"] == report["updated"] == report["removed"] == 0


def test_first_index_counts(tmp_path: Path, paired: Path) -> None:
    total = sum(1 for p in (paired / "dog").rglob("*") if p.is_file())
    code, out, err = run(
        "index", str(paired / "dog"), "--index", str(tmp_path / "i"), "--model", "imagebind-test"
    )
    assert code == 0, err
    assert out.strip() == f"added {total}, updated 0, unchanged 0, removed 0, failed 0"
    assert "embedded with imagebind-test@seed0, fp32" in err


def test_search_audio_for_images(built: Path, paired: Path) -> None:
    wav = next((paired / "dog" / "audio").glob("*.wav"))
    code, out, err = run(
        "search", "--audio", str(wav), "--modality", "image", "-k", "3", "--index", str(built)
    )
    assert code == 0, err
    hits = [json.loads(line) for line in out.splitlines()]
    assert len(hits) == 3
    for hit in hits:
        assert set(hit) == {"id", "path", "modality", "score"}
        assert hit["modality"] == "image"
        assert -1.0 <= hit["score"] <= 1.0
    scores = [hit["score"] for hit in hits]
    assert scores == sorted(scores, reverse=True)


def test_search_text_and_weights(built: Path, paired: Path) -> None:
    image = next((paired / "cat" / "images").glob("*.jpg"))
    code, out, err = run(
        "search",
        "--image",
        str(image),
        "--text",
        "a cat",
        "--weight",
        "0.7",
        "--weight",
        "0.3",
        "--index",
        str(built),
        "--json",
    )
    assert code == 0, err
    hits = json.loads(out)
    assert len(hits) == 10


def test_search_item_query(built: Path) -> None:
    code, out, err = run("search", "--item", "1", "-k", "2", "--index", str(built))
    assert code == 0, err
    hits = [json.loads(line) for line in out.splitlines()]
    assert [hit["id"] for hit in hits if hit["id"] == 1] == []
    assert len(hits) == 2


def test_search_usage_errors(built: Path, tmp_path: Path) -> None:
    code, _, err = run("search", "--index", str(built))
    assert code == 2
    assert "--audio, --image, --text or --item" in err
    code, _, err = run(
        "search", "--text", "x", "--weight", "1", "--weight", "2", "--index", str(built)
    )
    assert code == 2
    assert "2 weights for 1 query terms" in err
    code, _, err = run("search", "--audio", str(tmp_path / "missing.wav"), "--index", str(built))
    assert code == 2
    assert "not found" in err
    code, _, err = run("search", "--text", "x", "--modality", "video", "--index", str(built))
    assert code == 2
    assert "invalid modality" in err


def test_search_missing_index(tmp_path: Path) -> None:
    code, _, err = run("search", "--text", "x", "--index", str(tmp_path / "none"))
    assert code == 2
    assert "no index at" in err


def test_cluster_json_has_every_metric(built: Path, paired: Path) -> None:
    code, out, err = run(
        "cluster", "-k", "7", "--labels", "top-folder", "--json", "--index", str(built)
    )
    assert code == 0, err
    report = json.loads(out)
    assert report["k"] == 7
    for key in ("inertia", "silhouette", "sizes", "cross_modal", "consistency"):
        assert key in report
    assert report["inertia"] > 0
    assert sum(row["size"] for row in report["sizes"]) == report["n_items"]
    cross = report["cross_modal"]
    for key in ("matched", "unmatched", "gap", "image_audio", "per_concept"):
        assert key in cross
    consistency = report["consistency"]
    for key in ("purity", "ari", "nmi", "concepts", "table", "cross_modal_agreement"):
        assert key in consistency
    concepts = {row["concept"] for row in consistency["concepts"]}
    assert concepts == {p.name for p in paired.iterdir() if p.is_dir()}
    for row in consistency["concepts"]:
        assert isinstance(row["image_audio_same_cluster"], bool)


def test_cluster_text_report(built: Path) -> None:
    code, out, err = run("cluster", "-k", "3", "--labels", "top-folder", "--index", str(built))
    assert code == 0, err
    assert "silhouette" in out
    assert "purity" in out


def test_cluster_clamps_k(tmp_path: Path, paired: Path) -> None:
    index = tmp_path / "small"
    run("index", str(paired / "dog" / "images"), "--index", str(index), "--model", "imagebind-test")
    code, out, err = run("cluster", "-k", "50", "--json", "--index", str(index))
    assert code == 0, err
    report = json.loads(out)
    assert report["k"] == 3
    assert report["k_requested"] == 50
    assert "clustered with k=3" in err


def test_info_labels_test_model(built: Path) -> None:
    code, out, err = run("info", "--index", str(built))
    assert code == 0, err
    assert "imagebind-test" in out
    assert "carry no meaning" in out
    code, out, _ = run("info", "--index", str(built), "--json")
    info = json.loads(out)
    assert info["meaningless"] is True
    assert info["vectors"] == info["items"]["indexed"]["image"] + info["items"]["indexed"]["audio"]
    assert info["index_type"]
    assert info["precision"] == {"fp32": info["vectors"]}


def test_export_npz(built: Path, tmp_path: Path) -> None:
    target = tmp_path / "vectors.npz"
    code, out, err = run("export", str(target), "--index", str(built))
    assert code == 0, err
    data = np.load(target)
    assert data["vectors"].shape[1] == 1024
    assert f"wrote {len(data['ids'])} items" in out


def test_failures_lists_bad_files(tmp_path: Path, paired: Path) -> None:
    folder = tmp_path / "mixed"
    folder.mkdir()
    shutil.copyfile(next((paired / "dog" / "images").glob("*")), folder / "ok.jpg")
    (folder / "bad.wav").write_text("this is text")
    index = tmp_path / "i"
    code, out, err = run("index", str(folder), "--index", str(index), "--model", "imagebind-test")
    assert code == 0, err
    assert "failed 1" in out
    assert "bad.wav" in err
    code, out, _ = run("failures", "--json", "--index", str(index))
    failures = json.loads(out)
    assert [f["reason"] for f in failures] == ["undecodable"]


def test_index_env_variable(tmp_path: Path, paired: Path) -> None:
    index = tmp_path / "from-env"
    env = {"BINDINDEX_INDEX": str(index), "BINDINDEX_MODEL": "imagebind-test"}
    code, _, err = run("index", str(paired / "cat"), env=env)
    assert code == 0, err
    assert (index / "catalog.db").exists()
    code, out, _ = run("info", "--json", env=env)
    assert json.loads(out)["index"] == str(index)


def test_model_mismatch_exit_code(built: Path, paired: Path) -> None:
    code, _, err = run(
        "index",
        str(paired / "dog"),
        "--index",
        str(built),
        "--model",
        "imagebind-huge",
        "--checkpoint",
        str(built / "missing.pth"),
    )
    assert code == 1
    assert "error:" in err


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help_with_example(command: str) -> None:
    code, out, _ = run(command, "--help")
    assert code == 0
    assert "Example" in out
    assert "--index" in out or command == "demo"


def test_index_missing_path_is_usage_error(tmp_path: Path) -> None:
    code, _, err = run(
        "index", str(tmp_path / "typo"), "--index", str(tmp_path / "i"), "--model", "imagebind-test"
    )
    assert code == 2
    assert "path not found" in err


def test_index_unknown_model_fails_before_decoding(tmp_path: Path, paired: Path) -> None:
    code, _, err = run("index", str(paired), "--index", str(tmp_path / "i"), "--model", "clip")
    assert code == 2
    assert "unknown model 'clip'" in err
    assert "imagebind-test" in err


def test_bad_checkpoint_message(tmp_path: Path, paired: Path) -> None:
    bogus = tmp_path / "weights.pth"
    bogus.write_text("not a checkpoint")
    code, _, err = run(
        "index", str(paired / "dog"), "--index", str(tmp_path / "i"), "--checkpoint", str(bogus)
    )
    assert code == 1
    assert f"cannot read checkpoint {bogus}" in err
    assert "torch.save" in err
    code, out, err = run(
        "index", str(paired / "dog"), "--index", str(tmp_path / "i"), "--model", "imagebind-test"
    )
    assert code == 0, err
    assert "added" in out


def test_check_reports_and_repairs(tmp_path: Path, paired: Path) -> None:
    index = tmp_path / "i"
    run("index", str(paired / "dog"), "--index", str(index), "--model", "imagebind-test")
    code, out, _ = run("check", "--index", str(index))
    assert code == 0
    assert "no problems found" in out
    (index / "vectors.faiss").unlink()
    code, out, _ = run("check", "--dry-run", "--json", "--index", str(index))
    assert code == 1
    assert json.loads(out)["vector_file"] == "missing, stale or unreadable"
    code, out, _ = run("check", "--index", str(index))
    assert code == 0
    assert "repaired" in out
    assert (index / "vectors.faiss").exists()


def test_max_pixels_rejects_large_images(tmp_path: Path, paired: Path) -> None:
    index = tmp_path / "i"
    code, out, err = run(
        "index", str(paired / "dog" / "images"), "--index", str(index),
        "--model", "imagebind-test", "--max-pixels", "1000", "--json",
    )  # fmt: skip
    assert code == 0, err
    report = json.loads(out)
    assert report["added"] == 0
    assert {f["reason"] for f in report["failures"]} == {"too_many_pixels"}
    assert all("exceeds the limit of 1000" in f["detail"] for f in report["failures"])


@pytest.mark.parametrize("seed", ["-1", "99999999999999999999"])
def test_cluster_bad_seed_is_usage_error(built: Path, seed: str) -> None:
    code, _, err = run("cluster", "-k", "3", "--seed", seed, "--index", str(built))
    assert code == 2
    assert "invalid seed" in err


def test_max_pixels_above_pillow_limit_is_usage_error(tmp_path: Path, paired: Path) -> None:
    code, _, err = run(
        "index", str(paired), "--index", str(tmp_path / "index"), "--model", "imagebind-test",
        "--max-pixels", str(10**12),
    )  # fmt: skip
    assert code == 2
    assert "invalid --max-pixels" in err


def test_startup_does_not_import_torch_or_sklearn() -> None:
    # A re-index that finds nothing new and the read-only commands should start
    # in well under a second; torch and scikit-learn take seconds to import.
    import subprocess
    import sys

    code = (
        "import sys, bindindex.cli.app, bindindex.index, bindindex.server.app; "
        "print(sorted(m for m in ('torch', 'sklearn', 'scipy', 'matplotlib') if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"
