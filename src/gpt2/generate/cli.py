"""``gpt2 sample``: generate text from a prompt. Light at import: torch loads only in :func:`run_sample`."""

from __future__ import annotations

import argparse
import sys

from gpt2.errors import GPT2Error


def add_sample_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="checkpoint dir, run dir, Hugging Face dir or hub name")
    parser.add_argument("--prompt", default="", help="text to continue (empty: start from <|endoftext|>)")
    parser.add_argument("-n", "--num-samples", type=int, default=1, help="samples to generate in one batch")
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--temperature", type=float, default=1.0, help="0 = greedy")
    parser.add_argument("--top-k", type=int, default=None, help="sample only among the k most likely tokens")
    parser.add_argument("--top-p", type=float, default=None, help="nucleus sampling probability mass")
    parser.add_argument("--repetition-penalty", type=float, default=None, help=">1 discourages repeated tokens")
    parser.add_argument("--seed", type=int, default=None, help="for reproducible samples")
    parser.add_argument("--stop", action="append", default=None, help="stop string (repeatable)")
    parser.add_argument("--stream", action="store_true", help="print text as it is generated (needs -n 1)")
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:N, mps or auto")
    from gpt2.quantize import add_precision_arguments

    add_precision_arguments(parser)  # --weights-dtype fp32|bf16, --quantize int8


def run_sample(args: argparse.Namespace) -> int:
    from gpt2.generate.decode import generate, stream
    from gpt2.generate.sampling import SamplingOptions
    from gpt2.runtime.device import resolve_device  # the same device rules as gpt2 train / eval
    from gpt2.store.load import load

    if args.stream and args.num_samples != 1:
        raise GPT2Error("--stream prints one sample as it is generated; use it with -n 1")
    kwargs = dict(
        max_new_tokens=args.max_new_tokens,
        temperature=args.temperature,
        top_k=args.top_k,
        top_p=args.top_p,
        repetition_penalty=args.repetition_penalty,
        num_samples=args.num_samples,
        seed=args.seed,
        stop=args.stop,
        on_notice=lambda message: print(f"note: {message}", file=sys.stderr),
    )
    SamplingOptions.from_arguments(**{k: v for k, v in kwargs.items() if k != "on_notice"})  # fail before loading
    device = resolve_device(args.device)
    from gpt2.quantize import prepare_model

    model = prepare_model(load(args.model, device=device), args.weights_dtype, args.quantize)
    if args.stream:
        print(args.prompt, end="", flush=True)
        for piece in stream(model, args.prompt, **kwargs):
            print(piece, end="", flush=True)
        print()
        return 0
    for i, text in enumerate(generate(model, args.prompt, **kwargs)):
        if args.num_samples > 1:
            print(f"--- sample {i + 1} ---")
        print(args.prompt + text)
    return 0
