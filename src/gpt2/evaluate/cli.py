"""``gpt2 eval hellaswag``, ``gpt2 eval loss``, ``gpt2 eval lm-eval`` and ``gpt2 eval core``.

    gpt2 eval hellaswag --model gpt2 [--data FILE] [--limit N] [--batch-size 16] [--device auto] [--json]
    gpt2 eval loss --model runs/demo/run --data data/fineweb [--split val] [--tokens N]
    gpt2 eval loss --model runs/demo/run --text notes.txt
    gpt2 eval lm-eval --model runs/demo/run --tasks gpt2-paper [--limit N] [--include-path DIR] [--out FILE.json]
    gpt2 eval core --model runs/demo/run [--bundle DIR] [--max-per-task N]

Under ``torchrun --nproc_per_node=N gpt2 eval ...`` every rank scores its own slice and rank 0 prints.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from typing import Any

from gpt2.errors import GPT2Error


def _int_at_least(minimum: int, what: str) -> Callable[[str], int]:
    """An argparse ``type`` for whole numbers >= ``minimum``; ``what`` names them in the error."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected {what}, got {value}")
        return value

    return parse


_positive_int = _int_at_least(1, "a positive integer")
_non_negative_int = _int_at_least(0, "an integer >= 0")


# HellaSwag's default batch is hellaswag.DEFAULT_BATCH_SIZE (16 items, tested to match); the flag defaults to None so
# that `gpt2 eval --help` need not import the (torch) evaluation module to show it.
HELLASWAG_BATCH_HELP = "items (4 rows each; default: 16)"


def _add_common(parser: argparse.ArgumentParser, default_batch: int | None, batch_unit: str) -> None:
    from gpt2.quantize import add_quantize_argument

    parser.add_argument(
        "--model", required=True, help="checkpoint dir, run dir (its latest checkpoint), Hugging Face dir or hub name"
    )
    parser.add_argument(
        "--batch-size", type=_positive_int, default=default_batch, help=f"{batch_unit} per forward pass (per rank)"
    )
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    parser.add_argument(
        "--autocast",
        choices=["auto", "bf16", "fp16", "fp32"],
        default="auto",
        help="autocast precision (auto: bf16 on CUDA GPUs that support it, fp32 elsewhere)",
    )
    add_quantize_argument(parser)
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of text")


def add_eval_arguments(parser: argparse.ArgumentParser) -> None:
    tasks = parser.add_subparsers(dest="task", metavar="TASK", required=True)
    hellaswag = tasks.add_parser(
        "hellaswag",
        help="HellaSwag accuracy (acc, acc_norm, acc_norm_token)",
        description="HellaSwag accuracy, scored like lm-evaluation-harness (see docs/evaluation.md).",
    )
    _add_common(hellaswag, None, HELLASWAG_BATCH_HELP)
    hellaswag.add_argument(
        "--data",
        default=None,
        help="HellaSwag JSONL file, official raw or preprocessed (default: download the official validation set once)",
    )
    hellaswag.add_argument("--limit", type=_positive_int, default=None, help="evaluate only the first N items")

    loss = tasks.add_parser(
        "loss",
        help="mean loss and perplexity on validation tokens",
        description="Mean cross-entropy (nats/token) and perplexity over a fixed, deterministic set of tokens.",
    )
    _add_common(loss, 8, "sequences")
    source = loss.add_mutually_exclusive_group(required=True)
    source.add_argument("--data", help="prepared dataset directory (gpt2 prepare)")
    source.add_argument("--text", help="raw .txt / .jsonl / .jsonl.gz / .parquet file, tokenized on the fly")
    loss.add_argument("--split", default="val", help="split of --data to read (default: val)")
    loss.add_argument("--tokens", type=_positive_int, default=None, help="tokens to evaluate (default: all)")
    loss.add_argument("--seq-len", type=_positive_int, default=None, help="tokens per sequence (default: block size)")
    loss.add_argument("--text-field", default="text", help="JSON/parquet field holding the text (with --text)")

    harness = tasks.add_parser(
        "lm-eval",
        help="any lm-evaluation-harness task (needs the [eval] extra)",
        description="Run lm-evaluation-harness tasks on the model through our backend (see docs/evaluation.md).",
    )
    _add_common(harness, 64, "(context, continuation) rows")
    harness.add_argument("--tasks", required=True, help="comma-separated lm-eval task names, or the preset gpt2-paper")
    harness.add_argument("--limit", type=_positive_int, default=None, help="evaluate only the first N documents")
    harness.add_argument(
        "--num-fewshot", type=_non_negative_int, default=None, help="few-shot examples (default: the task's, 0)"
    )
    harness.add_argument("--include-path", default=None, help="directory of extra task YAMLs (local/offline tasks)")
    harness.add_argument("--out", default=None, help="also write lm-eval's full result JSON (with samples) here")

    core = tasks.add_parser(
        "core",
        help="CORE score: DCLM's 22 in-context tasks, scored as nanochat does",
        description="CORE (DCLM's 22 tasks; per-task centered accuracy and their mean; see docs/evaluation.md).",
    )
    _add_common(core, 64, "prompt rows")
    core.add_argument(
        "--bundle",
        default=None,
        help="eval bundle directory (core.yaml, eval_meta_data.csv, eval_data/); "
        "default: $GPT2_CORE_BUNDLE, else nanochat's eval_bundle.zip downloaded once",
    )
    core.add_argument("--max-per-task", type=_positive_int, default=None, help="score at most N examples a task")


