"""Validation loss and perplexity over a fixed, deterministic set of tokens.

``evaluate_loss`` reads a split of a prepared dataset (``gpt2 prepare``), ``evaluate_text_loss`` a raw
``.txt`` / ``.jsonl`` file tokenized on the fly; both score the same windows of the token stream whatever
the batch size and the number of ranks (under torch.distributed each rank scores its own share), so the
ranks together give exactly what one process would.

The loss is the mean cross-entropy (nats per token) over every predicted token; perplexity = exp(loss).
Bits per byte, the tokenizer-independent form (nanochat's ``evaluate_bpb``), divides the summed nats by
ln 2 times the UTF-8 bytes of the predicted tokens; ``<|endoftext|>`` targets have 0 bytes and their loss
is left out of that sum (they mark document boundaries, not text).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator
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


def _window_batches(
    read: Callable[[int, int], np.ndarray], stream_tokens: int, seq_len: int, max_tokens: int | None, batch_size: int
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """This rank's (x, y) batches of the windows to score in a stream of ``stream_tokens`` tokens, each window
    ``seq_len`` predicted tokens (``read(start, length)`` returns a slice of the stream).

    The stream holds (stream_tokens - 1) // seq_len windows; ``max_tokens`` keeps max_tokens // seq_len of them
    (at least one), spread evenly over the whole stream (the middle window of each of ``count`` equal stretches),
    not the first ones: the start of a split is one document (a play, an article), which can be easier or
    harder than the rest (docs/evaluation.md#validation-loss has the demo's numbers). Rank r takes every
    world_size-th window; a rank one window short repeats window 0 with every target ignored, so all ranks run
    the same forward passes (FSDP-sharded models need that) and the repeat adds nothing to the loss.
    """
    total = (stream_tokens - 1) // seq_len
    count = total if max_tokens is None else max(1, min(total, max_tokens // seq_len))
    rank, world_size = rank_and_world_size()
    mine = [(2 * i + 1) * total // (2 * count) for i in range(rank, count, world_size)]  # all of them: 0..total-1
    padded = mine + [-1] * (-(-count // world_size) - len(mine))
    for start in range(0, len(padded), batch_size):
        chosen = padded[start : start + batch_size]
        windows = torch.stack([torch.as_tensor(read(max(w, 0) * seq_len, seq_len + 1)) for w in chosen])
        x, y = windows[:, :-1], windows[:, 1:].clone()
        y[torch.tensor(chosen) < 0] = IGNORE_INDEX
        yield x, y


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

    Scores ``max_tokens`` tokens (default: the whole split once; fewer are spread over the whole split, see
    ``_window_batches``) in batches of ``batch_size`` windows of ``seq_len`` tokens (default: the model's
    context window). The count is rounded down to whole windows (at least one), so the same arguments always
    evaluate the same tokens; ``tokens`` in the result is the number actually scored.
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
    split_stream = TokenShardLoader(data_dir, split=split, batch_size=1, seq_len=seq_len)  # reads and verifies
    batches = _window_batches(split_stream.read, split_stream.tokens_per_epoch, seq_len, max_tokens, batch_size)
    return _result(*all_reduce_sum(_summed_loss(net, batches, device, dtype), device))


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
    """Like :func:`evaluate_loss` for a raw text or JSONL file, tokenized on the fly (a file shorter than
    ``seq_len`` gives one shorter window; a final partial window is left out)."""
    check_model_vocab(model)
    net = unwrap_model(model)
    device = model_device(net, device)
    if max_tokens is not None and max_tokens <= 0:
        raise GPT2Error(f"--tokens must be positive, got {max_tokens}")
    tokens = text_file_tokens(path, text_field)
    if len(tokens) < 2:
        raise GPT2Error(f"{path}: too short to evaluate (needs at least one token of text)")
    seq_len = min(seq_len or net.config.block_size, net.config.block_size, len(tokens) - 1)
    if max_tokens is not None and max_tokens <= 0:
        raise GPT2Error(f"--tokens must be positive, got {max_tokens}")
    batches = _window_batches(lambda start, n: tokens[start : start + n], len(tokens), seq_len, max_tokens, batch_size)
    return _result(*all_reduce_sum(_summed_loss(net, batches, device, dtype), device))
