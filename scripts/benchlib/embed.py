"""E1, E2, E3 (embedding), L1 (cold start), M1 (peak memory) and P1 (decoding pipeline)."""

from __future__ import annotations

import argparse
import gc
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from multiprocessing import Pool
from pathlib import Path
from typing import Any

import numpy as np
import soundfile
import torch
from PIL import Image

from benchlib.common import CACHE_DIR, Result, timer
from bindindex.index import Index
from bindindex.media import load_audio, load_image

PAIRED = Path(os.environ.get("BINDINDEX_BENCH_MEDIA", "/work/shared/data/paired"))
# Multiply-adds counted as two FLOP. ViT-H/14 on one 224x224 image, and the audio
# trunk on the three 2 s clips of one file.
IMAGE_GFLOP = 335.0
AUDIO_GFLOP = 122.0
GIB = 1024**3
SCRIPTS_DIR = str(Path(__file__).resolve().parent.parent)


def run(suite: str, args: argparse.Namespace) -> list[Result]:
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    if suite == "pipeline":
        return pipeline(args.pipeline_files, args.pipeline_megapixels, args.pipeline_audio_s)
    checkpoint = args.checkpoint or CACHE_DIR / "imagebind_huge.pth"
    if args.model == "imagebind-huge" and not checkpoint.is_file():
        from bench_reference import make_huge_checkpoint

        make_huge_checkpoint(checkpoint)
    if suite == "embed":
        return embed(
            args.model, checkpoint, args.images, args.audio, args.batch_size, args.matmul_rows
        )
    if suite == "coldstart":
        return coldstart(args.model, checkpoint)
    return memory(args.model, checkpoint)


# -- compute floor -------------------------------------------------------------------


def matmul_gflops(dtype: torch.dtype, rows: int = 4 * 257, seconds: float = 3.0) -> float:
    """Measure torch's matrix-multiply rate as the model runs it: F.linear at the shape of
    a ViT-H MLP layer on 4 images (1028 tokens, 1280 -> 5120).

    The weight layout matters: on an AVX2 CPU in torch 2.9.1, bf16 ``torch.mm`` with a
    (1280, 5120) right operand ran at 0.14 GFLOP/s, while F.linear with the (5120, 1280)
    weight ran at 4.2 GFLOP/s.
    """
    x = torch.randn(rows, 1280, dtype=dtype)
    weight = torch.randn(5120, 1280, dtype=dtype)
    bias = torch.randn(5120, dtype=dtype)
    flop = 2 * x.shape[0] * x.shape[1] * weight.shape[0]
    torch.nn.functional.linear(x, weight, bias)
    runs = 0
    start = time.perf_counter()
    while runs < 2 or time.perf_counter() - start < seconds:
        torch.nn.functional.linear(x, weight, bias)
        runs += 1
    return flop * runs / (time.perf_counter() - start) / 1e9


# -- media ---------------------------------------------------------------------------


def media_files(kind: str, count: int) -> list[Path]:
    """Return ``count`` files of ``kind`` ("images" or "audio") from the paired corpus, repeated if short."""
    found = sorted(p for p in PAIRED.glob(f"*/{kind}/*") if p.is_file())
    if not found:
        raise FileNotFoundError(f"no {kind} under {PAIRED}; set BINDINDEX_BENCH_MEDIA")
    return [found[i % len(found)] for i in range(count)]


def link_folder(files: list[Path], folder: Path) -> Path:
    """Link ``files`` into ``folder`` under distinct names (a repeated file becomes a new item)."""
    folder.mkdir(parents=True, exist_ok=True)
    for i, source in enumerate(files):
        (folder / f"{i:04d}-{source.name}").symlink_to(source)
    return folder


# -- E1, E2, E3 --------------------------------------------------------------------------


