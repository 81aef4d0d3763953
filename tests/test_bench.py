"""Each benchmark suite of scripts/bench.py runs end to end at a tiny size.

The figures are meaningless at these sizes; the tests check that every suite
runs, prints JSON and reports each of its ids.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAIRED = (ROOT.parent / "shared").resolve() / "data" / "paired"

TINY = {
    "search": (
        ["--sizes", "300,900", "--queries", "5", "--peer-n", "300", "--hnsw-max", "300"],
        {"search-scaling", "S1", "S2"},
    ),
    "kmeans": (
        ["--k1-n", "600", "--k1-k", "4", "--k2-n", "800", "--k2-k", "4", "--niter", "3"],
        {"K1", "K2"},
    ),
    "reindex": (["--files", "3"], {"index-scaling", "R1"}),
    "embed": (
        ["--model", "imagebind-test", "--images", "1", "--audio", "1", "--matmul-rows", "8"],
        {"E1", "E2", "E3"},
    ),
    "coldstart": (["--model", "imagebind-test"], {"L1"}),
    "memory": (["--model", "imagebind-test"], {"M1"}),
    "pipeline": (
        ["--pipeline-files", "4", "--pipeline-megapixels", "0.05", "--pipeline-audio-s", "3"],
        {"P1"},
    ),
}
NEEDS_MEDIA = {"embed", "coldstart", "memory"}


@pytest.mark.parametrize("suite", sorted(TINY))
def test_suite_runs_tiny(suite: str, tmp_path: Path) -> None:
    if suite in NEEDS_MEDIA and not PAIRED.is_dir():
        pytest.skip(f"the paired media corpus is missing at {PAIRED}")
    arguments, ids = TINY[suite]
    env = dict(os.environ)
    env["BINDINDEX_BENCH_CACHE"] = str(tmp_path / "cache")
    env["BINDINDEX_BENCH_MEDIA"] = str(PAIRED)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "bench.py"), suite, *arguments, "--json"],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert {result["id"] for result in report["results"]} == ids
    for result in report["results"]:
        assert result["met"] in (True, False, None)


def test_gpu_script_dry_run_on_cpu(tmp_path: Path) -> None:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    out = tmp_path / "out"
    command = [
        sys.executable,
        str(ROOT / "scripts" / "bench_gpu.py"),
        "--device",
        "cpu",
        "--model",
        "imagebind-test",
        "--images",
        "3",
        "--audio",
        "2",
        "--batch-sizes",
        "2",
        "--out",
        str(out),
    ]
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)

    assert done.returncode == 0, done.stderr
    report = json.loads((out / "gpu.json").read_text())
    assert report["device"] == "cpu"
    assert report["bf16_tflops"] > 0
    assert report["skipped"] == []
    assert {(run["batch"], run["modality"]) for run in report["runs"]} == {
        (2, "image"),
        (2, "audio"),
    }
    files = {run["modality"]: run["files"] for run in report["runs"]}
    assert files == {"image": 3, "audio": 2}
    assert all(run["files_per_s"] > 0 for run in report["runs"])
    assert all(run["model_only_files_per_s"] > 0 for run in report["runs"])
