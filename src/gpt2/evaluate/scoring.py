"""Batched log-likelihood of continuations given contexts, exactly as lm-evaluation-harness scores them.

A request is a (context, continuation) pair of strings. Following lm-eval's Hugging Face wrapper
(``HFLM._encode_pair`` and ``_loglikelihood_tokens``):

1. trailing whitespace of the context moves to the start of the continuation;
2. ``context + continuation`` is encoded whole and split at the length of the encoded context
   (so the context tokens are ``encode(context)`` and the continuation tokens are the rest);
3. a row longer than the context window keeps its last ``block_size + 1`` tokens (left truncation),
   the model reads all but the last and predicts the continuation tokens;
4. the score is the summed log-probability of the continuation tokens.

Many rows go through one forward pass: they are right-padded, and the padded positions get target
``IGNORE_INDEX``. Under causal attention a real position never attends to a later (padding) one, so
padding cannot change any score. Rows are sorted by length before batching to keep padding small.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from gpt2.config import GPT2_VOCAB_SIZE
from gpt2.errors import GPT2Error
from gpt2.model import IGNORE_INDEX
from gpt2.runtime.device import autocast, model_device
from gpt2.runtime.parallel import unwrap_model
from gpt2.tokenizer import Tokenizer


@dataclass(frozen=True)
class EncodedRequest:
    """Token ids of one (context, continuation) request."""

    context: list[int]
    continuation: list[int]


@dataclass(frozen=True)
class ContinuationScore:
    """Summed log-probability (nats, <= 0) of a continuation, its number of tokens, and whether greedy
    decoding would produce it (every continuation token is the argmax; lm-eval's ``is_greedy``)."""

    logprob: float
    num_tokens: int
    is_greedy: bool = False


def encode_pair(tokenizer: Tokenizer, context: str, continuation: str) -> EncodedRequest:
    """Tokenize a request the way lm-evaluation-harness does (see the module docstring)."""
    if context == "":
        # lm-eval: an empty context becomes the end-of-text token
        return EncodedRequest([tokenizer.eot_id], tokenizer.encode(continuation))
    n_spaces = len(context) - len(context.rstrip())
    if n_spaces > 0:
        continuation = context[-n_spaces:] + continuation
        context = context[:-n_spaces]
    whole = tokenizer.encode(context + continuation)
    context_ids = tokenizer.encode(context)
    return EncodedRequest(context_ids, whole[len(context_ids) :])


def check_model_vocab(model: nn.Module) -> None:
    """Raise a GPT2Error when the model cannot score GPT-2 tokens (an output layer below 50257 rows)."""
    model = unwrap_model(model)
    vocab = getattr(getattr(model, "config", None), "vocab_size", None)
    head = getattr(model, "lm_head", None)
    if head is not None:
        vocab = getattr(head, "out_features", None) or head.weight.shape[0]  # an int8 Linear has no .weight tensor
    if vocab is not None and vocab < GPT2_VOCAB_SIZE:
        raise GPT2Error(
            f"model/tokenizer mismatch: the model has {vocab} output tokens, "
            f"the GPT-2 tokenizer needs {GPT2_VOCAB_SIZE}"
        )


def _build_row(request: EncodedRequest, block_size: int, where: str) -> tuple[list[int], list[int]]:
    """(inputs, targets) of one request; targets are IGNORE_INDEX except at continuation tokens."""
    n_cont = len(request.continuation)
    if n_cont == 0:
        raise GPT2Error(f"{where}: the continuation is empty after tokenization")
    if n_cont > block_size:
        raise GPT2Error(
            f"{where}: continuation of {n_cont} tokens does not fit the model's context window ({block_size})"
        )
    tokens = (request.context + request.continuation)[-(block_size + 1) :]  # lm-eval's left truncation
    inputs = tokens[:-1]
    targets = [IGNORE_INDEX] * (len(inputs) - n_cont) + tokens[-n_cont:]
    return inputs, targets


@torch.no_grad()
def score_requests(
    model: nn.Module,
    requests: Sequence[EncodedRequest],
    *,
    batch_rows: int = 64,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
    names: Sequence[str] | None = None,
) -> list[ContinuationScore]:
    """Score every request; ``batch_rows`` requests share one forward pass.

    ``device`` is where the model's weights are (default: found from the model); ``dtype`` is the
    autocast dtype (e.g. torch.bfloat16) or None for full precision. Log-softmax is always taken
    in float32 over the first 50257 logits only, so padded vocabularies (50304) score the same as
    Hugging Face's. ``names`` (one per request, e.g. "file:line") make errors point at the input.
    Returns one score per request, in the order given.
    """
    check_model_vocab(model)
    net = unwrap_model(model)
    block_size = net.config.block_size
    device = model_device(net, device)
    rows = [
        _build_row(req, block_size, names[i] if names is not None else f"request {i}") for i, req in enumerate(requests)
    ]
    # Longest first: batches of similar lengths waste little compute on padding, and any
    # out-of-memory error happens on the first batch rather than at the end.
    order = sorted(range(len(rows)), key=lambda i: -len(rows[i][0]))
    results: list[ContinuationScore | None] = [None] * len(rows)
    was_training = net.training
    net.eval()
    try:
        for start in range(0, len(order), max(1, batch_rows)):
            batch = order[start : start + max(1, batch_rows)]
            width = len(rows[batch[0]][0])
            inputs = torch.zeros((len(batch), width), dtype=torch.long)
            targets = torch.full((len(batch), width), IGNORE_INDEX, dtype=torch.long)
            for r, i in enumerate(batch):
                row_inputs, row_targets = rows[i]
                inputs[r, : len(row_inputs)] = torch.tensor(row_inputs)
                targets[r, : len(row_targets)] = torch.tensor(row_targets)
            inputs, targets = inputs.to(device), targets.to(device)
            scored = targets != IGNORE_INDEX
            # Logits only at the continuation tokens: the output layer and its (B, T, 50304) result
            # are most of the cost for small models and ~30% of it for GPT-2 124M.
            with autocast(device, dtype):
                logits, _ = net(inputs, logits_at=scored)  # (N, V), N = scored.sum()
            row_of_position = scored.nonzero()[:, 0]
            logits = logits[:, :GPT2_VOCAB_SIZE].float()
            token_logprobs = -F.cross_entropy(logits, targets[scored], reduction="none")
            sums = torch.zeros(len(batch), dtype=torch.float64, device=device)
            sums.index_add_(0, row_of_position, token_logprobs.double())
            misses = torch.zeros(len(batch), dtype=torch.long, device=device)
            misses.index_add_(0, row_of_position, (logits.argmax(dim=-1) != targets[scored]).long())
            counts = scored.sum(dim=1)
            for i, logprob, count, miss in zip(batch, sums.tolist(), counts.tolist(), misses.tolist(), strict=True):
                results[i] = ContinuationScore(logprob, count, miss == 0)  # one sync a batch
    finally:
        net.train(was_training)
    return results  # type: ignore[return-value]