def bindindex_throughput(
    model: str, checkpoint: Path | None, precision: str, folders: dict[str, Path], batch_size: int
) -> dict[str, Any]:
    """Index each folder with towers built beforehand; return files/s and the vectors by file name."""
    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(dir=CACHE_DIR) as tmp:
        index = Index.open(
            Path(tmp) / "index", model=model, checkpoint=checkpoint, precision=precision
        )
        try:
            for modality, folder in folders.items():
                tower = "vision" if modality == "image" else "audio"
                with timer() as elapsed:
                    index.encoder.load(tower)
                load_s = elapsed()
                with timer() as elapsed:
                    report = index.add_paths([folder], batch_size=batch_size)
                seconds = elapsed()
                assert report.failed == 0, report.failures
                ids, raw = index.catalog.vectors(index.dim)
                rows = index.catalog.items_by_ids(ids.tolist())
                vectors = {Path(rows[int(i)].path).name: raw[j] for j, i in enumerate(ids)}
                files = report.added
                out[modality] = {
                    "files": files,
                    "seconds": seconds,
                    "files_per_s": files / seconds,
                    "tower_load_s": load_s,
                    "vectors": {k: v for k, v in vectors.items() if (folder / k).exists()},
                }
        finally:
            index.close()
    return out


def reference_throughput(checkpoint: Path, folders: dict[str, Path]) -> dict[str, Any]:
    """Time the notebook-style baseline: reference model in fp32, one file per forward pass."""
    from bench_reference import import_reference_model

    from benchlib.reference_inputs import audio_input, image_input

    reference = import_reference_model()
    with timer() as elapsed:
        model = reference.imagebind_huge(pretrained=False)
        # mmap=True keeps the baseline's peak memory at one copy of the weights; it
        # only makes the baseline faster than a plain torch.load.
        model.load_state_dict(
            torch.load(checkpoint, map_location="cpu", weights_only=True, mmap=True)
        )
        model.eval()
    build_s = elapsed()
    out: dict[str, Any] = {"build_and_load_s": build_s}
    prepare: dict[str, Callable[[Path], torch.Tensor]] = {
        "image": image_input,
        "audio": audio_input,
    }
    key = {"image": "vision", "audio": "audio"}
    for modality, folder in folders.items():
        files = sorted(folder.iterdir())
        stored = []
        with timer() as elapsed, torch.no_grad():
            for path in files:
                x = prepare[modality](path)[None]
                stored.append(model({key[modality]: x})[key[modality]][0].numpy())
        seconds = elapsed()
        out[modality] = {
            "files": len(files),
            "seconds": seconds,
            "files_per_s": len(files) / seconds,
        }
    del model
    gc.collect()
    return out


def embed(
    model: str, checkpoint: Path, images: int, audio: int, batch_size: int, matmul_rows: int
) -> list[Result]:
    ckpt = checkpoint if model == "imagebind-huge" else None
    seconds = 3.0 if matmul_rows >= 256 else 0.1
    rates = {
        "bf16": matmul_gflops(torch.bfloat16, matmul_rows, seconds),
        "fp32": matmul_gflops(torch.float32, matmul_rows, seconds),
    }
    with tempfile.TemporaryDirectory(dir=CACHE_DIR) as tmp:
        folders = {
            "image": link_folder(media_files("images", images), Path(tmp) / "images"),
            "audio": link_folder(media_files("audio", audio), Path(tmp) / "audio"),
        }
        runs = {
            p: bindindex_throughput(model, ckpt, p, folders, batch_size) for p in ("bf16", "fp32")
        }
        gc.collect()
        baseline = reference_throughput(checkpoint, folders) if model == "imagebind-huge" else None

    results = []
    for rid, modality, gflop in (("E1", "image", IMAGE_GFLOP), ("E2", "audio", AUDIO_GFLOP)):
        bf16 = runs["bf16"][modality]["files_per_s"]
        fp32 = runs["fp32"][modality]["files_per_s"]
        base = baseline[modality]["files_per_s"] if baseline else None
        floor_bf16 = rates["bf16"] / gflop
        floor_fp32 = rates["fp32"] / gflop
        met = base is not None and bf16 >= 2 * base and bf16 >= 0.7 * floor_bf16
        results.append(
            Result(
                rid,
                f"{modality} files/s end to end, bindindex bf16 ({model}, batch {batch_size})",
                bf16,
                "files/s",
                f">= 2x baseline and >= 70 % of the bf16 floor ({gflop:.0f} GFLOP per file / bf16 matmul rate)",
                met,
                {
                    "bf16_files_per_s": bf16,
                    "fp32_files_per_s": fp32,
                    "baseline_fp32_files_per_s": base,
                    "bf16_vs_baseline": None if base is None else bf16 / base,
                    "fp32_vs_baseline": None if base is None else fp32 / base,
                    "bf16_matmul_gflops": rates["bf16"],
                    "fp32_matmul_gflops": rates["fp32"],
                    "bf16_floor_files_per_s": floor_bf16,
                    "fp32_floor_files_per_s": floor_fp32,
                    "bf16_share_of_floor": bf16 / floor_bf16,
                    "fp32_share_of_fp32_floor": fp32 / floor_fp32,
                    "files": runs["bf16"][modality]["files"],
                    "tower_load_s": {p: runs[p][modality]["tower_load_s"] for p in runs},
                    "baseline_build_and_load_s": baseline["build_and_load_s"] if baseline else None,
                },
            )
        )
    cosines = []
    for modality in ("image", "audio"):
        a = runs["bf16"][modality]["vectors"]
        b = runs["fp32"][modality]["vectors"]
        for name in sorted(set(a) & set(b)):
            x, y = a[name], b[name]
            cosines.append((modality, float(x @ y / (np.linalg.norm(x) * np.linalg.norm(y)))))
    worst = min(c for _, c in cosines)
    results.append(
        Result(
            "E3",
            "lowest cosine between bf16 and fp32 vectors of the same files",
            worst,
            "cosine",
            ">= 0.999",
            worst >= 0.999,
            {"per_file": cosines, "mean": float(np.mean([c for _, c in cosines]))},
        )
    )
    return results


