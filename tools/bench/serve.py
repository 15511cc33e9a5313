"""``python -m tools.bench serve``: what batching and int8 buy when serving.

* **batching**: 8 clients (threads) submit their request at once to the serving engine
  (:mod:`gpt2.serve.engine`), against the same 8 requests submitted one after the other (each waits for
  the previous one: what a server without batching does). ``mini``'s shape with the GPT-2 vocabulary,
  random weights (speed does not depend on them), prompts of 4-40 tokens, 64 greedy new tokens each;
  the figure is total new tokens per second. The engine is measured in-process (no HTTP), so the ratio
  is the batching's alone.
* **int8 / bf16 speed**: ``generate_token_ids`` at 124M (random weights), batch 1, 32 prompt + 32 new
  tokens, fp32 against ``--quantize int8`` and against ``--weights-dtype bf16``, timed interleaved.
* **quality cost**: the change of validation loss (nats/token) from int8 and from bf16, on held-out
  data of a *trained* model: ``$GPT2_BENCH_SERVE_MODEL`` and its prepared dataset ``$GPT2_BENCH_SERVE_DATA``
  (val split), by default ``runs/demo/run`` and ``runs/demo/data`` (``make demo``). Without one there is no
  quality entry and the speed entries carry a ``quality_note`` saying why: on random weights the loss is
  ~ln(50257) whatever the precision, so it would say nothing.

Quick mode: the tiny shape and a few tokens, for the test suite.
"""

from __future__ import annotations

import copy
import os
import threading
from pathlib import Path

import torch

from gpt2.config import GPT2_VOCAB_SIZE, GPTConfig
from gpt2.generate import generate_token_ids
from gpt2.generate.sampling import SamplingOptions
from gpt2.model import GPT
from gpt2.quantize import prepare_model
from gpt2.serve.engine import Engine
from tools.bench.core import BenchResult, interleaved_median_seconds

CLIENTS = 8
DEMO_RUN, DEMO_DATA = Path("runs/demo/run"), Path("runs/demo/data")
QUALITY_TOKENS = 65_536  # held-out tokens per loss measurement


