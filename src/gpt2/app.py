"""``gpt2 serve``: the Gradio web app.

Streams text from a model loaded once at start-up, with the KV-cache decoding of
:mod:`gpt2.generate`. Safe by default: listens on 127.0.0.1, analytics off, every input
bounded on the server (the browser sliders are only a convenience; API callers can send
anything), requests queued with a concurrency limit, errors shown as messages, never
stack traces. Started without a usable model it shows how to get one instead of crashing.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from gpt2.errors import GPT2Error

# Bounds on what one request may ask for (CPU-friendly; a GPU could afford more).
MAX_PROMPT_CHARS = 4000
MAX_NEW_TOKENS = 512
MAX_SAMPLES = 4
TEMPERATURE_RANGE = (0.1, 2.0)
TOP_K_RANGE = (0, 200)  # 0 = off
TOP_P_RANGE = (0.05, 1.0)  # 1.0 = off
MAX_SEED = 2**31 - 1  # -1 = a random seed
CONCURRENCY_LIMIT = 2  # generations running at once; the rest wait in the queue
QUEUE_SIZE = 64  # waiting requests beyond this are turned away with a message
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 7860

EXAMPLE_PROMPTS = [
    "Hello, I'm a language model,",
    "The history of the Roman Empire",
    "In a shocking finding, scientists discovered",
    "def fibonacci(n):",
]

HOW_TO_GET_A_MODEL = """
### No model loaded

Start the app with a model: `gpt2 serve --model PATH` (or `python app.py --model PATH`), where PATH is
one of our checkpoints, a training run directory, a Hugging Face GPT-2 directory or a hub name.
Ways to get one:

* **Train the demo model** (a few minutes on a laptop CPU): `make demo`, then `gpt2 serve --model runs/demo/run`.
* **Import OpenAI's GPT-2** (needs the Hugging Face Hub once):
  `gpt2 import hf gpt2 --out models/gpt2`, then `gpt2 serve --model models/gpt2`.
* **Train your own**: see `gpt2 train --help`.
"""


def model_summary(spec: str, model: Any) -> dict[str, Any]:
    """What the info panel shows: source, size name, parameters, context and the checkpoint's metadata."""
    from gpt2.checkpoint import is_checkpoint_dir, read_meta
    from gpt2.config import CONFIGS
    from gpt2.rundir import latest_checkpoint

    config = model.config
    size = next((name for name, c in CONFIGS.items() if c == config), None)
    if size is None:  # an imported model has the real 50257-token vocabulary; match on the shape
        shape = (config.n_layer, config.n_head, config.n_embd, config.block_size)
        size = next((n for n, c in CONFIGS.items() if (c.n_layer, c.n_head, c.n_embd, c.block_size) == shape), None)
    meta: dict[str, Any] = {}
    path = Path(spec)
    if path.is_dir():
        ckpt = path if is_checkpoint_dir(path) else latest_checkpoint(path)
        if ckpt is not None:
            meta = read_meta(ckpt)
    return {
        "source": spec,
        "size": size or f"custom ({config.n_layer} layers, {config.n_embd} channels)",
        "parameters": model.num_parameters(),
        "context": config.block_size,
        "step": meta.get("step"),
        "tokens": meta.get("tokens"),
        "val_loss": meta.get("val_loss"),
        "hellaswag": meta.get("hellaswag_acc_norm", meta.get("hellaswag_acc")),
    }


def _format_summary(info: dict[str, Any]) -> str:
    def fmt(value: Any, spec: str = "") -> str:
        return "unknown" if value is None else format(value, spec)

    rows = [
        ("Model", f"`{info['source']}`"),
        ("Size", info["size"]),
        ("Parameters", f"{info['parameters'] / 1e6:.1f}M"),
        ("Context window", f"{info['context']} tokens"),
        ("Training step", fmt(info["step"], ",")),
        ("Training tokens", fmt(info["tokens"], ",")),
        ("Validation loss", fmt(info["val_loss"], ".4f")),
        ("HellaSwag (acc_norm)", fmt(info["hellaswag"], ".4f")),
    ]
    return "| Property | Value |\n|---|---|\n" + "\n".join(f"| {k} | {v} |" for k, v in rows)


def validate_request(
    prompt: Any, max_new_tokens: Any, temperature: Any, top_k: Any, top_p: Any, seed: Any, num_samples: Any
) -> dict[str, Any]:
    """Check one request against the app's bounds; a GPT2Error says which input is wrong and the allowed range."""

    def number(name: str, value: Any, low: float, high: float, integer: bool = False) -> float | int:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
            raise GPT2Error(f"{name} must be a number, got {value!r}")
        if not low <= value <= high:
            raise GPT2Error(f"{name} must be between {low} and {high}, got {value}")
        if integer and value != int(value):
            raise GPT2Error(f"{name} must be a whole number, got {value}")
        return int(value) if integer else float(value)

    if not isinstance(prompt, str):
        raise GPT2Error("the prompt must be text")
    if len(prompt) > MAX_PROMPT_CHARS:
        raise GPT2Error(f"the prompt has {len(prompt)} characters; the limit is {MAX_PROMPT_CHARS}")
    seed = -1 if seed is None else number("seed", seed, -1, MAX_SEED, integer=True)
    return dict(
        max_new_tokens=number("max new tokens", max_new_tokens, 1, MAX_NEW_TOKENS, integer=True),
        temperature=number("temperature", temperature, *TEMPERATURE_RANGE),
        top_k=number("top-k", top_k, *TOP_K_RANGE, integer=True) or None,
        top_p=number("top-p", top_p, *TOP_P_RANGE),
        seed=None if seed == -1 else seed,
        num_samples=number("number of samples", num_samples, 1, MAX_SAMPLES, integer=True),
    )


