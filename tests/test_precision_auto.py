"""Precision ``auto``: bf16 only where the hardware computes bfloat16 natively."""

from __future__ import annotations

import numpy as np
import torch

from bindindex.model.encoder import Encoder, cpu_has_native_bf16, resolve_precision


def test_explicit_precisions_unchanged() -> None:
    cpu = torch.device("cpu")
    assert resolve_precision("fp32", cpu) == "fp32"
    assert resolve_precision("bf16", cpu) == "bf16"


def test_auto_follows_cpu_support() -> None:
    expected = "bf16" if cpu_has_native_bf16() else "fp32"
    assert resolve_precision("auto", torch.device("cpu")) == expected


def test_encoder_reports_resolved_precision() -> None:
    encoder = Encoder("imagebind-test", precision="auto")
    assert encoder.precision in ("fp32", "bf16")
    vectors = encoder.embed_images(torch.zeros(1, 3, 224, 224))
    assert vectors.dtype == np.float32
