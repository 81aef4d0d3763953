"""CLIP's byte-level BPE tokenizer, which ImageBind's text encoder uses.

The merge list ``bpe_simple_vocab_16e6.txt.gz`` (CLIP, MIT licence, OpenAI)
ships inside this package, so tokenizing works offline. The ids match
ImageBind's ``SimpleTokenizer``, including its text cleaning and its treatment
of the literal strings "<|startoftext|>" and "<|endoftext|>" in the input as
the special tokens.
"""

from __future__ import annotations

import functools
import gzip
import html
import importlib.resources
import itertools
import logging
from collections.abc import Sequence
from typing import Final

import ftfy
import regex
import torch

logger = logging.getLogger(__name__)

CONTEXT_LENGTH: Final = 77
VOCAB_FILE: Final = "bpe_simple_vocab_16e6.txt.gz"
START_TOKEN: Final = "<|startoftext|>"
END_TOKEN: Final = "<|endoftext|>"
# CLIP uses the first 48894 merges of the file, which gives 49408 ids: 512 byte
# symbols (each also with the end-of-word mark), 48894 merges and 2 special tokens.
NUM_MERGES: Final = 48894
END_OF_WORD: Final = "</w>"

# CLIP's pre-tokenizer: special tokens, English contractions, runs of letters,
# single digits, and runs of other non-space characters.
_WORD_PATTERN: Final = regex.compile(
    r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+""",
    regex.IGNORECASE,
)
_WHITESPACE: Final = regex.compile(r"\s+")


@functools.cache
def _byte_symbols() -> tuple[str, ...]:
    """Map each byte value to a printable character, as GPT-2 and CLIP do.

    Printable Latin-1 bytes map to themselves. The 68 others (control
    characters, space, DEL, NBSP, soft hyphen) map to 256, 257, ... in byte order.
    """
    printable = [*range(ord("!"), ord("~") + 1), *range(0xA1, 0xAC + 1), *range(0xAE, 0xFF + 1)]
    printable_set = set(printable)
    symbols = [""] * 256
    next_code = 256
    for byte in range(256):
        if byte in printable_set:
            symbols[byte] = chr(byte)
        else:
            symbols[byte] = chr(next_code)
            next_code += 1
    return tuple(symbols)


def clean_text(text: str) -> str:
    """Apply CLIP's cleaning: fix mojibake, unescape HTML twice, collapse whitespace, lowercase."""
    text = ftfy.fix_text(text)
    text = html.unescape(html.unescape(text)).strip()
    return _WHITESPACE.sub(" ", text).strip().lower()


class Tokenizer:
    """CLIP byte-level BPE tokenizer with a fixed context length.

    ``encode`` returns ids without start and end tokens. ``tokenize`` returns
    rows of ``context_length`` ids: the start token, the text's ids cut so that
    the end token still fits as the last id, and zero padding.
    """

    def __init__(self, merges: Sequence[tuple[str, str]], context_length: int = CONTEXT_LENGTH):
        if context_length < 2:
            raise ValueError(f"context_length must be at least 2, got {context_length}")
        symbols = list(_byte_symbols())
        # Byte symbols get ids in code point order: printable bytes first, then
        # the remapped ones.
        base = sorted(symbols)
        vocab = base + [symbol + END_OF_WORD for symbol in base]
        vocab += [first + second for first, second in merges]
        vocab += [START_TOKEN, END_TOKEN]
        self.encoder: dict[str, int] = {token: index for index, token in enumerate(vocab)}
        self.merge_ranks: dict[tuple[str, str], int] = {
            pair: rank for rank, pair in enumerate(merges)
        }
        self.context_length = context_length
        self.start_id = self.encoder[START_TOKEN]
        self.end_id = self.encoder[END_TOKEN]
        self._byte_symbols = symbols
        # Bound the memo so that a long-running process with varied text stays small.
        self._word_ids = functools.lru_cache(maxsize=1 << 16)(self._compute_word_ids)

    @classmethod
    def from_package(cls, context_length: int = CONTEXT_LENGTH) -> Tokenizer:
        """Load the merge list shipped in this package."""
        resource = importlib.resources.files("bindindex.media").joinpath(VOCAB_FILE)
        with resource.open("rb") as raw, gzip.open(raw, "rt", encoding="utf-8") as lines:
            # The first line is a version header.
            text = lines.read()
        merges = []
        for line in text.split("\n")[1 : NUM_MERGES + 1]:
            first, second = line.split()
            merges.append((first, second))
        logger.debug("loaded %d BPE merges from %s", len(merges), VOCAB_FILE)
        return cls(merges, context_length)

    @property
    def vocab_size(self) -> int:
        return len(self.encoder)

    def encode(self, text: str) -> list[int]:
        """Return the BPE ids of ``text`` after cleaning, without start or end token."""
        ids: list[int] = []
        for word in _WORD_PATTERN.findall(clean_text(text)):
            ids.extend(self._word_ids(word))
        return ids

    def tokenize(self, texts: str | Sequence[str]) -> torch.Tensor:
        """Return a (len(texts), context_length) int64 tensor of ids; a str counts as one text."""
        if isinstance(texts, str):
            texts = [texts]
        result = torch.zeros((len(texts), self.context_length), dtype=torch.long)  # (N, 77)
        for row, text in enumerate(texts):
            if not isinstance(text, str):
                raise TypeError(f"texts[{row}] is {type(text).__name__}, expected str")
            ids = [self.start_id, *self.encode(text)][: self.context_length - 1]
            ids.append(self.end_id)
            result[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
        return result

    def _compute_word_ids(self, word: str) -> tuple[int, ...]:
        if word in (START_TOKEN, END_TOKEN):
            return (self.encoder[word],)
        symbols = [self._byte_symbols[byte] for byte in word.encode("utf-8")]
        symbols[-1] += END_OF_WORD
        return tuple(self.encoder[token] for token in self._merge(symbols))

    def _merge(self, symbols: list[str]) -> list[str]:
        """Apply BPE merges to a word, always merging the lowest-ranked adjacent pair.

        Every occurrence of that pair is merged in one left-to-right pass, and the
        loop ends when no adjacent pair has a rank.
        """
        while len(symbols) > 1:
            ranked = [
                (self.merge_ranks[pair], pair)
                for pair in itertools.pairwise(symbols)
                if pair in self.merge_ranks
            ]
            if not ranked:
                break
            _, best = min(ranked)
            merged: list[str] = []
            i = 0
            while i < len(symbols):
                if i + 1 < len(symbols) and (symbols[i], symbols[i + 1]) == best:
                    merged.append(symbols[i] + symbols[i + 1])
                    i += 2
                else:
                    merged.append(symbols[i])
                    i += 1
            symbols = merged
        return symbols


@functools.cache
def default_tokenizer() -> Tokenizer:
    """Return the shared tokenizer built from the packaged merge list."""
    return Tokenizer.from_package()


def tokenize(texts: str | Sequence[str]) -> torch.Tensor:
    """Tokenize texts with the shared tokenizer into a (N, 77) int64 tensor."""
    return default_tokenizer().tokenize(texts)
