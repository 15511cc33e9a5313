"""``gpt2 serve``'s command line; light (no torch, FastAPI or Gradio import until the command runs)."""

from __future__ import annotations

import argparse
import os

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 7860
API_KEY_ENV = "GPT2_API_KEY"


def add_serve_arguments(parser: argparse.ArgumentParser) -> None:
    from gpt2.quantize import add_precision_arguments

    parser.add_argument("--model", default=None, help="checkpoint dir, run dir, Hugging Face dir or hub name")
    parser.add_argument("--host", default=DEFAULT_HOST, help="interface to listen on (0.0.0.0 exposes the server)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT)
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:N, mps or auto")
    parser.add_argument(
        "--api-key",
        default=None,
        help=f"require 'Authorization: Bearer KEY' on /v1/* (default: ${API_KEY_ENV} if set; else no key)",
    )
    parser.add_argument("--no-ui", action="store_true", help="serve the API only, without the web page")
    add_precision_arguments(parser)


def run_serve(args: argparse.Namespace) -> int:
    from gpt2.serve.server import serve

    api_key = args.api_key if args.api_key is not None else os.environ.get(API_KEY_ENV) or None
    serve(
        args.model,
        host=args.host,
        port=args.port,
        device=args.device,
        dtype=args.weights_dtype,
        quantize=args.quantize,
        api_key=api_key,
        ui=not args.no_ui,
    )
    return 0