# -- L1 ------------------------------------------------------------------------------------


def _subprocess_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [SCRIPTS_DIR, env.get("PYTHONPATH")]))
    return env


def coldstart(model: str, checkpoint: Path) -> list[Result]:
    """Time ``search --text`` in a new process against building and loading the reference model."""
    ckpt = ["--checkpoint", str(checkpoint)] if model == "imagebind-huge" else []
    with tempfile.TemporaryDirectory(dir=CACHE_DIR) as tmp:
        folder = link_folder(media_files("audio", 1), Path(tmp) / "media")
        index = Path(tmp) / "index"
        # One audio file gives the index a vector of this model; the audio tower is the cheapest.
        subprocess.run(
            [
                sys.executable,
                "-m",
                "bindindex",
                "index",
                str(folder),
                "--index",
                str(index),
                "--model",
                model,
                *ckpt,
                "--no-progress",
            ],
            check=True,
            capture_output=True,
            env=_subprocess_env(),
        )
        command = [
            sys.executable,
            "-m",
            "bindindex",
            "search",
            "--text",
            "a dog barking",
            "--index",
            str(index),
            "--model",
            model,
            *ckpt,
            "-k",
            "1",
        ]
        times = []
        for _ in range(2):
            start = time.perf_counter()
            done = subprocess.run(
                command, check=True, capture_output=True, text=True, env=_subprocess_env()
            )
            times.append(time.perf_counter() - start)
            assert done.stdout.strip(), done.stderr
    baseline_s = None
    if model == "imagebind-huge":
        script = (
            "import sys, time, torch\n"
            "from bench_reference import import_reference_model\n"
            "start = time.perf_counter()\n"
            "model = import_reference_model().imagebind_huge(pretrained=False)\n"
            f"model.load_state_dict(torch.load({str(checkpoint)!r}, map_location='cpu', weights_only=True, mmap=True))\n"
            "model.eval()\n"
            "print(time.perf_counter() - start)\n"
        )
        start = time.perf_counter()
        subprocess.run(
            [sys.executable, "-c", script],
            check=True,
            capture_output=True,
            text=True,
            env=_subprocess_env(),
        )
        baseline_s = time.perf_counter() - start
    first = times[0]
    return [
        Result(
            "L1",
            "new process: search --text to first result, full-size checkpoint (wall time)",
            first,
            "s",
            "<= 5 s (reference: build imagebind_huge and load its state dict, expected >= 20 s)",
            first <= 5.0,
            {"runs_s": times, "reference_process_s": baseline_s, "model": model},
        )
    ]


# -- M1 ------------------------------------------------------------------------------------


# Runs the command line and prints the process's own peak resident set on exit. Linux
# carries the parent's peak across fork and exec into the child's ru_maxrss. Without
# this, a bench process that has just written the checkpoint would set the child's peak.
_PEAK_WRAPPER = """
import atexit, resource, sys
def report():
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    peak_kib = int(line.split()[1])
    except OSError:
        pass
    print("PEAK_KIB", peak_kib, file=sys.stderr, flush=True)
atexit.register(report)
sys.argv = ["bindindex", *sys.argv[1:]]
from bindindex.cli.app import main
main()
"""


