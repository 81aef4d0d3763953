"""Parity of bindindex's ImageBind with Meta's reference implementation.

The reference is the ``imagebind-unofficial`` package, imported as
``imagebind.models.imagebind_model``. Its top-level ``imagebind/__init__.py`` imports a
data module that needs pytorchvideo, so a stub package object takes its place in
``sys.modules`` and only the model submodules run.
"""

from __future__ import annotations

import gc
import importlib.util
import math
import sys
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import Tensor
from torch.overrides import TorchFunctionMode

from bindindex.errors import ModelError
from bindindex.model.config import HUGE, MODALITIES, TEST, ImageBindConfig
from bindindex.model.imagebind import (
    ImageBind,
    causal_mask,
    count_parameters,
    init_random_weights,
)
from bindindex.model.layers import SelfAttention
from bindindex.model.weights import load_model

START_OF_TEXT = 49406
END_OF_TEXT = 49407

# Small towers with a different width per modality, so that a mix-up between towers
# changes a shape. The other reference modalities (depth, thermal, IMU) are shrunk too.
SMALL = ImageBindConfig(
    vision_embed_dim=64,
    vision_num_blocks=2,
    vision_num_heads=4,
    text_embed_dim=48,
    text_num_blocks=2,
    text_num_heads=4,
    audio_embed_dim=32,
    audio_num_blocks=2,
    audio_num_heads=2,
    out_embed_dim=40,
)
SMALL_REFERENCE_KWARGS: dict[str, Any] = {
    "out_embed_dim": 40,
    "vision_embed_dim": 64,
    "vision_num_blocks": 2,
    "vision_num_heads": 4,
    "text_embed_dim": 48,
    "text_num_blocks": 2,
    "text_num_heads": 4,
    "audio_embed_dim": 32,
    "audio_num_blocks": 2,
    "audio_num_heads": 2,
    "depth_embed_dim": 16,
    "depth_num_blocks": 1,
    "depth_num_heads": 2,
    "thermal_embed_dim": 16,
    "thermal_num_blocks": 1,
    "thermal_num_heads": 2,
    "imu_embed_dim": 16,
    "imu_num_blocks": 1,
    "imu_num_heads": 2,
}

MAX_RELATIVE_ERROR = 1e-5


# ---------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------


def import_reference() -> types.ModuleType:
    """Import ``imagebind.models.imagebind_model`` without running ``imagebind/__init__``.

    The stub package and the imported submodules stay in ``sys.modules``. The
    ``reference`` fixture removes them afterwards so that other tests can set up their own.
    """
    for dependency in ("timm", "einops", "iopath", "ftfy", "regex"):
        pytest.importorskip(dependency, reason="dependency of imagebind-unofficial")
    if "imagebind" not in sys.modules:
        spec = importlib.util.find_spec("imagebind")
        if spec is None or not spec.submodule_search_locations:
            pytest.skip("reference package imagebind-unofficial is not installed")
        stub = types.ModuleType("imagebind")
        stub.__path__ = list(spec.submodule_search_locations)
        # importlib.util.find_spec raises for a module in sys.modules without a spec.
        stub.__spec__ = spec
        sys.modules["imagebind"] = stub
    from imagebind.models import imagebind_model

    return imagebind_model


class _LinspaceOnCpu(TorchFunctionMode):
    """Create torch.linspace results on the CPU inside a meta-device context.

    The reference's SimpleTransformer calls ``.item()`` on a linspace of drop-path rates,
    which fails for meta tensors. Every other tensor stays on the meta device.
    """

    def __torch_function__(
        self,
        func: Any,
        types: Any,
        args: tuple[Any, ...] = (),
        kwargs: dict[str, Any] | None = None,
    ) -> Any:
        kwargs = dict(kwargs or {})
        if func is torch.linspace:
            kwargs["device"] = "cpu"
        return func(*args, **kwargs)


