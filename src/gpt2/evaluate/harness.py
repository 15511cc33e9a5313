"""lm-evaluation-harness backend over our ``GPT``: any lm-eval task on any model ``gpt2.load`` accepts.

Importing this module registers the backend under the name ``gpt2-scratch``, so after it::

    lm_eval.simple_evaluate(model="gpt2-scratch", model_args="pretrained=runs/demo/run", tasks=["hellaswag"])

and ``python -m gpt2.evaluate.harness --model gpt2-scratch --model_args pretrained=runs/demo/run --tasks ...``
is lm-eval's own command line with the backend registered (plain ``lm_eval --model gpt2-scratch`` does
not import this package, so it does not know the name). ``gpt2 eval lm-eval`` wraps it (see
:mod:`gpt2.evaluate.harness_tasks`).

The three request types, each computed exactly as lm-eval's Hugging Face backend (``HFLM``) does:

``loglikelihood``          (context, continuation) -> (summed log-prob, is_greedy), through
                           :func:`gpt2.evaluate.scoring.score_requests` (length-sorted batches, logits
                           only at continuation positions; rows longer than the window lose tokens on the left).
``loglikelihood_rolling``  a whole document's log-prob: lm-eval's disjoint windows of ``block_size``
                           tokens (``get_rolling_token_windows`` with ``context_len=1`` +
                           ``make_disjoint_window``): the first window is ``<|endoftext|>`` + the
                           first ``block_size - 1`` tokens, each later one predicts the next ``block_size``
                           tokens from the ones before it, and the last is left-filled to a full window.
``generate_until``         greedy (or sampled, when the task sets ``do_sample``) decoding through
                           :mod:`gpt2.generate.decode` (the decoder of ``gpt2 sample``), ``max_gen_toks``
                           (default 256) new tokens at most, stopped at ``<|endoftext|>`` or cut before the
                           first ``until`` string; the context keeps its last ``block_size - max_gen_toks``
                           tokens, like ``HFLM``'s left truncation.

Under ``torchrun`` the backend reports torch.distributed's rank and world size: lm-eval then gives each
rank its own share of the documents and gathers the per-document metrics through ``gather_object``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import lm_eval.models  # noqa: F401  (fills lm-eval's registry first, so "hf" and friends stay available)
import torch
import torch.distributed as dist
from lm_eval.api.model import LM
from lm_eval.api.registry import register_model
from lm_eval.models.utils import handle_stop_sequences, normalize_gen_kwargs
from lm_eval.utils import get_rolling_token_windows, make_disjoint_window

from gpt2.errors import GPT2Error
from gpt2.evaluate.scoring import EncodedRequest, encode_pair, score_requests
from gpt2.generate.decode import decode_steps
from gpt2.generate.sampling import SamplingOptions
from gpt2.model import GPT
from gpt2.runtime.device import autocast
from gpt2.runtime.distributed import join_process_group
from gpt2.runtime.parallel import unwrap_model
from gpt2.store.load import load
from gpt2.tokenizer import get_tokenizer

MODEL_NAME = "gpt2-scratch"
DEFAULT_BATCH_ROWS = 64  # (context, continuation) rows per forward pass
DEFAULT_MAX_GEN_TOKS = 256  # HFLM's default for generate_until
DEFAULT_SEED = 1234  # sampling seed when a task asks for do_sample (lm-eval seeds torch with 1234 too)


def default_device() -> torch.device:
    """cuda (cuda:LOCAL_RANK under torchrun) when available, else cpu."""
    if torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return torch.device("cpu")


DTYPES = {"auto": None, "fp32": None, "float32": None, "bf16": torch.bfloat16, "bfloat16": torch.bfloat16,
          "fp16": torch.float16, "float16": torch.float16}  # fmt: skip


def _autocast_dtype(dtype: torch.dtype | str | None, device: torch.device) -> torch.dtype | None:
    """``dtype=`` as lm-eval's ``--model_args`` passes it (a string) or a torch.dtype; "auto": bf16 on CUDA."""
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    if str(dtype) not in DTYPES:
        raise GPT2Error(f"dtype={dtype!r}: expected one of {', '.join(DTYPES)}")
    if dtype == "auto" and device.type == "cuda":
        return torch.bfloat16
    return DTYPES[str(dtype)]


