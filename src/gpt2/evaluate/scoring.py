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
from gpt2.model import GPT, IGNORE_INDEX, KVCache
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
        vocab = head.weight.shape[0]
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


def _padded_batch_logprobs(
    net: nn.Module,
    rows: Sequence[tuple[list[int], list[int]]],
    device: torch.device,
    dtype: torch.dtype | None,
    kv_cache: KVCache | None = None,
) -> tuple[list[float], list[int]]:
    """One forward pass over (inputs, targets) rows right-padded to the longest: per row, the summed
    log-probability of its targets (IGNORE_INDEX excluded) and how many targets it has."""
    width = max(len(inputs) for inputs, _ in rows)
    inputs = torch.zeros((len(rows), width), dtype=torch.long)
    targets = torch.full((len(rows), width), IGNORE_INDEX, dtype=torch.long)
    for r, (row_inputs, row_targets) in enumerate(rows):
        inputs[r, : len(row_inputs)] = torch.tensor(row_inputs)
        targets[r, : len(row_targets)] = torch.tensor(row_targets)
    inputs, targets = inputs.to(device), targets.to(device)
    scored = targets != IGNORE_INDEX
    with autocast_context(device, dtype), _output_layer_only_at(net, scored):
        logits, _ = net(inputs, kv_cache=kv_cache)
    if logits.dim() == 3:  # the model bypassed lm_head: select the scored positions here
        logits = logits[scored]
    token_logprobs = -F.cross_entropy(logits[:, :GPT2_VOCAB_SIZE].float(), targets[scored], reduction="none")
    sums = torch.zeros(len(rows), dtype=torch.float64, device=device)
    sums.index_add_(0, scored.nonzero()[:, 0], token_logprobs.double())
    return sums.tolist(), scored.sum(dim=1).tolist()  # one device sync per batch


def _score_rows(net, rows, indices, batch_rows, device, dtype, results) -> None:
    """Score ``rows[i]`` for i in ``indices``, ``batch_rows`` rows per forward pass, into ``results``."""
    # Longest first: batches of similar lengths waste little compute on padding, and any
    # out-of-memory error happens on the first batch rather than at the end.
    order = sorted(indices, key=lambda i: -len(rows[i][0]))
    for start in range(0, len(order), batch_rows):
        batch = order[start : start + batch_rows]
        sums, counts = _padded_batch_logprobs(net, [rows[i] for i in batch], device, dtype)
        for i, logprob, count in zip(batch, sums, counts, strict=True):
            results[i] = ContinuationScore(logprob, count)


def _score_shared_contexts(net, groups, batch_rows, device, dtype, results) -> None:
    """Score requests that share a context by running the context once and its continuations from a KV cache.

    ``groups`` holds (context ids, [(request index, continuation ids), ...]). Groups with the same
    context length and number of continuations are batched: the contexts go through the model once
    (filling a KV cache and giving the distribution of each continuation's first token), then the
    cache is repeated for every continuation and the continuations run on top of it. This is
    exactly the computation of the row path (causal attention, same positions) with each context
    computed once instead of once per continuation (4x for HellaSwag).
    """
    buckets: dict[tuple[int, int], list] = {}
    for group in groups:
        buckets.setdefault((len(group[0]), len(group[1])), []).append(group)
    for (_, k), bucket in sorted(buckets.items(), reverse=True):
        per_batch = max(1, batch_rows // k)
        for start in range(0, len(bucket), per_batch):
            chunk = bucket[start : start + per_batch]
            conts = [cont for _, members in chunk for _, cont in members]
            longest = max(len(cont) for cont in conts)
            contexts = torch.tensor([context for context, _ in chunk], device=device)
            cache = KVCache.empty(
                net.config, len(chunk), contexts.shape[1] + longest - 1, device, dtype or torch.float32
            )
            with autocast_context(device, dtype):
                last_logits, _ = net(contexts, kv_cache=cache, last_logits_only=True)
            first = torch.log_softmax(last_logits[:, -1, :GPT2_VOCAB_SIZE].float(), dim=-1).repeat_interleave(k, 0)
            first_tokens = torch.tensor([cont[0] for cont in conts], device=device)
            first_logprobs = first.gather(1, first_tokens[:, None])[:, 0].double().tolist()
            rest = [0.0] * len(conts)
            if longest > 1:
                rows_cache = KVCache(cache.k.repeat_interleave(k, 1), cache.v.repeat_interleave(k, 1), cache.pos)
                rows = [(cont[:-1], cont[1:]) for cont in conts]
                rest, _ = _padded_batch_logprobs(net, rows, device, dtype, kv_cache=rows_cache)
            indices = [index for _, members in chunk for index, _ in members]
            for r, index in enumerate(indices):
                results[index] = ContinuationScore(first_logprobs[r] + rest[r], len(conts[r]))


def _is_fsdp(model: nn.Module) -> bool:
    try:
        from torch.distributed.fsdp import FSDPModule
    except ImportError:  # pragma: no cover - torch without distributed support
        return False
    return isinstance(model, FSDPModule)


@torch.no_grad()
def score_requests(
    model: nn.Module,
    requests: Sequence[EncodedRequest],
    *,
    batch_rows: int = 64,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
    names: Sequence[str] | None = None,
    share_context: bool | None = None,
) -> list[ContinuationScore]:
    """Score every request; up to ``batch_rows`` rows (one per request) share a forward pass.

    ``device`` is where the model's weights are (default: found from the model); ``dtype`` is the
    autocast dtype (e.g. torch.bfloat16) or None for full precision. Log-softmax is always taken
    in float32 over the first 50257 logits only, so padded vocabularies (50304) score the same as
    Hugging Face's. ``names`` (one per request, e.g. "file:line") make errors point at the input.

    ``share_context`` (default: on CPU) computes a context shared by several requests once and
    scores the continuations from a KV cache (see ``_score_shared_contexts``); the scores are the
    same. It pays where compute is the bottleneck; on a GPU, large padded batches of whole rows
    (the other path) keep it busier. Requests that need left truncation, and FSDP-sharded models
    (every rank must run the same forward passes), always take the row path.
    Returns one score per request, in the order given.
    """
    check_model_vocab(model)
    net = unwrap_model(model)
    block_size = net.config.block_size
    device = resolve_device(net, device)
    batch_rows = max(1, batch_rows)
    rows = [
        _build_row(req, block_size, names[i] if names is not None else f"request {i}") for i, req in enumerate(requests)
    ]
    if share_context is None:
        share_context = device.type == "cpu"
    row_path = list(range(len(requests)))
    groups: dict[tuple[int, ...], list[tuple[int, list[int]]]] = {}
    if share_context and not _is_fsdp(net) and isinstance(net, GPT):
        row_path = []
        for i, req in enumerate(requests):
            if len(req.context) + len(req.continuation) - 1 <= block_size:  # fits without truncation
                groups.setdefault(tuple(req.context), []).append((i, req.continuation))
            else:
                row_path.append(i)
    results: list[ContinuationScore | None] = [None] * len(requests)
    was_training = net.training
    net.eval()
    try:
        group_list = [(list(context), members) for context, members in groups.items()]
        _score_shared_contexts(net, group_list, batch_rows, device, dtype, results)
        _score_rows(net, rows, row_path, batch_rows, device, dtype, results)
    finally:
        net.train(was_training)
    return results  # type: ignore[return-value]