def restrict(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """Keep the reference entries of the vision, text and audio towers."""
    return {key: value for key, value in state.items() if key.split(".")[1] in MODALITIES}


def make_tokens(batch: int, generator: torch.Generator) -> Tensor:
    """Build CLIP-like token rows: start, random ids, end of text, then zero padding.

    Row 0 ends at position 1 (empty text), row 1 at 76 (no padding) and later rows at
    random positions, because the text head reads the token at the end-of-text position.
    """
    tokens = torch.zeros(batch, 77, dtype=torch.int64)
    fixed_positions = [1, 76]
    for row in range(batch):
        if row < len(fixed_positions):
            end = fixed_positions[row]
        else:
            end = int(torch.randint(2, 76, (1,), generator=generator))
        tokens[row, 0] = START_OF_TEXT
        tokens[row, 1:end] = torch.randint(1, START_OF_TEXT, (end - 1,), generator=generator)
        tokens[row, end] = END_OF_TEXT
    return tokens


def make_inputs(batch: int, seed: int) -> dict[str, Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return {
        "vision": torch.randn(batch, 3, 224, 224, generator=generator),
        "text": make_tokens(batch, generator),
        "audio": torch.randn(batch, 3, 1, 128, 204, generator=generator),
    }


def relative_errors(actual: Tensor, expected: Tensor) -> tuple[float, float]:
    """Return ||a - b|| / ||b|| and max|a - b| / max|b|."""
    diff = (actual.double() - expected.double()).flatten()
    reference = expected.double().flatten()
    return (
        float(diff.norm() / reference.norm()),
        float(diff.abs().max() / reference.abs().max()),
    )


def embed_all(model: ImageBind, inputs: dict[str, Tensor]) -> dict[str, Tensor]:
    with torch.inference_mode():
        return {modality: model.embed(modality, inputs[modality]) for modality in model.modalities}


def cosine(a: Tensor, b: Tensor) -> Tensor:
    return torch.nn.functional.cosine_similarity(a.double(), b.double(), dim=-1)


@pytest.fixture(scope="module")
def reference() -> Iterator[types.ModuleType]:
    saved = {name: module for name, module in sys.modules.items() if name.startswith("imagebind")}
    try:
        yield import_reference()
    finally:
        for name in [name for name in sys.modules if name.startswith("imagebind")]:
            del sys.modules[name]
        sys.modules.update(saved)


# ---------------------------------------------------------------------------
# Architecture: keys, shapes, parameter count
# ---------------------------------------------------------------------------


def test_huge_state_dict_matches_reference(reference: types.ModuleType) -> None:
    with torch.device("meta"), _LinspaceOnCpu():
        reference_model = reference.imagebind_huge()
    expected = {key: tuple(v.shape) for key, v in restrict(reference_model.state_dict()).items()}
    ours = {key: tuple(v.shape) for key, v in ImageBind(HUGE, MODALITIES).state_dict().items()}

    assert sorted(set(expected) - set(ours)) == []
    assert sorted(set(ours) - set(expected)) == []
    mismatched = {key: (ours[key], shape) for key, shape in expected.items() if ours[key] != shape}
    assert mismatched == {}
    assert list(ours) == list(expected)


def test_huge_state_dict_has_reference_buffers() -> None:
    model = ImageBind(HUGE, MODALITIES)
    buffers = dict(model.named_buffers())

    assert set(buffers) == {
        "modality_preprocessors.text.mask",
        "modality_postprocessors.audio.1.log_logit_scale",
    }
    assert buffers["modality_preprocessors.text.mask"].shape == (77, 77)
    parameters = dict(model.named_parameters())
    assert parameters["modality_postprocessors.text.1.log_logit_scale"].shape == ()


def test_huge_parameter_count() -> None:
    def block(dim: int, bias_kv: bool = False) -> int:
        # in_proj 3D^2+3D, out_proj D^2+D, fc1 4D^2+4D, fc2 4D^2+D, two LayerNorms 4D
        return 12 * dim * dim + 13 * dim + (2 * dim if bias_kv else 0)

    vision = (
        32 * block(1280)
        + 1280 * 3 * 2 * 14 * 14  # Conv3d stem
        + 1280  # class token
        + 257 * 1280  # position embedding
        + 2 * 1280  # pre-transformer LayerNorm
        + 2 * 1280  # head LayerNorm
        + 1280 * 1024  # head projection
    )
    text = (
        24 * block(1024)
        + 49408 * 1024  # token embedding
        + 77 * 1024  # position embedding
        + 2 * 1024  # head LayerNorm
        + 1024 * 1024  # head projection
        + 1  # learned log logit scale
    )
    audio = (
        12 * block(768, bias_kv=True)
        + 768 * 16 * 16  # Conv2d stem
        + 2 * 768  # stem LayerNorm
        + 768  # class token
        + 229 * 768  # position embedding
        + 2 * 768  # head LayerNorm
        + 768 * 1024  # head projection
    )
    model = ImageBind(HUGE, MODALITIES)

    assert count_parameters(model) == vision + text + audio == 1_073_097_729
    assert all(p.device.type == "meta" for p in model.parameters())


def test_constructor_builds_only_requested_towers() -> None:
    model = ImageBind(HUGE, ["text"])
    towers = {key.split(".")[1] for key in model.state_dict()}

    assert towers == {"text"}
    assert model.modalities == ("text",)


def test_constructor_rejects_bad_modalities() -> None:
    with pytest.raises(ModelError, match="unknown modality 'depth'"):
        ImageBind(TEST, ["depth"])
    with pytest.raises(ModelError, match="at least one modality"):
        ImageBind(TEST, [])


def test_unloaded_model_raises() -> None:
    model = ImageBind(TEST, ["vision"])

    with pytest.raises(ModelError, match="no weights"):
        model.embed_vision(torch.zeros(1, 3, 224, 224))


def test_random_init_fixed_values() -> None:
    model = init_random_weights(ImageBind(TEST, MODALITIES), seed=3)
    state = model.state_dict()

    assert torch.equal(state["modality_preprocessors.text.mask"], causal_mask(77))
    assert state["modality_preprocessors.text.mask"][0, 1] == float("-inf")
    assert state["modality_preprocessors.text.mask"][1, 0] == 0
    assert float(state["modality_postprocessors.text.1.log_logit_scale"]) == pytest.approx(
        math.log(1 / 0.07)
    )
    assert float(state["modality_postprocessors.audio.1.log_logit_scale"]) == pytest.approx(
        math.log(20.0)
    )
    assert torch.equal(state["modality_trunks.audio.blocks.0.norm_1.weight"], torch.ones(48))
    assert torch.equal(state["modality_trunks.audio.blocks.0.norm_1.bias"], torch.zeros(48))
    std = float(state["modality_trunks.vision.blocks.0.mlp.fc1.weight"].std())
    assert std == pytest.approx(0.02, rel=0.05)


def test_random_init_independent_of_towers_built() -> None:
    text_only = init_random_weights(ImageBind(TEST, ["text"]), seed=5).state_dict()
    everything = init_random_weights(ImageBind(TEST, MODALITIES), seed=5).state_dict()
    other_seed = init_random_weights(ImageBind(TEST, ["text"]), seed=6).state_dict()
    key = "modality_trunks.text.blocks.1.attn.in_proj_weight"

    assert all(torch.equal(value, everything[k]) for k, value in text_only.items())
    assert not torch.equal(text_only[key], other_seed[key])


@pytest.mark.parametrize(
    ("modality", "bad_input", "message"),
    [
        ("vision", torch.zeros(2, 3, 224, 225), r"\(\*, 3, 224, 224\)"),
        ("vision", torch.zeros(3, 224, 224), "images must have shape"),
        ("text", torch.zeros(2, 76, dtype=torch.int64), r"\(\*, 77\)"),
        ("text", torch.zeros(2, 77, dtype=torch.int32), "int64"),
        ("audio", torch.zeros(2, 1, 128, 204), r"\(\*, \*, 1, 128, 204\)"),
        ("audio", torch.zeros(2, 0, 1, 128, 204), "at least one clip"),
    ],
)
def test_embed_rejects_bad_input(modality: str, bad_input: Tensor, message: str) -> None:
    model = init_random_weights(ImageBind(TEST, [modality]), seed=0)

    with pytest.raises(ModelError, match=message):
        model.embed(modality, bad_input)


def test_embed_requires_built_tower() -> None:
    model = init_random_weights(ImageBind(TEST, ["audio"]), seed=0)

    with pytest.raises(ModelError, match="without the vision tower"):
        model.embed_vision(torch.zeros(1, 3, 224, 224))


@pytest.mark.parametrize(
    ("add_bias_kv", "masked"), [(False, False), (True, False), (False, True), (True, True)]
)
def test_attention_matches_multihead_attention(add_bias_kv: bool, masked: bool) -> None:
    generator = torch.Generator().manual_seed(21)
    with torch.random.fork_rng():
        torch.manual_seed(21)
        expected_module = torch.nn.MultiheadAttention(24, 3, add_bias_kv=add_bias_kv).eval()
    state = {
        key: torch.randn(value.shape, generator=generator) * 0.3
        for key, value in expected_module.state_dict().items()
    }
    expected_module.load_state_dict(state)
    with torch.device("meta"):
        ours = SelfAttention(24, 3, add_bias_kv=add_bias_kv)
    ours.load_state_dict(state, strict=True, assign=True)
    x = torch.randn(2, 9, 24, generator=generator)  # (B, L, D)
    mask = causal_mask(9) if masked else None

    sequence_first = x.transpose(0, 1)  # (L, B, D), the layout nn.MultiheadAttention expects

    with torch.inference_mode():
        expected, _ = expected_module(
            sequence_first, sequence_first, sequence_first, need_weights=False, attn_mask=mask
        )
        actual = ours(x, mask)

    torch.testing.assert_close(actual, expected.transpose(0, 1), rtol=1e-6, atol=1e-6)


# ---------------------------------------------------------------------------
# Numerical parity on small towers
# ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def small_reference(reference: types.ModuleType) -> torch.nn.Module:
    """Build a small reference model whose every parameter is perturbed.

    The reference initialises biases to zero and LayerNorms to ones and zeros, which
    would hide mistakes in how they are applied, so noise is added to all parameters.
    """
    with torch.random.fork_rng():
        torch.manual_seed(1234)
        model = reference.ImageBindModel(**SMALL_REFERENCE_KWARGS).eval()
        with torch.no_grad():
            for parameter in model.parameters():
                parameter.add_(torch.randn_like(parameter) * 0.05)
    return model


def test_small_parity(small_reference: torch.nn.Module) -> None:
    inputs = make_inputs(batch=4, seed=99)
    with torch.inference_mode():
        expected = small_reference(dict(inputs))

    ours = ImageBind(SMALL, MODALITIES)
    ours.load_state_dict(restrict(small_reference.state_dict()), strict=True, assign=True)
    actual = embed_all(ours.eval(), inputs)

    for modality in MODALITIES:
        assert actual[modality].shape == (4, 40), modality
        norm_error, max_error = relative_errors(actual[modality], expected[modality])
        print(f"small {modality}: relative L2 {norm_error:.2e}, relative max {max_error:.2e}")
        assert norm_error < MAX_RELATIVE_ERROR, modality
        assert max_error < MAX_RELATIVE_ERROR, modality


def test_small_parity_outputs_have_reference_scales(small_reference: torch.nn.Module) -> None:
    ours = ImageBind(SMALL, MODALITIES)
    ours.load_state_dict(restrict(small_reference.state_dict()), strict=True, assign=True)
    text_scale = small_reference.state_dict()["modality_postprocessors.text.1.log_logit_scale"]
    outputs = embed_all(ours.eval(), make_inputs(batch=2, seed=5))

    torch.testing.assert_close(outputs["vision"].norm(dim=-1), torch.ones(2))
    torch.testing.assert_close(
        outputs["text"].norm(dim=-1), torch.full((2,), float(text_scale.exp().clamp(max=100)))
    )
    assert bool((outputs["audio"].norm(dim=-1) <= 20.0 + 1e-4).all())


def test_small_parity_audio_single_clip(small_reference: torch.nn.Module) -> None:
    clips = torch.randn(2, 1, 1, 128, 204, generator=torch.Generator().manual_seed(8))
    with torch.inference_mode():
        expected = small_reference({"audio": clips})["audio"]
    ours = ImageBind(SMALL, ["audio"])
    ours.load_state_dict(
        {k: v for k, v in small_reference.state_dict().items() if ".audio." in k},
        strict=True,
        assign=True,
    )
    actual = embed_all(ours.eval(), {"audio": clips})["audio"]

    norm_error, max_error = relative_errors(actual, expected)
    assert norm_error < MAX_RELATIVE_ERROR
    assert max_error < MAX_RELATIVE_ERROR


# ---------------------------------------------------------------------------
# Numerical parity on the full imagebind_huge (slow)
# ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def huge_reference(reference: types.ModuleType) -> Iterator[dict[str, Any]]:
    """Build imagebind_huge once with random weights and record its outputs.

    One-dimensional parameters (biases, LayerNorm weights) get noise so that they are not
    all zeros and ones. The full model needs about 4.8 GB. Only the state dict of the
    three towers is kept, and that shares storage with the model that is deleted.
    """
    with torch.random.fork_rng():
        torch.manual_seed(2024)
        model = reference.imagebind_huge().eval()
        with torch.no_grad():
            for parameter in model.parameters():
                if parameter.ndim <= 1:
                    parameter.add_(torch.randn_like(parameter) * 0.05)

    inputs = make_inputs(batch=1, seed=11)
    with torch.inference_mode():
        outputs = model(dict(inputs))
    state = restrict(model.state_dict())
    del model
    gc.collect()

    yield {"state": state, "inputs": inputs, "outputs": outputs}
    del state
    gc.collect()


@pytest.mark.slow
def test_huge_parity(huge_reference: dict[str, Any]) -> None:
    ours = ImageBind(HUGE, MODALITIES)
    ours.load_state_dict(huge_reference["state"], strict=True, assign=True)
    actual = embed_all(ours.eval(), huge_reference["inputs"])

    for modality in MODALITIES:
        expected = huge_reference["outputs"][modality]
        assert actual[modality].shape == (1, 1024), modality
        norm_error, max_error = relative_errors(actual[modality], expected)
        print(f"huge {modality}: relative L2 {norm_error:.2e}, relative max {max_error:.2e}")
        assert norm_error < MAX_RELATIVE_ERROR, modality
        assert max_error < MAX_RELATIVE_ERROR, modality
    del ours
    gc.collect()


@pytest.fixture
def huge_checkpoint(huge_reference: dict[str, Any], tmp_path: Path) -> Iterator[Path]:
    """Save the random huge state dict with torch.save and delete it after the test.

    The file is about 4.3 GB, and pytest keeps the last three temporary directories.
    """
    path = tmp_path / "imagebind_huge_random.pth"
    torch.save(huge_reference["state"], path)
    yield path
    path.unlink(missing_ok=True)


@pytest.mark.slow
def test_huge_checkpoint_fp32_and_bf16(
    huge_reference: dict[str, Any],
    huge_checkpoint: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("BINDINDEX_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("BINDINDEX_CHECKPOINT", raising=False)
    checkpoint = huge_checkpoint
    inputs = huge_reference["inputs"]

    fp32_model = load_model("imagebind-huge", modalities=MODALITIES, checkpoint=checkpoint)
    fp32 = embed_all(fp32_model, inputs)
    del fp32_model
    gc.collect()
    for modality in MODALITIES:
        norm_error, max_error = relative_errors(fp32[modality], huge_reference["outputs"][modality])
        print(f"huge checkpoint fp32 {modality}: relative L2 {norm_error:.2e}")
        assert norm_error < MAX_RELATIVE_ERROR, modality
        assert max_error < MAX_RELATIVE_ERROR, modality

    bf16_model = load_model(
        "imagebind-huge", modalities=MODALITIES, checkpoint=checkpoint, precision="bf16"
    )
    assert bf16_model.dtype == torch.bfloat16
    bf16 = embed_all(bf16_model, inputs)
    del bf16_model
    gc.collect()
    for modality in MODALITIES:
        assert bf16[modality].dtype == torch.float32, modality
        similarity = float(cosine(bf16[modality], fp32[modality]).min())
        print(f"huge checkpoint bf16 {modality}: cosine to fp32 {similarity:.5f}")
        assert similarity >= 0.99, modality