def memory(model: str, checkpoint: Path) -> list[Result]:
    """Peak RSS of an ``index`` process on one image and one audio file in bf16."""
    ckpt = ["--checkpoint", str(checkpoint)] if model == "imagebind-huge" else []
    with tempfile.TemporaryDirectory(dir=CACHE_DIR) as tmp:
        folder = Path(tmp) / "media"
        link_folder(media_files("images", 1), folder / "images")
        link_folder(media_files("audio", 1), folder / "audio")
        command = [
            sys.executable,
            "-c",
            _PEAK_WRAPPER,
            "index",
            str(folder),
            "--index",
            str(Path(tmp) / "index"),
            "--model",
            model,
            *ckpt,
            "--precision",
            "bf16",
            "--no-progress",
            "--json",
        ]
        start = time.perf_counter()
        done = subprocess.run(command, capture_output=True, text=True, env=_subprocess_env())
        seconds = time.perf_counter() - start
        assert done.returncode == 0, done.stderr
    peaks = []
    for line in done.stderr.splitlines():
        if line.startswith("PEAK_KIB "):
            peaks.append(line.split()[1])
    assert peaks, f"the index process did not report its peak memory:\n{done.stderr}"
    peak = int(peaks[-1]) * 1024 / GIB
    return [
        Result(
            "M1",
            "peak RSS of index (bf16, one image and one audio file, vision and audio towers)",
            peak,
            "GiB",
            "<= 3 GB",
            peak <= 3.0 * 1e9 / GIB,
            {"seconds": seconds, "model": model},
        )
    ]


# -- P1 ------------------------------------------------------------------------------------


def make_pipeline_corpus(files: int, megapixels: float, audio_s: int) -> Path:
    """Write large 4:3 JPEGs and long 44.1 kHz stereo WAVs (one file in four), cached."""
    root = CACHE_DIR / f"pipeline-{files}-{megapixels}-{audio_s}"
    if (root / ".complete").is_file():
        return root
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(files):
        if i % 4 == 3:
            t = np.arange(44_100 * audio_s) / 44_100
            tone = 0.2 * np.sin(2 * np.pi * (220 + 10 * i) * t)
            stereo = np.stack([tone, tone[::-1]], axis=1).astype(np.float32)
            soundfile.write(root / f"long{i:03d}.wav", stereo, 44_100, subtype="PCM_16")
        else:
            small = rng.integers(0, 255, (75, 100, 3), dtype=np.uint8)
            width = int((megapixels * 1e6 * 4 / 3) ** 0.5)
            size = (width, width * 3 // 4)
            image = Image.fromarray(small).resize(size, Image.Resampling.BICUBIC)
            image.save(root / f"large{i:03d}.jpg", quality=90)
    (root / ".complete").touch()
    return root


def _decode(path: Path) -> int:
    if path.suffix == ".jpg":
        return int(load_image(path).pixels.numel())
    return int(load_audio(path).clips.numel())


def pipeline(files: int, megapixels: float, audio_s: int) -> list[Result]:
    corpus = make_pipeline_corpus(files, megapixels, audio_s)
    paths = sorted(p for p in corpus.iterdir() if not p.name.startswith("."))
    workers = os.cpu_count() or 1
    with Pool(workers) as pool:
        pool.map(_decode, paths[:workers])  # start-up and imports happen before timing
        with timer() as elapsed:
            pool.map(_decode, paths, chunksize=1)
        decode_s = elapsed()
    decode_rate = len(paths) / decode_s
    with tempfile.TemporaryDirectory(dir=CACHE_DIR) as tmp:
        index = Index.open(Path(tmp) / "index", model="imagebind-test")
        try:
            index.encoder.load("vision")
            index.encoder.load("audio")
            with timer() as elapsed:
                report = index.add_paths([corpus])
            index_s = elapsed()
        finally:
            index.close()
    index_rate = report.added / index_s
    share = index_rate / decode_rate
    return [
        Result(
            "P1",
            f"index throughput with imagebind-test as a share of decoding alone on {workers} processes",
            share,
            "ratio",
            ">= 0.90",
            share >= 0.9,
            {
                "files": len(paths),
                "megapixels_per_image": megapixels,
                "seconds_per_audio_file": audio_s,
                "decode_only_files_per_s": decode_rate,
                "index_files_per_s": index_rate,
                "index_workers": "default (min(4, cpu_count)) threads",
                "failed": report.failed,
            },
        )
    ]
