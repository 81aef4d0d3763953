"""The cluster, clusters and report commands on the paired corpus with the imagebind-test model."""

from __future__ import annotations

import csv
import io
import json
import re
import shutil
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from PIL import Image
from typer.testing import CliRunner

from bindindex.cli.app import app

runner = CliRunner()


def run(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, list(args))
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory, paired: Path) -> Path:
    """An index of the paired corpus built with the test model, without any cluster run."""
    index = tmp_path_factory.mktemp("cluster-cli") / "index"
    code, _, err = run("index", str(paired), "--index", str(index), "--model", "imagebind-test")
    assert code == 0, err
    return index


@pytest.fixture
def fresh(built: Path, tmp_path: Path) -> Path:
    """A private copy of the built index, so each test starts without cluster runs."""
    copy = tmp_path / "index"
    shutil.copytree(built, copy)
    return copy


def test_cluster_full_options(fresh: Path, tmp_path: Path, paired: Path) -> None:
    plot = tmp_path / "clusters.png"
    code, out, err = run(
        "cluster",
        "--auto-k",
        "2..6",
        "--labels",
        "top-folder",
        "--center",
        "--names",
        "--plot",
        str(plot),
        "--json",
        "--index",
        str(fresh),
    )
    assert code == 0, err

    report = json.loads(out)
    assert 2 <= report["k"] <= 6
    assert [row["k"] for row in report["auto_k"]["table"]] == list(range(2, 7))
    assert report["auto_k"]["chosen"] == report["k"]
    for key in ("cross_modal", "cross_modal_centered", "consistency", "names", "identity"):
        assert key in report
    assert set(report["names"]) == {str(row["cluster"]) for row in report["sizes"]}
    for named in report["names"].values():
        assert named["name"].startswith(("a photo of", "the sound of"))
        assert -1.0 <= named["score"] <= 1.0
    assert "names mean nothing" in err

    with Image.open(plot) as image:
        image.load()
        assert image.format == "PNG"
        assert image.width > 500


def test_cluster_text_shows_tables(fresh: Path) -> None:
    code, out, err = run(
        "cluster", "--auto-k", "2..4", "--labels", "top-folder", "--center", "--index", str(fresh)
    )
    assert code == 0, err
    assert "k chosen from 2..4 by the k with the highest mean silhouette" in out
    assert re.search(r"^  3 .*davies|^  3 ", out, re.MULTILINE)
    assert "after centring each modality:" in out
    assert "items per concept (rows) and cluster (columns):" in out


def test_cluster_k_and_auto_k_conflict(fresh: Path) -> None:
    code, _, err = run("cluster", "-k", "3", "--auto-k", "2..5", "--index", str(fresh))
    assert code == 2
    assert "either -k or --auto-k" in err
    code, _, err = run("cluster", "--auto-k", "1..5", "--index", str(fresh))
    assert code == 2
    assert "at least 2" in err


def test_history_commands(fresh: Path, tmp_path: Path) -> None:
    assert run("cluster", "-k", "4", "--index", str(fresh))[0] == 0
    code, _, err = run("cluster", "-k", "5", "--index", str(fresh))
    assert code == 0, err

    code, out, _ = run("clusters", "list", "--json", "--index", str(fresh))
    runs = json.loads(out)
    assert [r["run"] for r in runs] == [1, 2]
    code, out, _ = run("clusters", "list", "--index", str(fresh))
    assert out.splitlines()[0].startswith("run ")

    code, out, _ = run("clusters", "show", "latest", "--members", "--json", "--index", str(fresh))
    shown = json.loads(out)
    assert shown["run"] == 2
    assert sum(c["size"] for c in shown["clusters"]) == shown["n_items"]
    code, out, _ = run("clusters", "show", "1", "--members", "--index", str(fresh))
    assert code == 0
    assert out.count("/paired/") == runs[0]["n_items"]

    code, out, _ = run("clusters", "diff", "1", "2", "--json", "--index", str(fresh))
    diff = json.loads(out)
    assert diff["items_common"] == shown["n_items"]
    code, out, _ = run("clusters", "diff", "1", "latest", "--index", str(fresh))
    assert "items moved" in out

    code, out, _ = run("clusters", "export", "latest", "--format", "csv", "--index", str(fresh))
    rows = list(csv.DictReader(io.StringIO(out)))
    assert len(rows) == shown["n_items"]
    target = tmp_path / "run.parquet"
    code, _, err = run(
        "clusters", "export", "2", "--format", "parquet", "-o", str(target), "--index", str(fresh)
    )
    assert code == 0, err
    assert pq.read_table(target).num_rows == shown["n_items"]
    code, _, err = run("clusters", "show", "7", "--index", str(fresh))
    assert code == 2
    assert "cluster run 7 not found" in err


