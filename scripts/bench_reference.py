"""Import Meta's reference ImageBind code for the benchmarks, which compare against it.

The reference package's ``imagebind/__init__`` imports its data module, which needs
pytorchvideo and does not import with current torchvision. A stub package object lets
``imagebind.models`` import without it.
"""

from __future__ import annotations

import importlib.util
import sys
import types
from pathlib import Path

import torch


def import_reference_model() -> types.ModuleType:
    """Return ``imagebind.models.imagebind_model`` from the installed reference package."""
    if "imagebind" not in sys.modules:
        spec = importlib.util.find_spec("imagebind")
        if spec is None or not spec.submodule_search_locations:
            raise ImportError(
                "the reference package is missing; install imagebind-unofficial with --no-deps"
            )
        stub = types.ModuleType("imagebind")
        stub.__path__ = list(spec.submodule_search_locations)
        stub.__spec__ = spec
        sys.modules["imagebind"] = stub
    from imagebind.models import imagebind_model

    return imagebind_model


def make_huge_checkpoint(path: Path) -> Path:
    """Save the state dict of a seeded, randomly initialised reference ``imagebind_huge``.

    The file has the keys and shapes of the official checkpoint (all six modalities),
    so both bindindex and the reference load it. An existing file is reused.
    """
    if path.is_file():
        return path
    reference = import_reference_model()
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = reference.imagebind_huge(pretrained=False)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(model.state_dict(), tmp)
    tmp.replace(path)
    return path


if __name__ == "__main__":
    print(make_huge_checkpoint(Path(sys.argv[1])))