def _print_report(result: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print(json.dumps(result))
        return
    if "acc" in result:
        print(f"HellaSwag on {result['data']} ({result['n']} items)")
        print(f"  acc             {result['acc']:.4f}   highest summed log-likelihood")
        print(f"  acc_norm        {result['acc_norm']:.4f}   per character (lm-evaluation-harness; what papers quote)")
        print(f"  acc_norm_token  {result['acc_norm_token']:.4f}   lowest mean per-token loss (build-nanogpt)")
        print(f"  n               {result['n']}")
        print(f"  wall time       {result['wall_s']:.1f} s ({result['items_per_s']:.1f} items/s)")
    elif "core" in result:
        from gpt2.evaluate.core import format_table

        print(f"CORE of {result['model']} on {result['bundle']} ({result['wall_s']:.1f} s)")
        print(format_table(result))
        if result["saved"]:
            print(f"saved in {result['saved']}")
    else:
        print(f"loss on {result['data']} ({result['tokens']:,} tokens)")
        print(f"  loss        {result['loss']:.4f} nats/token")
        print(f"  perplexity  {result['perplexity']:.2f}")
        bpb = "n/a (no text bytes)" if result["bpb"] is None else f"{result['bpb']:.4f}"
        print(f"  bpb         {bpb} bits/byte ({result['bytes_per_token']:.3f} bytes/token, <|endoftext|> excluded)")
        print(f"  wall time   {result['wall_s']:.1f} s ({result['tokens'] / max(result['wall_s'], 1e-9):,.0f} tok/s)")


def run_lm_eval_command(args: argparse.Namespace) -> int:
    """``gpt2 eval lm-eval``: lm-eval tasks through our backend; rank 0 prints the table and saves the results."""
    from gpt2.evaluate import harness_tasks as ht

    ht.require_lm_eval()
    from gpt2.runtime.device import resolve_amp_dtype
    from gpt2.runtime.distributed import setup_distributed, teardown_distributed
    from gpt2.store.files import atomic_write_text
    from gpt2.store.load import load

    tasks = ht.expand_tasks(args.tasks)
    ctx = setup_distributed(args.device)
    try:
        dtype = resolve_amp_dtype(args.autocast, ctx.device)
        model = load(args.model, ctx.device)
        t0 = time.perf_counter()
        evaluation = ht.run_lm_eval(
            model,
            tasks,
            include_path=args.include_path,
            limit=args.limit,
            num_fewshot=args.num_fewshot,
            batch_size=args.batch_size,
            device=ctx.device,
            dtype=dtype,
            log_samples=args.out is not None,
        )
        wall = time.perf_counter() - t0
        if ctx.is_main and evaluation is not None:
            settings = {"limit": args.limit, "device": str(ctx.device), "world_size": ctx.world_size, "wall_s": wall}
            rows = ht.metric_rows(evaluation["results"])
            saved = ht.results_path(args.model)
            if saved is not None:
                ht.save_results(saved, str(args.model), evaluation, settings)
            if args.out:
                from lm_eval.utils import handle_non_serializable

                atomic_write_text(args.out, json.dumps(evaluation, indent=2, default=handle_non_serializable) + "\n")
            if args.json:
                print(
                    json.dumps(
                        {"rows": rows, **settings, "model": str(args.model), "saved": str(saved) if saved else None}
                    )
                )
            else:
                print(f"lm-eval on {args.model} ({', '.join(tasks)}; {wall:.1f} s)")
                print(ht.format_table(rows))
                if saved is not None:
                    print(f"saved in {saved}")
            sys.stdout.flush()
    finally:
        teardown_distributed()
    return 0


def run_eval(args: argparse.Namespace) -> int:
    if args.task == "lm-eval":
        return run_lm_eval_command(args)
    from gpt2.runtime.device import resolve_amp_dtype
    from gpt2.runtime.distributed import setup_distributed, teardown_distributed
    from gpt2.store.load import load

    ctx = setup_distributed(args.device)
    try:
        dtype = resolve_amp_dtype(args.autocast, ctx.device)
        if args.task == "core":  # read and check the bundle (or download it) before loading a maybe big model
            from gpt2.evaluate import core

            bundle = core.resolve_bundle(args.bundle)
            tasks = core.load_bundle(bundle, args.max_per_task)
        model = load(args.model, ctx.device)
        if args.quantize:
            from gpt2.quantize import prepare_model

            if dtype is not None:
                raise GPT2Error("--quantize int8 evaluates in fp32: use it with --autocast fp32 (or auto on a CPU)")
            model = prepare_model(model, "fp32", args.quantize)
        t0 = time.perf_counter()
        result: dict[str, Any]
        if args.task == "hellaswag":
            from gpt2.evaluate.hellaswag import DEFAULT_BATCH_SIZE, hellaswag_accuracy, load_hellaswag

            items = load_hellaswag(args.data, limit=args.limit)
            t0 = time.perf_counter()  # time the scoring, not a possible download
            batch = args.batch_size or DEFAULT_BATCH_SIZE
            result = dict(hellaswag_accuracy(model, items, batch_size=batch, device=ctx.device, dtype=dtype))
            result["data"] = args.data or "hellaswag_val.jsonl (official, cached)"
        elif args.task == "core":
            result = dict(_run_core(args, model, tasks, ctx, dtype))
            result.update(bundle=str(bundle), bundle_sha256=core.bundle_sha256(bundle), max_per_task=args.max_per_task)
        else:
            from gpt2.evaluate.loss import evaluate_loss, evaluate_text_loss

            common = dict(
                max_tokens=args.tokens, batch_size=args.batch_size, seq_len=args.seq_len, device=ctx.device, dtype=dtype
            )
            if args.text:
                result = dict(evaluate_text_loss(model, args.text, text_field=args.text_field, **common))
                result["data"] = args.text
            else:
                result = dict(evaluate_loss(model, args.data, split=args.split, **common))
                result["data"] = f"{args.data} ({args.split})"
        wall = time.perf_counter() - t0
        result.update(model=str(args.model), device=str(ctx.device), world_size=ctx.world_size, wall_s=wall)
        if args.task == "hellaswag":
            result["items_per_s"] = result["n"] / max(wall, 1e-9)
        if args.task == "core":
            result["saved"] = _save_core(args.model, result) if ctx.is_main else None
        if ctx.is_main:
            _print_report(result, args.json)
            sys.stdout.flush()
    except (RuntimeError, ValueError) as exc:
        if "out of memory" in str(exc).lower():
            raise GPT2Error(f"out of memory while evaluating; use a smaller --batch-size ({exc})") from None
        raise
    finally:
        teardown_distributed()
    return 0


def _run_core(args: argparse.Namespace, model: Any, tasks: Any, ctx: Any, dtype: Any) -> dict[str, Any]:
    """``gpt2 eval core``'s result; rank 0 prints each task as it finishes (the 22 take minutes)."""
    from gpt2.evaluate.core import evaluate_core

    def progress(label: str, row: dict[str, Any]) -> None:
        if ctx.is_main and not args.json:
            print(f"  {label:<34} acc {row['accuracy']:.4f}  centered {row['centered']:+.4f}  ({row['wall_s']:.1f} s)")
            sys.stdout.flush()

    return evaluate_core(model, tasks, progress, batch_rows=args.batch_size, device=ctx.device, dtype=dtype)


def _save_core(model_spec: str, result: dict[str, Any]) -> str | None:
    """Write ``core.json`` into our run/checkpoint directory (atomically); None for other models."""
    from gpt2.evaluate.harness_tasks import results_path
    from gpt2.store.files import write_json_atomic

    path = results_path(model_spec, "core")
    if path is None:
        return None
    write_json_atomic(path, result)
    return str(path)