def _prompts(count: int, quick: bool) -> list[list[int]]:
    g = torch.Generator().manual_seed(0)
    lengths = [3, 5, 7, 9][:count] if quick else [4 + 36 * i // max(1, count - 1) for i in range(count)]
    return [torch.randint(0, GPT2_VOCAB_SIZE, (n,), generator=g).tolist() for n in lengths]


def _serve_all(engine: Engine, prompts: list[list[int]], options: SamplingOptions, concurrent: bool) -> int:
    """New tokens generated for ``prompts``, all at once (one thread per client) or one after another."""
    counts = [0] * len(prompts)

    def client(i: int) -> None:
        counts[i] = sum(1 for _ in engine.stream(prompts[i], options, on_notice=lambda m: None))

    if concurrent:
        threads = [threading.Thread(target=client, args=(i,)) for i in range(len(prompts))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    else:
        for i in range(len(prompts)):
            client(i)
    return sum(counts)


def bench_batching(repeat: int, quick: bool) -> BenchResult:
    torch.manual_seed(0)
    shape = dict(n_layer=2, n_head=2, n_embd=64, block_size=128) if quick else dict(n_layer=6, n_head=6, n_embd=384)
    model = GPT(GPTConfig(vocab_size=GPT2_VOCAB_SIZE, **shape)).eval()
    clients = 4 if quick else CLIENTS
    options = SamplingOptions(max_new_tokens=8 if quick else 64, temperature=0.0)
    prompts = _prompts(clients, quick)
    engine = Engine(model)
    tokens: dict[bool, int] = {}

    def timed(concurrent: bool):
        return lambda: tokens.__setitem__(concurrent, _serve_all(engine, prompts, options, concurrent))

    try:
        times = interleaved_median_seconds({"batched": timed(True), "sequential": timed(False)}, repeat=repeat)
    finally:
        engine.close()
    batched, sequential = tokens[True] / times["batched"], tokens[False] / times["sequential"]
    return BenchResult(
        name=f"serve {clients} concurrent clients ({'tiny' if quick else 'mini'}, {options.max_new_tokens} new tok)",
        ours=batched,
        reference=sequential,
        unit="tok/s",
        ratio=batched / sequential,
        reference_name="the same requests one at a time",
        extra={"clients": clients, "new_tokens_per_request": options.max_new_tokens, "tokens": tokens[True]},
    )


def bench_precision(repeat: int, quick: bool) -> list[BenchResult]:
    torch.manual_seed(0)
    config = GPTConfig(vocab_size=GPT2_VOCAB_SIZE, **(dict(n_layer=2, n_head=2, n_embd=64) if quick else {}))
    fp32 = GPT(config).eval()
    models = {
        "fp32": fp32,
        "int8": prepare_model(copy.deepcopy(fp32), "fp32", "int8"),
        "bf16": prepare_model(copy.deepcopy(fp32), "bf16"),
    }
    prompt = _prompts(1, quick)[0] * (1 if quick else 8)
    options = SamplingOptions(max_new_tokens=8 if quick else 32, temperature=0.0)

    def decode(model):
        return lambda: sum(1 for _ in generate_token_ids(model, prompt, options, stop_at_eot=False))

    times = interleaved_median_seconds({name: decode(m) for name, m in models.items()}, repeat=repeat)
    size = "tiny" if quick else "124M"
    return [
        BenchResult(
            name=f"generate {name} vs fp32 ({size}, batch 1)",
            ours=options.max_new_tokens / times[name],
            reference=options.max_new_tokens / times["fp32"],
            unit="tok/s",
            ratio=times["fp32"] / times[name],
            reference_name="fp32",
            extra={"prompt_tokens": len(prompt), "new_tokens": options.max_new_tokens},
        )
        for name in ("int8", "bf16")
    ]


def bench_quality(quick: bool) -> list[BenchResult]:
    """Validation loss of int8 and bf16 against fp32 on the trained model's held-out split."""
    from gpt2.evaluate.loss import evaluate_loss
    from gpt2.store.load import load

    run = Path(os.environ.get("GPT2_BENCH_SERVE_MODEL", DEMO_RUN))
    data = Path(os.environ.get("GPT2_BENCH_SERVE_DATA", DEMO_DATA))
    if not run.exists() or not data.exists():
        raise FileNotFoundError(
            f"no trained model for the quality cost: {run} / {data} missing (run `make demo`, or set "
            "GPT2_BENCH_SERVE_MODEL and GPT2_BENCH_SERVE_DATA)"
        )
    base = load(str(run), device="cpu")
    tokens = 2048 if quick else QUALITY_TOKENS
    losses = {}
    for name, (dtype, quantize) in {"fp32": ("fp32", None), "int8": ("fp32", "int8"), "bf16": ("bf16", None)}.items():
        model = prepare_model(copy.deepcopy(base), dtype, quantize)
        losses[name] = evaluate_loss(model, data, split="val", max_tokens=tokens, device="cpu")["loss"]
    # The entry reads "loss with int8 / bf16" against "fp32 loss" (ratio = fp32 / ours: lower loss is better);
    # the figure the issue asks for, the change in nats/token, is its `delta` extra.
    return [
        BenchResult(
            name=f"val loss {name} vs fp32 ({run.name}, {tokens:,} held-out tokens)",
            ours=losses[name],
            reference=losses["fp32"],
            unit="nats/tok",
            ratio=losses["fp32"] / losses[name],
            reference_name="fp32 loss",
            extra={"delta": losses[name] - losses["fp32"], "model": str(run), "data": str(data)},
        )
        for name in ("int8", "bf16")
    ]


def run(device: str = "cpu", repeat: int = 3, quick: bool = False) -> list[BenchResult]:
    if torch.device(device).type != "cpu":
        raise ValueError("the serve suite measures CPU serving (int8 runs on the CPU only); use --device cpu")
    results = [bench_batching(repeat, quick), *bench_precision(repeat, quick)]
    try:
        results += bench_quality(quick)
    except FileNotFoundError as exc:  # no figure to give: the speed entries say why the quality ones are missing
        for result in results[1:]:
            result.extra["quality_note"] = str(exc)
    return results
