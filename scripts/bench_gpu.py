"""E1 and E2 on a CUDA GPU: bindindex in bf16 at batch sizes 32 to 256, within 10 minutes.

Usage: ``PYTHONPATH=. python scripts/bench_gpu.py [--budget-s 540] [--out DIR]``.

``--device cpu --model imagebind-test`` with small ``--images``, ``--audio`` and
``--batch-sizes`` runs the same steps on a CPU in seconds, so that the tests can
check the script before a GPU is available; its figures mean nothing.

Needs only this repository and its dependencies: the script writes a full-size
imagebind_huge checkpoint with seeded random weights (bindindex's own model code,
vision, text and audio towers), 1,024 JPEGs and 256 WAV files into a temporary
folder. For each batch size it times ``Index.add_paths`` from files to stored
vectors, and the model alone on tensors, so decoding limits show separately. It
also measures the GPU's bf16 matrix-multiply rate, from which the compute floor
follows (335 GFLOP per image, 122 GFLOP per audio file). Results go to stdout as
JSON and to ``OUT/gpu.json`` when ``--out`` or ``$OUT`` is set. Batch sizes that
would overrun the budget are skipped and listed as such.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import soundfile
import torch
from PIL import Image

from bindindex.index import Index
from bindindex.model.config import MODALITIES, get_spec
from bindindex.model.imagebind import ImageBind, random_state_dict

IMAGE_GFLOP = 335.0
AUDIO_GFLOP = 122.0
BATCH_SIZES = (32, 64, 128, 256)


def synchronize(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def bf16_tflops(device: str, rows: int = 8192, seconds: float = 3.0) -> float:
    """Measure the device's bf16 rate on a ViT-H MLP-shaped F.linear, in TFLOP/s."""
    x = torch.randn(rows, 1280, device=device, dtype=torch.bfloat16)
    weight = torch.randn(5120, 1280, device=device, dtype=torch.bfloat16)
    flop = 2 * x.shape[0] * x.shape[1] * weight.shape[0]
    torch.nn.functional.linear(x, weight)
    synchronize(device)
    runs, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        for _ in range(20):
            torch.nn.functional.linear(x, weight)
        synchronize(device)
        runs += 20
    return flop * runs / (time.perf_counter() - start) / 1e12


def write_checkpoint(path: Path) -> Path:
    model = ImageBind(get_spec("imagebind-huge").config, MODALITIES)
    torch.save(random_state_dict(model, seed=0), path)
    return path


def write_media(root: Path, images: int, audio: int) -> dict[str, Path]:
    rng = np.random.default_rng(0)
    folders = {"image": root / "images", "audio": root / "audio"}
    for folder in folders.values():
        folder.mkdir(parents=True)
    for i in range(images):
        small = rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)
        picture = Image.fromarray(small).resize((640, 480), Image.Resampling.BILINEAR)
        picture.save(folders["image"] / f"{i:05d}.jpg", quality=90)
    for i in range(audio):
        t = np.arange(16_000 * 10) / 16_000
        tone = 0.3 * np.sin(2 * np.pi * (200 + i) * t).astype(np.float32)
        soundfile.write(folders["audio"] / f"{i:05d}.wav", tone, 16_000)
    return folders


def model_only(index: Index, modality: str, batch: int, device: str, repeats: int = 3) -> float:
    """Files/s of the model alone on random tensors of the batch size."""
    encoder = index.encoder
    if modality == "image":
        x = torch.randn(batch, 3, 224, 224)
        run = encoder.embed_images
    else:
        x = torch.randn(batch, 3, 1, 128, 204)
        run = encoder.embed_audio
    run(x)
    synchronize(device)
    start = time.perf_counter()
    for _ in range(repeats):
        run(x)
    synchronize(device)
    return batch * repeats / (time.perf_counter() - start)


def _batch_sizes(text: str) -> list[int]:
    return [int(part) for part in text.split(",") if part]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--budget-s", type=float, default=540.0, help="stop starting new runs after this"
    )
    parser.add_argument(
        "--out", type=Path, default=Path(os.environ["OUT"]) if os.environ.get("OUT") else None
    )
    parser.add_argument("--device", default="cuda", help="torch device (cpu only for a dry run)")
    parser.add_argument("--model", default="imagebind-huge", help="imagebind-test for a dry run")
    parser.add_argument("--images", type=int, default=1024, help="JPEG files to index")
    parser.add_argument("--audio", type=int, default=256, help="WAV files to index")
    parser.add_argument(
        "--batch-sizes",
        type=_batch_sizes,
        default=list(BATCH_SIZES),
        help="comma-separated batch sizes",
    )
    args = parser.parse_args()
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("no CUDA device: this script measures E1 and E2 on a GPU", file=sys.stderr)
        return 2
    started = time.perf_counter()
    name = torch.cuda.get_device_name() if args.device.startswith("cuda") else args.device
    report: dict[str, Any] = {"device": name, "model": args.model, "runs": [], "skipped": []}
    rows = 8192 if args.device.startswith("cuda") else 64
    report["bf16_tflops"] = bf16_tflops(args.device, rows=rows)
    report["floor_images_per_s"] = report["bf16_tflops"] * 1e3 / IMAGE_GFLOP
    report["floor_audio_per_s"] = report["bf16_tflops"] * 1e3 / AUDIO_GFLOP
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        checkpoint = None
        if get_spec(args.model).init_seed is None:
            checkpoint = write_checkpoint(root / "imagebind_huge.pth")
        folders = write_media(root / "media", images=args.images, audio=args.audio)
        workers = os.cpu_count() or 4
        for batch in args.batch_sizes:
            for modality, folder in folders.items():
                if time.perf_counter() - started > args.budget_s:
                    report["skipped"].append({"batch": batch, "modality": modality})
                    continue
                index = Index.open(
                    root / f"index-{batch}-{modality}",
                    model=args.model,
                    checkpoint=checkpoint,
                    precision="bf16",
                    device=args.device,
                )
                try:
                    index.encoder.load("vision" if modality == "image" else "audio")
                    start = time.perf_counter()
                    added = index.add_paths([folder], batch_size=batch, workers=workers).added
                    seconds = time.perf_counter() - start
                    row = {
                        "batch": batch,
                        "modality": modality,
                        "files": added,
                        "files_per_s": added / seconds,
                        "model_only_files_per_s": model_only(index, modality, batch, args.device),
                    }
                finally:
                    index.close()
                report["runs"].append(row)
                print(json.dumps(row), file=sys.stderr, flush=True)
    report["seconds"] = time.perf_counter() - started
    text = json.dumps(report, indent=2)
    print(text)
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "gpu.json").write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
