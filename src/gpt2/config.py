"""Model configuration and the one named registry of sizes.

The GPT-2 sizes follow the GPT-2 paper / OpenAI release (n_layer, n_head, n_embd);
``tiny`` and ``mini`` are small configs that train in minutes on a laptop CPU.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from gpt2.errors import GPT2Error

GPT2_VOCAB_SIZE = 50257  # tokens the GPT-2 BPE actually has (50,000 merges + 256 bytes + <|endoftext|>)
PADDED_VOCAB_SIZE = 50304  # next multiple of 128: ~25% faster matmuls on GPU, the extra rows are never targets
# Upper bounds of every GPTConfig field, far above any GPT-2 (1558M: 1024 / 50257 / 48 / 25 / 1600) yet low enough
# that a hostile or mistyped config.json fails here instead of building a million modules.
CONFIG_MAXIMA = {"block_size": 2**20, "vocab_size": 2**20, "n_layer": 1024, "n_head": 1024, "n_embd": 2**16}


@dataclass(frozen=True)
class GPTConfig:
    """Shape of a GPT-2 model. All sizes are counts (tokens, layers, heads, channels), each in
    ``[1, CONFIG_MAXIMA[field]]``."""

    block_size: int = 1024  # max sequence length (context window), tokens
    vocab_size: int = PADDED_VOCAB_SIZE  # rows of the embedding / output matrix
    n_layer: int = 12
    n_head: int = 12
    n_embd: int = 768
    # Probability of zeroing an activation in training (embeddings, attention weights, residual branches;
    # as nanoGPT). Not part of the shape: GPT-2 pre-training used 0.1, build-nanogpt (and our default) none.
    dropout: float = 0.0

    def __post_init__(self) -> None:
        for field, maximum in CONFIG_MAXIMA.items():
            value = getattr(self, field)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise GPT2Error(f"GPTConfig.{field} must be a positive integer, got {value!r}")
            if value > maximum:
                raise GPT2Error(f"GPTConfig.{field} is {value:,}, above the supported maximum of {maximum:,}")
        if self.n_embd % self.n_head != 0:
            raise GPT2Error(f"GPTConfig: n_embd ({self.n_embd}) must be divisible by n_head ({self.n_head})")
        if self.vocab_size < GPT2_VOCAB_SIZE:
            raise GPT2Error(
                f"GPTConfig.vocab_size is {self.vocab_size}, but the GPT-2 tokenizer needs at least {GPT2_VOCAB_SIZE}"
            )
        if isinstance(self.dropout, bool) or not isinstance(self.dropout, (int, float)) or not 0 <= self.dropout < 1:
            raise GPT2Error(f"GPTConfig.dropout must be a probability in [0, 1), got {self.dropout!r}")

    @classmethod
    def named(cls, name: str) -> GPTConfig:
        """The registry config called ``name`` (``124M``, ``350M``, ``774M``, ``1558M``, ``tiny``, ``mini``)."""
        key = SIZE_ALIASES.get(name, name)
        if key not in CONFIGS:
            known = ", ".join(CONFIGS)
            raise GPT2Error(f"unknown model size {name!r}; known sizes: {known}")
        return CONFIGS[key]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def registry_name(self) -> str | None:
        """The registry size with these layers (n_layer, n_head, n_embd), or None. Context, vocabulary and
        dropout may differ: the Hugging Face ``gpt2`` (vocab 50257) is ``124M``."""
        for name, known in CONFIGS.items():
            if (known.n_layer, known.n_head, known.n_embd) == (self.n_layer, self.n_head, self.n_embd):
                return name
        return None

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GPTConfig:
        """Build from a dict, ignoring unknown keys (e.g. nanoGPT's ``bias``); a missing ``dropout`` (every
        checkpoint saved before it existed) is 0.0, which is what those models trained with."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


CONFIGS: dict[str, GPTConfig] = {
    # OpenAI GPT-2 sizes; names are the parameter counts people quote.
    "124M": GPTConfig(n_layer=12, n_head=12, n_embd=768),  # gpt2
    "350M": GPTConfig(n_layer=24, n_head=16, n_embd=1024),  # gpt2-medium
    "774M": GPTConfig(n_layer=36, n_head=20, n_embd=1280),  # gpt2-large
    "1558M": GPTConfig(n_layer=48, n_head=25, n_embd=1600),  # gpt2-xl
    # CPU-sized configs for demos and tests (same vocab, so the real tokenizer works).
    "mini": GPTConfig(block_size=256, n_layer=6, n_head=6, n_embd=384),
    "tiny": GPTConfig(block_size=128, n_layer=2, n_head=2, n_embd=64),
}

# HF hub names and common spellings map onto the registry.
SIZE_ALIASES: dict[str, str] = {
    "gpt2": "124M",
    "gpt2-medium": "350M",
    "gpt2-large": "774M",
    "gpt2-xl": "1558M",
    "355M": "350M",
    "1.5B": "1558M",
}
