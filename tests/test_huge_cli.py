"""The index, search and cluster commands on a full-size imagebind_huge checkpoint.

The checkpoint is the reference implementation's ``imagebind_huge()`` with random
weights, saved with ``torch.save`` like the official file, all six modalities
included. Marked slow: it writes a 4.8 GB file and runs the full model on CPU.
"""

from __future__ import annotations

import gc
import json
from pathlib import Path

import pytest
import torch
from test_model_parity import import_reference
from typer.testing import CliRunner

from bindindex.cli.app import app

runner = CliRunner()

pytestmark = pytest.mark.slow


def run(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, list(args))
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture(scope="module")
def huge_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    reference = import_reference()
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = reference.imagebind_huge()
    path = tmp_path_factory.mktemp("weights") / "imagebind_huge.pth"
    torch.save(model.state_dict(), path)
    del model
    gc.collect()
    return path


@pytest.fixture(scope="module")
def one_pair_per_concept(tmp_path_factory: pytest.TempPathFactory, paired: Path) -> Path:
    """One image and one audio file of each concept, linked into concept folders."""
    root = tmp_path_factory.mktemp("pairs")
    for concept in sorted(p for p in paired.iterdir() if p.is_dir()):
        for kind in ("images", "audio"):
            source = sorted((concept / kind).iterdir())[0]
            target = root / concept.name / kind / source.name
            target.parent.mkdir(parents=True)
            target.symlink_to(source)
    return root


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_huge_checkpoint_commands(
    precision: str, huge_checkpoint: Path, one_pair_per_concept: Path, tmp_path: Path
) -> None:
    index = str(tmp_path / "index")
    common = ["--index", index, "--checkpoint", str(huge_checkpoint), "--precision", precision]
    files = sum(1 for p in one_pair_per_concept.rglob("*") if p.is_symlink())

    code, out, err = run("index", str(one_pair_per_concept), *common, "--json")
    assert code == 0, err
    report = json.loads(out)
    assert report["added"] == files
    assert report["failed"] == 0

    dog_audio = next((one_pair_per_concept / "dog" / "audio").iterdir())
    code, out, err = run(
        "search", "--audio", str(dog_audio), "--modality", "image", "-k", "3", *common
    )
    assert code == 0, err
    hits = [json.loads(line) for line in out.splitlines()]
    assert len(hits) == 3
    assert {hit["modality"] for hit in hits} == {"image"}

    code, out, err = run("cluster", "-k", "7", "--labels", "top-folder", "--json", "--index", index)
    assert code == 0, err
    report = json.loads(out)
    for key in ("inertia", "silhouette", "sizes", "cross_modal", "consistency"):
        assert key in report

    code, out, err = run("info", "--json", "--index", index)
    info = json.loads(out)
    assert info["model_name"] == "imagebind-huge"
    assert info["model_id"].startswith("imagebind-huge@")
    assert info["vectors"] == files
