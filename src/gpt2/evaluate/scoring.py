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

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from gpt2.config import GPT2_VOCAB_SIZE
from gpt2.errors import GPT2Error
from gpt2.model import IGNORE_INDEX
from gpt2.tokenizer import Tokenizer


@dataclass(frozen=True)
class EncodedRequest:
    """Token ids of one (context, continuation) request."""

    context: list[int]
    continuation: list[int]


@dataclass(frozen=True)
class ContinuationScore:
    """Summed log-probability (nats, <= 0) of a continuation and its number of tokens."""

    logprob: float
    num_tokens: int


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


def unwrap_model(model: nn.Module) -> nn.Module:
    """The plain model inside DDP (``.module``) and torch.compile (``._orig_mod``) wrappers.

    Evaluation runs the plain module: DDP's forward would broadcast buffers and compiled code
    would recompile for every new padded length.
    """
    while True:
        inner = getattr(model, "module", None) or getattr(model, "_orig_mod", None)
        if inner is None:
            return model
        model = inner


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


def resolve_device(model: nn.Module, device: torch.device | str | None = None) -> torch.device:
    """``device`` as a torch.device, or where the model's weights are when it is None."""
    if device is not None:
        return torch.device(device)
    try:
        return next(model.parameters()).device
    except StopIteration:
        return torch.device("cpu")


def autocast_context(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    """``torch.autocast`` to ``dtype`` on ``device`` (a no-op context when dtype is None or float32)."""
    if dtype is None or dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


@contextlib.contextmanager
def _output_layer_only_at(model: nn.Module, positions: torch.Tensor) -> Iterator[None]:
    """Make the model's output layer (``lm_head``) compute logits only where ``positions`` (B, T) is True.

    The forward pass then returns logits of shape (N, V), N = positions.sum(). Scoring needs the
    logits of the continuation tokens only, and the output layer plus its (B, T, 50304) result is
    most of the cost for small models and a large share (~30%) of it for GPT-2 124M.
    """
    head = getattr(model, "lm_head", None)
    if not isinstance(head, nn.Module):
        yield
        return
    handle = head.register_forward_pre_hook(lambda module, args: (args[0][positions],))
    try:
        yield
    finally:
        handle.remove()


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
    device = resolve_device(net, device)
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
            with autocast_context(device, dtype), _output_layer_only_at(net, scored):
                logits, _ = net(inputs)
            if logits.dim() == 3:  # the model bypassed lm_head: select the scored positions here
                logits = logits[scored]
            row_of_position = scored.nonzero()[:, 0]
            token_logprobs = -F.cross_entropy(logits[:, :GPT2_VOCAB_SIZE].float(), targets[scored], reduction="none")
            sums = torch.zeros(len(batch), dtype=torch.float64, device=device)
            sums.index_add_(0, row_of_position, token_logprobs.double())
            counts = scored.sum(dim=1)
            for i, logprob, count in zip(batch, sums.tolist(), counts.tolist(), strict=True):  # one sync a batch
                results[i] = ContinuationScore(logprob, count)
    finally:
        net.train(was_training)
    return results  # type: ignore[return-value]
