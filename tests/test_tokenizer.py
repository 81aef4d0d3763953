"""Tests of the CLIP BPE tokenizer against ImageBind's SimpleTokenizer."""

from __future__ import annotations

import importlib
import importlib.util
import socket
import sys
import types
from pathlib import Path

import pytest
import torch

from bindindex.media.text import CONTEXT_LENGTH, Tokenizer, default_tokenizer, tokenize

TEXTS = [
    "a dog",
    "A photo of a DOG barking loudly",
    "the dog's ball, the cats' toys; they're here, I'd go, we'll see, you've won, I'm in",
    "café crème brûlée naïve façade",
    "e\u0301 a\u0300 n\u0303 combining marks",
    "日本語のテキストと中文文本",
    "한국어 문장",
    "🐶🐱🚗⛈️ emoji 👍🏽",
    "שלום עולם",
    "مرحبا بالعالم",
    "Привет, мир!",
    "",
    "   ",
    "!!!???...,,,;;;",
    "&amp;lt;b&amp;gt;bold&amp;lt;/b&amp;gt; &quot;quoted&quot; &#39;single&#39;",
    "123 4567.89 1,000,000 3.14159 2nd 21st",
    "MiXeD CaSe TeXt",
    "\t\n  whitespace \u00a0 runs\u2003and\r\nline breaks  ",
    "Mojibake: cafÃ© and â€œquotesâ€\x9d",
    "\x00\x01 control characters \x7f",
    "<|startoftext|> special <|endoftext|> tokens",
    "word " * 100,
    "supercalifragilisticexpialidocious antidisestablishmentarianism",
    "thunderstorm over a city skyline at night",
]


@pytest.fixture(scope="module")
def reference_tokenizer():
    """Build ImageBind's SimpleTokenizer without running imagebind/__init__.py.

    That file imports the data module, which needs pytorchvideo.
    """
    spec = importlib.util.find_spec("imagebind")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("the reference package imagebind-unofficial is not installed")
    package_dir = Path(next(iter(spec.submodule_search_locations)))
    saved = {name: module for name, module in sys.modules.items() if name.startswith("imagebind")}
    stub = types.ModuleType("imagebind")
    stub.__path__ = [str(package_dir)]
    sys.modules["imagebind"] = stub
    try:
        preprocessors = importlib.import_module("imagebind.models.multimodal_preprocessors")
        yield preprocessors.SimpleTokenizer(
            bpe_path=str(package_dir / "bpe" / "bpe_simple_vocab_16e6.txt.gz")
        )
    finally:
        for name in [n for n in sys.modules if n.startswith("imagebind")]:
            del sys.modules[name]
        sys.modules.update(saved)


def test_ids_match_reference(reference_tokenizer) -> None:
    ours = tokenize(TEXTS)
    reference = reference_tokenizer(TEXTS)
    for index, text in enumerate(TEXTS):
        assert ours[index].tolist() == reference[index].tolist(), repr(text)


def test_vocabulary_matches_reference(reference_tokenizer) -> None:
    assert default_tokenizer().encoder == reference_tokenizer.encoder


def test_shape_and_dtype() -> None:
    tokens = tokenize(["a dog", "a cat"])
    assert tokens.shape == (2, CONTEXT_LENGTH)
    assert tokens.dtype == torch.long


def test_special_ids_and_padding() -> None:
    row = tokenize(["a dog"])[0].tolist()
    assert row[0] == 49406
    assert row[3] == 49407
    assert row[4:] == [0] * (CONTEXT_LENGTH - 4)


def test_empty_text_is_start_and_end() -> None:
    row = tokenize([""])[0].tolist()
    assert row[:2] == [49406, 49407]
    assert row[2:] == [0] * (CONTEXT_LENGTH - 2)


def test_long_text_keeps_end_token_last() -> None:
    row = tokenize(["word " * 200])[0].tolist()
    assert row[0] == 49406
    assert row[-1] == 49407
    assert 0 not in row


def test_single_string_is_one_text() -> None:
    assert torch.equal(tokenize("a dog"), tokenize(["a dog"]))


def test_empty_list_gives_empty_tensor() -> None:
    assert tokenize([]).shape == (0, CONTEXT_LENGTH)


def test_non_string_item_raises() -> None:
    with pytest.raises(TypeError, match=r"texts\[1\] is int"):
        tokenize(["a dog", 3])  # type: ignore[list-item]


def test_loads_packaged_vocab_offline(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_network(*args: object, **kwargs: object) -> None:
        raise AssertionError("the tokenizer tried to open a network connection")

    monkeypatch.setattr(socket, "socket", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    tokenizer = Tokenizer.from_package()
    assert tokenizer.vocab_size == 49408
    assert tokenizer.tokenize(["a dog"])[0, :4].tolist() == [49406, 320, 1929, 49407]


def test_default_tokenizer_is_shared() -> None:
    assert default_tokenizer() is default_tokenizer()


def test_context_length_is_configurable() -> None:
    tokenizer = Tokenizer.from_package(context_length=8)
    row = tokenizer.tokenize(["one two three four five six seven eight nine"])[0].tolist()
    assert len(row) == 8
    assert row[-1] == 49407
