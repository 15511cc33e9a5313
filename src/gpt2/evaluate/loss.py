"""Validation loss and perplexity over a fixed, deterministic set of tokens.

``evaluate_loss`` reads a prepared dataset (``gpt2 prepare``) through ``TokenShardLoader``: a fresh
val loader always yields the same windows, and under torch.distributed rank r reads windows
disjoint from every other rank's, so the ranks together cover exactly the tokens one process would.
``evaluate_text_loss`` does the same for a raw ``.txt`` / ``.jsonl`` file tokenized on the fly.

The loss is the mean cross-entropy (nats per token) over every predicted token; perplexity = exp(loss).
Bits per byte, the tokenizer-independent form (nanochat's ``evaluate_bpb``), divides the summed nats by
ln 2 times the UTF-8 bytes of the predicted tokens; ``<|endoftext|>`` targets have 0 bytes and their loss
is left out of that sum (they mark document boundaries, not text).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from gpt2.errors import GPT2Error
from gpt2.evaluate.scoring import check_model_vocab
from gpt2.model import IGNORE_INDEX
from gpt2.runtime.device import autocast, model_device
from gpt2.runtime.distributed import all_reduce_sum, rank_and_world_size
from gpt2.runtime.parallel import unwrap_model
from gpt2.tokenizer import get_tokenizer


@torch.no_grad()
def _summed_loss(
    model: nn.Module,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    device: torch.device,
    dtype: torch.dtype | None,
) -> list[float]:
    """[nats, tokens, nats of the tokens that have bytes, their bytes] summed over ``batches`` of (x, y) (B, T)."""
    sums = torch.zeros(4, dtype=torch.float64, device=device)
    token_bytes = torch.tensor(get_tokenizer().token_bytes, device=device)
    was_training = model.training
    model.eval()
    try:
        for x, y in batches:
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True).flatten()
            with autocast(device, dtype):
                logits = model(x)[0]
            # the model's own loss, per token: float32 over the whole (padded) output layer
            losses = F.cross_entropy(logits.flatten(0, 1).float(), y, ignore_index=IGNORE_INDEX, reduction="none")
            n_bytes = torch.where(y != IGNORE_INDEX, token_bytes[y.clamp(min=0)], 0)
            sums += torch.stack(
                [losses.sum(), (y != IGNORE_INDEX).sum(), (losses * (n_bytes > 0)).sum(), n_bytes.sum()]
            ).double()
    finally:
        model.train(was_training)
    return sums.tolist()


def _result(total: float, count: float, byte_nats: float, n_bytes: float) -> dict[str, float | int | None]:
    loss = total / count
    if not math.isfinite(loss):
        raise GPT2Error(f"the loss is {loss}: the model's weights have diverged (NaN/inf outputs)")
    return {
        "loss": loss,
        "perplexity": math.exp(min(loss, 700.0)),
        "bpb": byte_nats / (math.log(2) * n_bytes) if n_bytes else None,  # None: only <|endoftext|> targets
        "bytes_per_token": n_bytes / count,
        "tokens": int(count),
    }


def evaluate_loss(
    model: nn.Module,
    data_dir: str | Path,
    split: str = "val",
    max_tokens: int | None = None,
    batch_size: int = 8,
    seq_len: int | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> dict[str, float | int | None]:
    """``{"loss", "perplexity", "bpb", "bytes_per_token", "tokens"}`` of ``model`` on ``data_dir``'s ``split`` shards.

    Reads ``max_tokens`` tokens (default: the whole split once) in batches of ``batch_size`` sequences
    of ``seq_len`` tokens (default: the model's context window). The token count is rounded down to
    whole steps of ``batch_size * seq_len * world_size`` (at least one step), so the same arguments
    always evaluate the same tokens; ``tokens`` in the result is the number actually scored.
    ``device`` is where the model is (default: where its weights are); ``dtype`` an autocast dtype.
    """
    from gpt2.data import TokenShardLoader

    check_model_vocab(model)
    net = unwrap_model(model)
    device = model_device(net, device)
    seq_len = seq_len or net.config.block_size
    if seq_len > net.config.block_size:
        raise GPT2Error(f"seq_len {seq_len} exceeds the model's context window ({net.config.block_size})")
    if max_tokens is not None and max_tokens <= 0:
        raise GPT2Error(f"--tokens must be positive, got {max_tokens}")
    rank, world_size = rank_and_world_size()
    loader = TokenShardLoader(
        data_dir, split=split, batch_size=batch_size, seq_len=seq_len, rank=rank, world_size=world_size
    )
    steps = loader.steps_per_epoch  # never wrap around: each token is scored at most once
    if max_tokens is not None:
        steps = max(1, min(steps, max_tokens // loader.tokens_per_step))
    sums = _summed_loss(net, (loader.next_batch() for _ in range(steps)), device, dtype)
    return _result(*all_reduce_sum(sums, device))


def text_file_tokens(path: str | Path, text_field: str = "text") -> np.ndarray:
    """All documents of a ``.txt`` / ``.jsonl`` / ``.jsonl.gz`` / ``.parquet`` file as one token stream.

    Each document is preceded by the end-of-text token, as in the prepared training data.
    """
    from gpt2.data.encode import encode_document
    from gpt2.data.sources import file_documents

    path = Path(path)
    if not path.is_file():
        raise GPT2Error(f"text file not found: {path}")
    parts = [encode_document(text) for text in file_documents([path], text_field=text_field)]
    if not parts:
        raise GPT2Error(f"{path}: no documents (the file is empty)")
    return np.concatenate(parts).astype(np.int64)


def evaluate_text_loss(
    model: nn.Module,
    path: str | Path,
    max_tokens: int | None = None,
    batch_size: int = 8,
    seq_len: int | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
    text_field: str = "text",
) -> dict[str, float | int | None]:
    """Like :func:`evaluate_loss` for a raw text or JSONL file, tokenized on the fly.

    The token stream is cut into consecutive windows of ``seq_len`` predicted tokens (a shorter
    file gives one shorter window; a final partial window is left out); ``max_tokens`` keeps the
    first ``max_tokens // seq_len`` windows (at least one). Ranks take every world_size-th window.
    """
    check_model_vocab(model)
    net = unwrap_model(model)
    device = model_device(net, device)
    tokens = torch.from_numpy(text_file_tokens(path, text_field))
    if len(tokens) < 2:
        raise GPT2Error(f"{path}: too short to evaluate (needs at least one token of text)")
    seq_len = min(seq_len or net.config.block_size, net.config.block_size, len(tokens) - 1)
    n_windows = (len(tokens) - 1) // seq_len
    if max_tokens is not None:
        if max_tokens <= 0:
            raise GPT2Error(f"--tokens must be positive, got {max_tokens}")
        n_windows = max(1, min(n_windows, max_tokens // seq_len))
    rank, world_size = rank_and_world_size()
    mine = list(range(rank, n_windows, world_size))
    # A rank one window short repeats window 0 with every target ignored: all ranks then run the
    # same forward passes (FSDP-sharded models need that) and the repeat adds nothing to the loss.
    padded = mine + [-1] * (-(-n_windows // world_size) - len(mine))

    def batches() -> Iterable[tuple[torch.Tensor, torch.Tensor]]:
        for start in range(0, len(padded), batch_size):
            chosen = padded[start : start + batch_size]
            windows = torch.stack([tokens[max(w, 0) * seq_len : (max(w, 0) + 1) * seq_len + 1] for w in chosen])
            x, y = windows[:, :-1], windows[:, 1:].clone()
            y[torch.tensor(chosen) < 0] = IGNORE_INDEX
            yield x, y

    return _result(*all_reduce_sum(_summed_loss(net, batches(), device, dtype), device))
