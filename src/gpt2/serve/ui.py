"""The Gradio web page of ``gpt2 serve`` (mounted on the FastAPI app of :mod:`gpt2.serve.server`).

Streams text from the model loaded once at start-up, through the same batched engine as the API
(:mod:`gpt2.serve.engine`), so browser users and API clients share decode steps. Safe by default:
analytics off, every input checked on the server by ``SamplingOptions`` within its ``SERVED`` limits, as
the API's (the browser sliders are only a convenience; API callers can send anything), requests queued
with a bound, errors shown as messages, never stack traces. Started without a usable model it shows how
to get one instead of crashing.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from gpt2.errors import GPT2Error
from gpt2.generate.sampling import SERVED, SamplingOptions, check_prompt

# Generations followed at once by Gradio's worker threads (they only wait on the engine, which batches them).
CONCURRENCY_LIMIT = 8
QUEUE_SIZE = 64  # waiting requests beyond this are turned away with a message

EXAMPLE_PROMPTS = [
    "Hello, I'm a language model,",
    "The history of the Roman Empire",
    "In a shocking finding, scientists discovered",
    "def fibonacci(n):",
]
SHAKESPEARE_PROMPTS = [  # for a model trained on the demo corpus, which knows nothing but the plays
    "ROMEO:",
    "JULIET:\nO Romeo, Romeo!",
    "KING HENRY V:\nOnce more unto the breach,",
    "First Citizen:\n",
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


def example_prompts(spec: str) -> list[str]:
    """The page's example prompts, fit for the model: Shakespeare for a run trained on the demo corpus (its
    run.json names the dataset, whose manifest names the source), else EXAMPLE_PROMPTS."""
    from gpt2.store.files import read_json_object
    from gpt2.store.rundir import RunDir

    for run_dir in (RunDir(spec), RunDir(Path(spec).parent)):  # a run directory, or one of its checkpoints
        if run_dir.run_info.is_file():
            try:
                data = read_json_object(run_dir.run_info).get("data")
                source = read_json_object(Path(str(data)) / "manifest.json").get("source")
            except GPT2Error:  # the dataset moved or is gone: the default prompts
                break
            return SHAKESPEARE_PROMPTS if str(source).startswith("demo") else EXAMPLE_PROMPTS
    return EXAMPLE_PROMPTS


def model_summary(spec: str, model: Any) -> dict[str, Any]:
    """What the info panel shows: source, size name, parameters, context and the checkpoint's metadata."""
    from gpt2.config import CONFIGS
    from gpt2.evaluate.harness_tasks import read_core, summarize_lm_eval
    from gpt2.store.checkpoint import find_checkpoint, read_meta

    config = model.config
    size = next((name for name, c in CONFIGS.items() if c == config), None)
    if size is None:  # an imported model has the real 50257-token vocabulary; match on the shape
        shape = (config.n_layer, config.n_head, config.n_embd, config.block_size)
        size = next((n for n, c in CONFIGS.items() if (c.n_layer, c.n_head, c.n_embd, c.block_size) == shape), None)
    meta: dict[str, Any] = {}
    lm_eval: list[dict[str, Any]] = []
    core = None
    path = Path(spec)
    if path.is_dir():
        ckpt = find_checkpoint(path)
        if ckpt is not None:
            meta = read_meta(ckpt)
        lm_eval = summarize_lm_eval(path)  # saved by `gpt2 eval lm-eval --model SPEC` (run or checkpoint dir)
        core = read_core(path)  # saved by `gpt2 eval core --model SPEC`
    return {
        "source": spec,
        "size": size or f"custom ({config.n_layer} layers, {config.n_embd} channels)",
        "parameters": model.num_parameters(),
        "context": config.block_size,
        "step": meta.get("step"),
        "tokens": meta.get("tokens"),
        # the losses and in-loop evaluation metrics saved with the checkpoint (gpt2.evaluate.slots)
        "metrics": {k: v for k, v in meta.items() if k not in ("step", "tokens") and type(v) in (int, float)},
        "lm_eval": lm_eval,
        "core": core,
    }


def _format_summary(info: dict[str, Any]) -> str:
    from gpt2.evaluate.harness_tasks import GPT2_CORE
    from gpt2.evaluate.slots import metric

    def fmt(value: Any, spec: str = "") -> str:
        return "unknown" if value is None else format(value, spec)

    rows = [
        ("Model", f"`{info['source']}`"),
        ("Size", info["size"]),
        ("Parameters", f"{info['parameters'] / 1e6:.1f}M"),
        ("Context window", f"{info['context']} tokens"),
        ("Training step", fmt(info["step"], ",")),
        ("Training tokens", fmt(info["tokens"], ",")),
    ]
    rows += [(metric(k).label, f"{v:.4f}" if isinstance(v, float) else f"{v:,}") for k, v in info["metrics"].items()]
    for row in info.get("lm_eval", []):  # lm-eval results next to OpenAI GPT-2 124M's published number
        reference = "" if row["gpt2_124m"] is None else f" (GPT-2 124M: {row['gpt2_124m']:.4f})"
        rows.append((f"lm-eval {row['task']} {row['metric']}", f"{row['value']:.4f}{reference}"))
    if info.get("core"):  # CORE next to OpenAI GPT-2 124M's (nanochat's measurement)
        core, n = info["core"], len(info["core"]["tasks"])
        rows.append((f"CORE ({n} tasks, gpt2 eval core)", f"{core['core']:.4f} (GPT-2 124M: {GPT2_CORE['124M']})"))
    return "| Property | Value |\n|---|---|\n" + "\n".join(f"| {k} | {v} |" for k, v in rows)