def test_report_references_every_item(fresh: Path, tmp_path: Path) -> None:
    assert run("cluster", "-k", "7", "--index", str(fresh))[0] == 0
    page = tmp_path / "report" / "run.html"
    page.parent.mkdir()
    code, out, err = run("report", "latest", "--html", str(page), "--index", str(fresh))
    assert code == 0, err
    text = page.read_text()
    code, listing, _ = run(
        "clusters", "export", "latest", "--format", "json", "--index", str(fresh)
    )
    items = json.loads(listing)
    assert f"with {len(items)} items" in out
    for item in items:
        assert f'data-item="{item["item_id"]}"' in text
    images = sum(1 for item in items if item["modality"] == "image")
    audio = sum(1 for item in items if item["modality"] == "audio")
    assert text.count('src="data:image/jpeg;base64,') == images
    assert text.count('<audio controls preload="none" src="data:audio/') == audio
    assert "file not readable" not in text

    linked = tmp_path / "report" / "linked.html"
    code, _, err = run(
        "report", "latest", "--html", str(linked), "--link-audio", "--index", str(fresh)
    )
    assert code == 0, err
    sources = re.findall(r'<audio controls preload="none" src="([^"]+)"', linked.read_text())
    assert len(sources) == audio
    for source in sources:
        assert (linked.parent / source).is_file()


def test_if_changed_skips_and_runs(fresh: Path, paired: Path, tmp_path: Path) -> None:
    code, out, _ = run("cluster", "-k", "3", "--if-changed", "--json", "--index", str(fresh))
    assert code == 0
    assert json.loads(out)["run"] == 1
    code, out, err = run("cluster", "-k", "3", "--if-changed", "--json", "--index", str(fresh))
    assert code == 0
    assert json.loads(out)["skipped"] is True
    assert "skipped: 0.0% of the items changed" in err

    # Six new files among the 36 clustered are a change of 17%.
    extra = tmp_path / "extra"
    shutil.copytree(paired / "dog", extra)
    code, _, err = run("index", str(extra), "--index", str(fresh))
    assert code == 0, err
    code, out, err = run(
        "cluster", "-k", "3", "--if-changed", "--change-threshold", "0.5", "--index", str(fresh)
    )
    assert code == 0
    assert "skipped" in err
    code, out, _ = run("cluster", "-k", "3", "--if-changed", "--json", "--index", str(fresh))
    assert json.loads(out)["run"] == 2


def test_index_assigns_new_items_provisionally(fresh: Path, paired: Path, tmp_path: Path) -> None:
    assert run("cluster", "-k", "4", "--index", str(fresh))[0] == 0
    extra = tmp_path / "extra"
    shutil.copytree(paired / "cat", extra)
    code, _, err = run("index", str(extra), "--index", str(fresh))
    assert code == 0, err
    code, out, _ = run("clusters", "show", "latest", "--members", "--json", "--index", str(fresh))
    shown = json.loads(out)
    added = sum(1 for p in extra.rglob("*") if p.is_file())
    assert sum(c["provisional"] for c in shown["clusters"]) == added
    provisional = [m for c in shown["clusters"] for m in c["members"] if m["provisional"]]
    assert all(m["path"].startswith(str(extra)) for m in provisional)
    assert run("cluster", "-k", "4", "--index", str(fresh))[0] == 0
    code, out, _ = run("clusters", "show", "latest", "--json", "--index", str(fresh))
    assert sum(c["provisional"] for c in json.loads(out)["clusters"]) == 0


def test_search_center_option(fresh: Path, paired: Path) -> None:
    query = next((paired / "dog" / "audio").iterdir())
    code, out, err = run(
        "search", "--audio", str(query), "--center", "-k", "4", "--json", "--index", str(fresh)
    )
    assert code == 0, err
    hits = json.loads(out)
    assert len(hits) == 4
    assert hits[0]["path"] == str(query)
    assert hits == sorted(hits, key=lambda hit: -hit["score"])


def test_cluster_empty_index_message(tmp_path: Path) -> None:
    index = tmp_path / "empty"
    folder = tmp_path / "nothing"
    folder.mkdir()
    assert run("index", str(folder), "--index", str(index), "--model", "imagebind-test")[0] == 0
    code, _, err = run("cluster", "-k", "3", "--index", str(index))
    assert code == 2
    assert "no vectors to cluster" in err


def test_vocabulary_option(fresh: Path, tmp_path: Path) -> None:
    words = tmp_path / "words.txt"
    words.write_text("a bell\nthe sound of a bark\n")
    code, out, err = run(
        "cluster", "-k", "2", "--vocabulary", str(words), "--json", "--index", str(fresh)
    )
    assert code == 0, err
    names = {entry["name"] for entry in json.loads(out)["names"].values()}
    assert names <= {"a bell", "the sound of a bark"}


@pytest.mark.parametrize(
    "command",
    [
        ("cluster",),
        ("clusters", "list"),
        ("clusters", "show"),
        ("clusters", "diff"),
        ("clusters", "export"),
        ("report",),
    ],
)
def test_cluster_commands_have_help(command: tuple[str, ...]) -> None:
    code, out, _ = run(*command, "--help")
    assert code == 0
    assert "Example" in out
    assert "--index" in out