def _format_output(prompt: str, texts: list[str]) -> str:
    if len(texts) == 1:
        return prompt + texts[0]
    return "\n\n".join(f"--- sample {i + 1} ---\n{prompt}{text}" for i, text in enumerate(texts))


def _make_generate_fn(model: Any):
    import gradio as gr

    from gpt2.generate import stream_samples

    def generate_text(prompt, max_new_tokens, temperature, top_k, top_p, seed, num_samples) -> Iterator[tuple]:
        """Stream (output text, status line) while the model writes."""
        try:
            request = validate_request(prompt, max_new_tokens, temperature, top_k, top_p, seed, num_samples)
            notices: list[str] = []
            steps = stream_samples(model, prompt, on_notice=notices.append, **request)
        except GPT2Error as exc:
            raise gr.Error(str(exc), print_exception=False) from None
        texts = [""] * request["num_samples"]
        start = time.perf_counter()
        shown_notices = 0
        for pieces in steps:
            texts = [t + p for t, p in zip(texts, pieces, strict=True)]
            for message in notices[shown_notices:]:
                gr.Warning(message)
            shown_notices = len(notices)
            yield _format_output(prompt, texts), "generating…"
        seconds = time.perf_counter() - start
        status = f"done in {seconds:.1f} s" + "".join(f" · note: {m}" for m in notices)
        yield _format_output(prompt, texts), status

    return generate_text


def _load_model(spec: str | None, device: str) -> tuple[Any | None, str]:
    """(model, "") or (None, reason) — the app must come up even when the model cannot be loaded."""
    if not spec:
        return None, ""
    from gpt2.loading import load
    from gpt2.runtime.device import resolve_device

    try:
        return load(spec, device=resolve_device(device)), ""
    except GPT2Error as exc:
        return None, str(exc)


def build_app(model_spec: str | None, device: str = "cpu") -> Any:
    """The Gradio Blocks app for ``model_spec`` (None, or a model that fails to load: the how-to page)."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    import gradio as gr

    model, problem = _load_model(model_spec, device)
    with gr.Blocks(title="GPT-2 from scratch", analytics_enabled=False) as demo:
        gr.Markdown("# GPT-2 from scratch\nType the beginning of a text; the model continues it.")
        if model is None:
            if problem:
                gr.Markdown(f"**Could not load `{model_spec}`:** {problem}", elem_id="load-error")
            gr.Markdown(HOW_TO_GET_A_MODEL, elem_id="how-to")
            return demo
        with gr.Row():
            with gr.Column(scale=3):
                prompt = gr.Textbox(
                    label="Prompt",
                    lines=4,
                    placeholder="Hello, I'm a language model,",
                    info=f"up to {MAX_PROMPT_CHARS} characters; longer prompts than the context window keep their end",
                    elem_id="prompt",
                )
                with gr.Row():
                    run = gr.Button("Generate", variant="primary", elem_id="generate")
                    stop = gr.Button("Stop", variant="stop", elem_id="stop")
                output = gr.Textbox(label="Output", lines=12, interactive=False, elem_id="output")
                status = gr.Markdown(elem_id="status")
                gr.Examples(EXAMPLE_PROMPTS, inputs=[prompt], label="Example prompts")
            with gr.Column(scale=2):
                max_new_tokens = gr.Slider(
                    1, MAX_NEW_TOKENS, value=64, step=1, label="Max new tokens", elem_id="max-new-tokens"
                )
                temperature = gr.Slider(*TEMPERATURE_RANGE, value=0.8, step=0.05, label="Temperature")
                top_k = gr.Slider(*TOP_K_RANGE, value=50, step=1, label="Top-k (0 = off)")
                top_p = gr.Slider(*TOP_P_RANGE, value=0.95, step=0.01, label="Top-p (1 = off)")
                seed = gr.Number(value=-1, precision=0, minimum=-1, maximum=MAX_SEED, label="Seed (-1 = random)")
                num_samples = gr.Slider(1, MAX_SAMPLES, value=1, step=1, label="Number of samples")
                gr.Markdown("### Model\n" + _format_summary(model_summary(model_spec, model)), elem_id="model-info")
        inputs = [prompt, max_new_tokens, temperature, top_k, top_p, seed, num_samples]
        generate_fn = _make_generate_fn(model)
        event = run.click(generate_fn, inputs=inputs, outputs=[output, status], api_name="generate")
        prompt.submit(generate_fn, inputs=inputs, outputs=[output, status], api_visibility="private")
        stop.click(None, cancels=[event], api_visibility="private")
    return demo


def serve(model_spec: str | None, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, device: str = "auto") -> None:
    """Build the app and serve it until interrupted."""
    if not 1 <= port <= 65535:
        raise GPT2Error(f"--port must be in [1, 65535], got {port}")
    import gradio as gr

    demo = build_app(model_spec, device)
    demo.queue(default_concurrency_limit=CONCURRENCY_LIMIT, max_size=QUEUE_SIZE)
    if host not in ("127.0.0.1", "localhost", "::1"):
        print(f"warning: serving on {host}: anyone who can reach this address can use the app")
    # System fonts only: the default theme would fetch Google Fonts, which an offline machine cannot.
    theme = gr.themes.Default(font=["system-ui", "sans-serif"], font_mono=["ui-monospace", "monospace"])
    demo.launch(server_name=host, server_port=port, ssr_mode=False, show_error=False, theme=theme)


def add_serve_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default=None, help="checkpoint dir, run dir, Hugging Face dir or hub name")
    parser.add_argument("--host", default=DEFAULT_HOST, help="interface to listen on (0.0.0.0 exposes the app)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT)
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:N, mps or auto")


def run_serve(args: argparse.Namespace) -> int:
    serve(args.model, host=args.host, port=args.port, device=args.device)
    return 0