def _join_torchrun(device: torch.device) -> None:
    """Under torchrun without a process group yet (lm-eval's own CLI), start one: gloo on CPU, nccl on CUDA."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and dist.is_available():
        join_process_group(device)


def _batch_rows(batch_size: int | str | None) -> int:
    """lm-eval passes ``--batch_size`` through as given: an int, a digit string or "auto" (our default)."""
    if batch_size is None or str(batch_size).startswith("auto"):
        return DEFAULT_BATCH_ROWS
    try:
        rows = int(batch_size)
    except ValueError:
        raise GPT2Error(f"batch_size must be a positive integer or 'auto', got {batch_size!r}") from None
    if rows <= 0:
        raise GPT2Error(f"batch_size must be a positive integer, got {rows}")
    return rows


@register_model(MODEL_NAME)
class GPT2ScratchLM(LM):
    """lm-eval ``LM`` over one of our models.

    ``pretrained`` is anything :func:`gpt2.load` accepts (or pass a loaded ``model``); ``batch_size``
    counts rows per forward pass; ``dtype`` is an autocast dtype (None or "fp32": full precision,
    "bf16"/"fp16", "auto": bf16 on CUDA);
    ``max_gen_toks`` is the generation budget when a task does not set one.
    """

    def __init__(
        self,
        pretrained: str | None = None,
        *,
        model: torch.nn.Module | None = None,
        batch_size: int | str | None = DEFAULT_BATCH_ROWS,
        device: torch.device | str | None = None,
        dtype: torch.dtype | str | None = None,
        max_gen_toks: int | str = DEFAULT_MAX_GEN_TOKS,
        max_batch_size: int | None = None,  # lm-eval always passes it; our batches are fixed-size
    ) -> None:
        super().__init__()
        if (pretrained is None) == (model is None):
            raise GPT2Error(f"{MODEL_NAME}: give exactly one of pretrained=PATH or a loaded model")
        self._device = torch.device(device) if device not in (None, "auto") else default_device()
        _join_torchrun(self._device)
        if model is None:
            model = load(str(pretrained), self._device)
        self.model: GPT = unwrap_model(model).eval()
        self.dtype = _autocast_dtype(dtype, self._device)
        self.batch_rows = _batch_rows(batch_size)
        self.max_gen_toks = int(max_gen_toks)
        self.block_size: int = self.model.config.block_size
        self.tokenizer = get_tokenizer()
        if dist.is_available() and dist.is_initialized():
            self._rank, self._world_size = dist.get_rank(), dist.get_world_size()

    # ------------------------------------------------------------------ distributed glue lm-eval calls

    def all_gather(self, tensor: torch.Tensor) -> torch.Tensor:
        """Concatenation of every rank's ``tensor`` (0-d tensors become one element each)."""
        if self.world_size <= 1:
            return tensor
        tensor = tensor.reshape(-1)
        parts = [torch.empty_like(tensor) for _ in range(self.world_size)]
        dist.all_gather(parts, tensor)
        return torch.cat(parts)

    def gather_object(self, obj: Any, dst: int = 0) -> list[Any] | None:
        if self.world_size <= 1:
            return [obj]
        result = [None] * self.world_size if self.rank == dst else None
        dist.gather_object(obj, result, dst=dst)
        return result

    def barrier(self) -> None:
        if self.world_size > 1:
            dist.barrier()

    # ------------------------------------------------------------------ the three request types

    def loglikelihood(self, requests: Sequence[Any], disable_tqdm: bool = False) -> list[tuple[float, bool]]:
        """(summed log-prob in nats, is_greedy) of each ``(context, continuation)`` request."""
        encoded = [encode_pair(self.tokenizer, context, continuation) for context, continuation in _args(requests)]
        scores = self._score(encoded, [f"{_name(r)} request {i}" for i, r in enumerate(requests)])
        return [(s.logprob, s.is_greedy) for s in scores]

    def loglikelihood_rolling(self, requests: Sequence[Any], disable_tqdm: bool = False) -> list[float]:
        """Summed log-prob (nats) of each ``(text,)`` request over lm-eval's disjoint rolling windows."""
        windows: list[EncodedRequest] = []
        owner: list[int] = []
        for k, (text,) in enumerate(_args(requests)):
            for context, continuation in map(
                make_disjoint_window,
                get_rolling_token_windows(
                    token_list=self.tokenizer.encode(text),
                    prefix_token=self.tokenizer.eot_id,
                    max_seq_len=self.block_size,
                    context_len=1,
                ),
            ):
                windows.append(EncodedRequest(context, continuation))
                owner.append(k)
        totals = [0.0] * len(requests)
        names = [f"{_name(requests[k])} document {k}" for k in owner]
        for k, score in zip(owner, self._score(windows, names), strict=True):
            totals[k] += score.logprob
        return totals

    def generate_until(self, requests: Sequence[Any], disable_tqdm: bool = False) -> list[str]:
        """Continuation text of each ``(context, gen_kwargs)`` request, cut before the first stop string."""
        return [self._generate_one(context, gen_kwargs) for context, gen_kwargs in _args(requests)]

    # ------------------------------------------------------------------ helpers

    def _score(self, requests: Sequence[EncodedRequest], names: Sequence[str]):
        if not requests:
            return []
        return score_requests(
            self.model, requests, batch_rows=self.batch_rows, device=self._device, dtype=self.dtype, names=names
        )

    def _generate_one(self, context: str, gen_kwargs: dict[str, Any]) -> str:
        kwargs = normalize_gen_kwargs(gen_kwargs, self.max_gen_toks)
        until = handle_stop_sequences(kwargs.pop("until", None), eos=None)  # <|endoftext|> is our stop token
        max_new = int(kwargs.pop("max_gen_toks"))
        room = self.block_size - max_new
        if room <= 0:
            raise GPT2Error(
                f"generate_until asks for {max_new} new tokens, which leaves no room for the context in "
                f"the model's {self.block_size}-token window (set max_gen_toks lower in the task)"
            )
        prompt = self.tokenizer.encode(context)[-room:]  # HFLM's left truncation
        sampled = bool(kwargs.get("do_sample")) and float(kwargs.get("temperature") or 0.0) > 0
        options = SamplingOptions.from_arguments(
            max_new_tokens=max_new,
            temperature=float(kwargs["temperature"]) if sampled else 0.0,
            top_k=kwargs.get("top_k") if sampled else None,
            top_p=kwargs.get("top_p") if sampled else None,
            seed=DEFAULT_SEED,
            stop=[stop for stop in until if stop],
        )
        # Greedy tokens never change once produced, so stopping at the first stop string (the decoder's
        # TextAssembler cuts the text just before it) gives the same text as HFLM's generate-then-cut.
        with autocast(self._device, self.dtype):
            return "".join(step.text[0] for step in decode_steps(self.model, prompt, options, device=self._device))


def _args(requests: Sequence[Any]) -> list[tuple]:
    """The argument tuples of lm-eval ``Instance`` objects (plain tuples pass through, for tests)."""
    return [getattr(r, "args", r) for r in requests]


def _name(request: Any) -> str:
    """The task of an lm-eval request, for error messages."""
    return str(getattr(request, "task_name", None) or "lm-eval")


if __name__ == "__main__":  # python -m gpt2.evaluate.harness: lm-eval's CLI, with gpt2-scratch registered
    from lm_eval.__main__ import cli_evaluate

    cli_evaluate()
