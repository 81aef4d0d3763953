"""Encoder: lazy tower building, determinism, shapes, precision and input checks."""

from __future__ import annotations

import logging
import socket
from pathlib import Path

import numpy as np
import pytest
import torch

from bindindex.errors import ModelError, UsageError, WeightsError
from bindindex.model import Encoder, checkpoint_fingerprint

START_OF_TEXT = 49406
END_OF_TEXT = 49407


def make_tokens(ends: list[int]) -> torch.Tensor:
    """Build token rows with a start token, ids 1000.. and an end-of-text token at ``ends``."""
    tokens = torch.zeros(len(ends), 77, dtype=torch.int64)
    for row, end in enumerate(ends):
        tokens[row, 0] = START_OF_TEXT
        tokens[row, 1:end] = torch.arange(1000, 1000 + end - 1)
        tokens[row, end] = END_OF_TEXT
    return tokens


def make_images(batch: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(batch, 3, 224, 224, generator=torch.Generator().manual_seed(seed))


def make_audio(batch: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(batch, 3, 1, 128, 204, generator=torch.Generator().manual_seed(seed))


def cosine_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a64 = a.astype(np.float64)
    b64 = b.astype(np.float64)
    return (a64 * b64).sum(axis=1) / (np.linalg.norm(a64, axis=1) * np.linalg.norm(b64, axis=1))


def test_properties_of_test_model() -> None:
    encoder = Encoder("imagebind-test")

    assert encoder.model_name == "imagebind-test"
    assert encoder.model_id == "imagebind-test@seed0"
    assert encoder.meaningless is True
    assert encoder.dim == 1024
    assert encoder.precision == "fp32"
    assert encoder.precision_note.startswith("fp32")
    assert encoder.checkpoint_path is None
    assert encoder.loaded_modalities == frozenset()


def test_text_query_builds_only_text_tower() -> None:
    encoder = Encoder("imagebind-test")

    encoder.embed_tokens(make_tokens([5]))
    assert encoder.loaded_modalities == {"text"}

    encoder.embed_images(make_images(1))
    assert encoder.loaded_modalities == {"text", "vision"}


def test_outputs_shapes_and_finiteness() -> None:
    encoder = Encoder("imagebind-test")

    outputs = {
        "vision": encoder.embed_images(make_images(3)),
        "text": encoder.embed_tokens(make_tokens([1, 9, 76])),
        "audio": encoder.embed_audio(make_audio(3)),
    }

    for modality, vectors in outputs.items():
        assert isinstance(vectors, np.ndarray), modality
        assert vectors.dtype == np.float32, modality
        assert vectors.shape == (3, 1024), modality
        assert np.isfinite(vectors).all(), modality


def test_outputs_are_not_renormalised() -> None:
    encoder = Encoder("imagebind-test")

    vision = np.linalg.norm(encoder.embed_images(make_images(2)), axis=1)
    text = np.linalg.norm(encoder.embed_tokens(make_tokens([4, 30])), axis=1)
    audio = np.linalg.norm(encoder.embed_audio(make_audio(2)), axis=1)

    np.testing.assert_allclose(vision, 1.0, rtol=1e-5)
    # The test model's text scale is the initial exp(log(1/0.07)).
    np.testing.assert_allclose(text, 1 / 0.07, rtol=1e-5)
    # Audio is the mean of clip vectors of norm 20, so its norm is at most 20.
    assert (audio <= 20.0 + 1e-3).all()
    assert (audio > 10.0).all()


def test_deterministic_across_instances_and_build_order() -> None:
    first = Encoder("imagebind-test")
    second = Encoder("imagebind-test")
    tokens = make_tokens([3, 50])
    images = make_images(2, seed=4)
    audio = make_audio(2, seed=4)

    first_text = first.embed_tokens(tokens)
    # The second encoder builds its towers in another order.
    second_audio = second.embed_audio(audio)
    second_images = second.embed_images(images)
    second_text = second.embed_tokens(tokens)

    np.testing.assert_array_equal(first_text, second_text)
    np.testing.assert_array_equal(first.embed_images(images), second_images)
    np.testing.assert_array_equal(first.embed_audio(audio), second_audio)


def test_batch_items_are_independent() -> None:
    encoder = Encoder("imagebind-test")
    images = make_images(3, seed=2)
    tokens = make_tokens([2, 40, 76])

    batched_images = encoder.embed_images(images)
    batched_text = encoder.embed_tokens(tokens)

    for row in range(3):
        np.testing.assert_allclose(
            encoder.embed_images(images[row : row + 1])[0], batched_images[row], atol=1e-5
        )
        np.testing.assert_allclose(
            encoder.embed_tokens(tokens[row : row + 1])[0], batched_text[row], atol=1e-4
        )


def test_text_ignores_tokens_after_end_of_text() -> None:
    encoder = Encoder("imagebind-test")
    tokens = make_tokens([10])
    noisy = tokens.clone()
    noisy[0, 11:] = 777

    np.testing.assert_allclose(encoder.embed_tokens(tokens), encoder.embed_tokens(noisy), atol=1e-5)


def test_empty_batch() -> None:
    encoder = Encoder("imagebind-test")

    assert encoder.embed_images(make_images(0)).shape == (0, 1024)
    assert encoder.embed_tokens(make_tokens([])).shape == (0, 1024)
    assert encoder.embed_audio(make_audio(0)).shape == (0, 1024)


def test_bf16_runs_and_matches_fp32() -> None:
    fp32 = Encoder("imagebind-test")
    bf16 = Encoder("imagebind-test", precision="bf16")
    images = make_images(2, seed=3)
    tokens = make_tokens([6, 60])
    audio = make_audio(2, seed=3)

    assert bf16.precision == "bf16"
    assert "autocast" in bf16.precision_note
    for name, method in (
        ("vision", "embed_images"),
        ("text", "embed_tokens"),
        ("audio", "embed_audio"),
    ):
        x = {"vision": images, "text": tokens, "audio": audio}[name]
        low = getattr(bf16, method)(x)
        high = getattr(fp32, method)(x)
        assert low.dtype == np.float32, name
        assert np.isfinite(low).all(), name
        assert cosine_rows(low, high).min() >= 0.99, name


def test_integer_tokens_are_widened() -> None:
    encoder = Encoder("imagebind-test")
    tokens = make_tokens([7])

    np.testing.assert_array_equal(
        encoder.embed_tokens(tokens.to(torch.int32)), encoder.embed_tokens(tokens)
    )


@pytest.mark.parametrize(
    ("method", "bad_input", "message"),
    [
        ("embed_tokens", torch.zeros(1, 77), "integer tensor"),
        ("embed_tokens", torch.zeros(1, 76, dtype=torch.int64), "shape"),
        ("embed_tokens", [[1, 2, 3]], "torch.Tensor"),
        ("embed_images", torch.zeros(1, 3, 224, 224, dtype=torch.uint8), "floating-point"),
        ("embed_images", torch.zeros(1, 3, 112, 112), "shape"),
        ("embed_audio", torch.zeros(1, 1, 128, 204), "shape"),
    ],
)
def test_bad_inputs_raise(method: str, bad_input: object, message: str) -> None:
    encoder = Encoder("imagebind-test")

    with pytest.raises(ModelError, match=message):
        getattr(encoder, method)(bad_input)


def test_bad_options_raise(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="unknown model"):
        Encoder("imagebind-large")
    with pytest.raises(ModelError, match="invalid precision"):
        Encoder("imagebind-test", precision="half")
    with pytest.raises(ModelError, match="device"):
        Encoder("imagebind-test", device="cuda:99")
    with pytest.raises(ModelError, match="invalid device"):
        Encoder("imagebind-test", device="gpu")
    with pytest.raises(UsageError, match="takes no checkpoint"):
        Encoder("imagebind-test", checkpoint=tmp_path / "weights.pth")


def test_huge_model_id_without_building(tmp_path: Path) -> None:
    checkpoint = tmp_path / "weights.pth"
    checkpoint.write_bytes(b"not really weights")
    encoder = Encoder("imagebind-huge", checkpoint=checkpoint)

    assert encoder.model_id == "imagebind-huge@" + checkpoint_fingerprint(checkpoint)[:12]
    assert encoder.checkpoint_path == checkpoint
    assert encoder.meaningless is False
    assert encoder.loaded_modalities == frozenset()


def test_huge_with_bad_checkpoint_raises_on_first_embed(tmp_path: Path) -> None:
    checkpoint = tmp_path / "weights.pth"
    torch.save({"modality_trunks.text.blocks.0.norm_1.weight": torch.ones(4)}, checkpoint)
    encoder = Encoder("imagebind-huge", checkpoint=checkpoint)

    with pytest.raises(WeightsError, match="does not fit the architecture"):
        encoder.embed_tokens(make_tokens([3]))
    assert encoder.loaded_modalities == frozenset()


def test_huge_without_checkpoint_raises(monkeypatch: pytest.MonkeyPatch) -> None:
    # A loopback port that nothing listens on simulates a machine without network.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setenv("BINDINDEX_CHECKPOINT_URL", f"http://127.0.0.1:{port}/imagebind_huge.pth")
    encoder = Encoder("imagebind-huge")

    with pytest.raises(WeightsError, match="--checkpoint FILE"):
        _ = encoder.model_id
    assert encoder.loaded_modalities == frozenset()


def test_bf16_note_warns_without_native_support(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr("bindindex.model.encoder.cpu_has_native_bf16", lambda: False)

    with caplog.at_level(logging.WARNING, logger="bindindex.model.encoder"):
        slow = Encoder("imagebind-test", precision="bf16")

    assert "AVX512-BF16" in slow.precision_note
    assert "without native bfloat16 support" in caplog.text
    assert "AVX512-BF16" not in Encoder("imagebind-test", precision="fp32").precision_note


def test_bf16_note_without_warning_on_native_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("bindindex.model.encoder.cpu_has_native_bf16", lambda: True)

    assert "AVX512-BF16" not in Encoder("imagebind-test", precision="bf16").precision_note