def page_options(
    prompt: Any, max_new_tokens: Any, temperature: Any, top_k: Any, top_p: Any, seed: Any, num_samples: Any
) -> SamplingOptions:
    """The page's raw inputs as sampling options within the server's limits (a GPT2Error names a bad input);
    top-k 0 is off, seed -1 (or none) is a random seed."""
    check_prompt(prompt, SERVED)
    return SamplingOptions.from_arguments(
        max_new_tokens=max_new_tokens,
        temperature=temperature,
        top_k=top_k,
        top_p=top_p,
        seed=None if seed in (None, -1) else seed,
        num_samples=num_samples,
        limits=SERVED,
    )


def _format_output(prompt: str, texts: list[str]) -> str:
    if len(texts) == 1:
        return prompt + texts[0]
    return "\n\n".join(f"--- sample {i + 1} ---\n{prompt}{text}" for i, text in enumerate(texts))


def _make_generate_fn(engine: Any):
    import gradio as gr

    from gpt2.tokenizer import get_tokenizer

    tokenizer = get_tokenizer()

    def generate_text(prompt, max_new_tokens, temperature, top_k, top_p, seed, num_samples) -> Iterator[tuple]:
        """Stream (output text, status line) while the model writes; the decoding runs in the shared engine."""
        try:
            options = page_options(prompt, max_new_tokens, temperature, top_k, top_p, seed, num_samples)
            notices: list[str] = []
            steps = engine.stream(tokenizer.encode(prompt), options, on_notice=notices.append)
        except GPT2Error as exc:
            raise gr.Error(str(exc), print_exception=False) from None
        for message in notices:
            gr.Warning(message)
        texts = [""] * options.num_samples
        start = time.perf_counter()
        try:
            for step in steps:
                texts = [text + piece for text, piece in zip(texts, step.text, strict=True)]
                yield _format_output(prompt, texts), "generating…"
        except GPT2Error as exc:
            raise gr.Error(str(exc), print_exception=False) from None
        finally:
            steps.close()  # the stop button (or a closed page) cancels the request in the engine
        seconds = time.perf_counter() - start
        status = f"done in {seconds:.1f} s" + "".join(f" · note: {m}" for m in notices)
        yield _format_output(prompt, texts), status

    return generate_text


def build_app(model_spec: str | None, engine: Any | None, problem: str = "") -> Any:
    """The Gradio Blocks page for the model behind ``engine`` (a :class:`gpt2.serve.engine.Engine`); with no
    engine, the how-to page (and ``problem``: why ``model_spec`` could not be loaded)."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    import gradio as gr

    # delete_cache: Gradio's temp files (the app has no file input; see gpt2.serve.server) go after an hour.
    with gr.Blocks(title="GPT-2 from scratch", analytics_enabled=False, delete_cache=(600, 3600)) as demo:
        gr.Markdown("# GPT-2 from scratch\nType the beginning of a text; the model continues it.")
        if engine is None:
            if problem:
                gr.Markdown(f"**Could not load `{model_spec}`:** {problem}", elem_id="load-error")
            gr.Markdown(HOW_TO_GET_A_MODEL, elem_id="how-to")
            return demo
        assert model_spec is not None  # an engine is loaded from a spec
        examples = example_prompts(model_spec)
        with gr.Row():
            with gr.Column(scale=3):
                prompt = gr.Textbox(
                    label="Prompt",
                    lines=4,
                    placeholder=examples[0],
                    info=f"up to {SERVED.prompt_chars} characters; a prompt over the context window keeps its end",
                    elem_id="prompt",
                )
                with gr.Row():
                    run = gr.Button("Generate", variant="primary", elem_id="generate")
                    stop = gr.Button("Stop", variant="stop", elem_id="stop")
                output = gr.Textbox(label="Output", lines=12, interactive=False, elem_id="output")
                status = gr.Markdown(elem_id="status")
                gr.Examples(examples, inputs=[prompt], label="Example prompts")
            with gr.Column(scale=2):
                max_new_tokens = gr.Slider(
                    1, SERVED.max_new_tokens, value=64, step=1, label="Max new tokens", elem_id="max-new-tokens"
                )
                temperature = gr.Slider(0, SERVED.temperature, value=0.8, step=0.05, label="Temperature (0 = greedy)")
                top_k = gr.Slider(0, 200, value=50, step=1, label="Top-k (0 = off)")
                top_p = gr.Slider(0.05, 1.0, value=0.95, step=0.01, label="Top-p (1 = off)")
                seed = gr.Number(value=-1, precision=0, minimum=-1, maximum=2**31 - 1, label="Seed (-1 = random)")
                num_samples = gr.Slider(1, SERVED.num_samples, value=1, step=1, label="Number of samples")
                gr.Markdown(
                    "### Model\n" + _format_summary(model_summary(model_spec, engine.model)), elem_id="model-info"
                )
        inputs = [prompt, max_new_tokens, temperature, top_k, top_p, seed, num_samples]
        generate_fn = _make_generate_fn(engine)
        # preprocess=False: the raw values reach page_options, so a NaN or a string where a number belongs
        # gets our one-line message (Gradio's own conversion would fail first with an empty {"error": null}).
        io: dict[str, Any] = dict(inputs=inputs, outputs=[output, status], preprocess=False)
        event = run.click(generate_fn, **io, api_name="generate")
        prompt.submit(generate_fn, **io, api_visibility="private")
        stop.click(None, cancels=[event], api_visibility="private")
    return demo
