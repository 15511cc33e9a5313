"""A GitHub-renderable Markdown summary of one training run (plus its plot)."""

from __future__ import annotations

import json
import os
import statistics
from pathlib import Path
from typing import Any

from gpt2.config import CONFIGS, GPTConfig
from gpt2.errors import GPT2Error
from gpt2.evaluate.slots import metric
from gpt2.report.metrics import RunMetrics, read_run
from gpt2.report.plot import write_plot
from gpt2.report.units import human_count, human_duration
from gpt2.store.files import atomic_write_text
from gpt2.store.rundir import RunDir, latest_checkpoint


def _cell(value: Any) -> str:
    """A value as one Markdown table cell: no raw pipes or newlines, which would break the row."""
    text = value if isinstance(value, str) else json.dumps(value)
    return text.replace("|", "\\|").replace("\n", " ")


def _fence(text: str) -> str:
    """A fenced block that survives backticks inside ``text`` (the fence is longer than any run of them)."""
    longest, run = 0, 0
    for ch in text:
        run = run + 1 if ch == "`" else 0
        longest = max(longest, run)
    fence = "`" * max(3, longest + 1)
    return f"{fence}text\n{text}\n{fence}"


def run_config(run: RunMetrics) -> GPTConfig | None:
    """The model config: ``run.json["config"]`` (a dict or a registry name), else the latest checkpoint's."""
    config = run.run_info.get("config")
    if isinstance(config, dict):
        return GPTConfig.from_dict(config.get("model", config) if isinstance(config.get("model"), dict) else config)
    if isinstance(config, str) and config in CONFIGS:
        return GPTConfig.named(config)
    from gpt2.store.checkpoint import read_config  # torch: only when run.json lacks the config

    ckpt = latest_checkpoint(run.run_dir)
    return read_config(ckpt) if ckpt is not None else None


def _config_name(config: GPTConfig) -> str:
    for name, known in CONFIGS.items():
        if known == config:
            return f" ({name})"
    return ""


def _flatten(data: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    items: list[tuple[str, Any]] = []
    for key, value in data.items():
        if isinstance(value, dict) and value:
            items.extend(_flatten(value, f"{prefix}{key}."))
        else:
            items.append((f"{prefix}{key}", value))
    return items


def _source_text(source: dict[str, Any]) -> str:
    """One line on where a fine-tuned run's weights came from (run.json's ``init_from``)."""
    meta = source.get("meta")
    if not isinstance(meta, dict):
        meta = {}
    facts = [f"step {meta['step']}"] if isinstance(meta.get("step"), int) else []
    if isinstance(meta.get("val_loss"), (int, float)):
        facts.append(f"val loss {meta['val_loss']:.4f}")
    where = source.get("checkpoint") or source.get("path")
    details = "; ".join(([str(where)] if where and where != source.get("spec") else []) + facts)
    return f"fine-tuned from {source.get('spec')}" + (f" ({details})" if details else "")


def summary_rows(run: RunMetrics) -> list[tuple[str, str]]:
    """(what, value) rows of the summary table; each value says its unit."""
    from gpt2.info import parameter_count  # imports the model (torch): only needed here

    rows: list[tuple[str, str]] = []
    config = run_config(run)
    if config is not None:
        rows.append(
            (
                "model",
                f"{config.n_layer} layers, {config.n_head} heads, {config.n_embd} channels, "
                f"context {config.block_size}, vocab {config.vocab_size}{_config_name(config)}",
            )
        )
        params = parameter_count(config)
        rows.append(("parameters", f"{params:,} ({human_count(params)})"))
        if config.dropout:
            rows.append(("dropout", f"{config.dropout:g}"))
    source = run.run_info.get("init_from")
    if isinstance(source, dict):
        rows.append(("initial weights", _source_text(source)))
    tokens = run.last_value("train", "tokens")
    step = run.last_value("train", "step")
    if tokens is not None:
        rows.append(("tokens seen", f"{tokens:,} ({human_count(tokens)}) in {step} steps"))
    wall = run.wall_time_s()
    if wall is not None:
        rows.append(("training wall time", human_duration(wall)))
    loss = run.last_value("train", "loss")
    if loss is not None:
        rows.append(("final train loss", f"{loss:.4f} (step {step})"))
    rows += [_metric_row(run, key) for key in run.eval_keys()]
    # The first logged step includes compilation / warm-up, so it is left out of the typical throughput.
    steady = run.train[1:] if len(run.train) > 1 else run.train
    tps = [r["tok_per_s"] for r in steady if isinstance(r.get("tok_per_s"), (int, float))]
    if tps:
        rows.append(("throughput", f"{statistics.median(tps):,.0f} tokens/s (median over steps)"))
    mfu = [r["mfu"] for r in steady if isinstance(r.get("mfu"), (int, float))]
    if mfu:
        rows.append(("MFU", f"{100 * statistics.median(mfu):.1f}% (median)"))
    settings = run.run_info.get("config")
    if isinstance(settings, dict) and settings.get("recipe"):  # runs from before --recipe have none
        rows.append(("recipe", f"{settings['recipe']} (--optimizer {settings.get('optimizer', 'adamw')})"))
    for key, label in (("device", "device"), ("world_size", "processes (world size)"), ("data", "data")):
        if run.run_info.get(key) is not None:
            rows.append((label, str(run.run_info[key])))
    return rows


def _metric_row(run: RunMetrics, key: str) -> tuple[str, str]:
    """("final LABEL", "VALUE (step N; best B; REFERENCE V)") of eval metric ``key`` (gpt2.evaluate.slots)."""
    about = metric(key)
    row = run.last_eval_row(key) or {}  # not None: key is one of run.eval_keys()
    _, values = run.series("evals", key)
    notes = [f"step {row.get('step')}"]
    if about.higher_is_better is not None and values:
        notes.append(f"best {_number(max(values) if about.higher_is_better else min(values))}")
    notes += [f"{what}: {value}" for value, what in about.references]
    return f"final {about.label}", f"{_number(row.get(key))} ({'; '.join(notes)})"


def _number(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def latest_samples(run: RunMetrics) -> tuple[Any, list[dict[str, Any]]]:
    """(step, sample rows) of the newest step that logged samples; an identical row re-logged after a resume once."""
    if not run.samples:
        return None, []
    step = run.samples[-1].get("step")
    rows: list[dict[str, Any]] = []
    for row in run.samples:
        if row.get("step") == step and row not in rows:
            rows.append(row)
    return step, rows


def _settings_tables(run_info: dict[str, Any]) -> list[str]:
    """Hyper-parameters (run.json's ``config`` minus the model shape, shown above) and the rest of run.json."""
    lines: list[str] = []
    config = run_info.get("config")
    if isinstance(config, dict):
        hyper = [(k, v) for k, v in _flatten(config) if not k.startswith("model.") and k != "model"]
        if hyper:
            lines += ["", "<details><summary>Hyper-parameters</summary>", "", "| option | value |", "|---|---|"]
            lines += [f"| `{_cell(k)}` | {_cell(v)} |" for k, v in hyper]
            lines += ["", "</details>"]
    shown_above = ("config", "model", "parameters")
    rest = [(k, v) for k, v in _flatten(run_info) if k.split(".")[0] not in shown_above]
    if rest:
        lines += ["", "<details><summary>Run (run.json)</summary>", "", "| field | value |", "|---|---|"]
        lines += [f"| `{_cell(k)}` | {_cell(v)} |" for k, v in rest]
        lines += ["", "</details>"]
    return lines


def _lm_eval_section(run_dir: Path) -> list[str]:
    """The run's lm-evaluation-harness results (``gpt2 eval lm-eval --model RUN_DIR``), if any."""
    from gpt2.evaluate.harness_tasks import format_number, summarize_lm_eval

    rows = summarize_lm_eval(run_dir)
    if not rows:
        return []
    lines = ["", "## lm-evaluation-harness", "", "| task | metric | value | ± stderr | GPT-2 124M | shots | limit |"]
    lines.append("|---|---|---|---|---|---|---|")
    for r in rows:
        cells = [r["task"], r["metric"], format_number(r["value"]), format_number(r["stderr"])]
        cells += [
            format_number(r["gpt2_124m"]),
            "—" if r["n_shot"] is None else str(r["n_shot"]),
            str(r["limit"] or "all"),
        ]
        lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    lines += [
        "",
        f"From `{RunDir(run_dir).lm_eval.name}`; GPT-2 124M: OpenAI's weights through lm-eval (docs/evaluation.md).",
    ]
    return lines


def _core_section(run_dir: Path) -> list[str]:
    """The run's CORE results (``gpt2 eval core --model RUN_DIR``), if any, per task and beside GPT-2's."""
    from gpt2.evaluate.harness_tasks import GPT2_CORE, read_core

    result = read_core(run_dir)
    if result is None:
        return []
    lines = ["", "## CORE", "", "| task | accuracy | centered | examples |", "|---|---|---|---|"]
    for task, row in result["tasks"].items():
        lines.append(f"| {_cell(task)} | {row['accuracy']:.4f} | {row['centered']:.4f} | {row['n']} |")
    family = ", ".join(f"{size} {value}" for size, value in GPT2_CORE.items())
    lines += ["", f"**CORE {result['core']:.4f}** (mean centered accuracy); GPT-2 (OpenAI's weights): {family}."]
    if result.get("missing"):
        lines.append(f"Missing from the bundle, so not comparable with a full CORE: {', '.join(result['missing'])}.")
    return lines


def render_report(run: RunMetrics, plot_link: str | None = None) -> str:
    """The Markdown text of the report; ``plot_link`` is the image path relative to the Markdown file."""
    lines = [f"# Training report: {run.name}", ""]
    if plot_link:
        lines += [f"![loss, learning rate, throughput and evaluations of {run.name}]({plot_link})", ""]
    lines += ["## Summary", "", "| | |", "|---|---|"]
    lines += [f"| {_cell(what)} | {_cell(value)} |" for what, value in summary_rows(run)]
    lines += [
        "",
        "GPT-2 124M references are OpenAI's weights; its val loss is only comparable for runs trained and evaluated "
        "on FineWeb-Edu.",
    ]
    lines += _lm_eval_section(run.run_dir) + _core_section(run.run_dir)
    step, samples = latest_samples(run)
    if samples:
        lines += ["", f"## Samples at step {step}", ""]
        previous_prompt = None
        for row in samples:
            prompt = str(row.get("prompt", ""))
            if prompt != previous_prompt:  # one heading per prompt; each block shows prompt + continuation
                lines += [f"**Prompt:** {_cell(prompt) or '(empty)'}", ""]
                previous_prompt = prompt
            lines += [_fence(prompt + str(row.get("text", ""))), ""]
    lines += _settings_tables(run.run_info)
    return "\n".join(lines).rstrip("\n") + "\n"


def write_report(run_dir: str | Path, out: str | Path | None = None, plot: bool = True) -> Path:
    """Write the Markdown report (default ``RUN_DIR/report.md``) and, with ``plot``, ``RUN_DIR/plot.png``."""
    run = read_run(run_dir)
    out = Path(out) if out is not None else RunDir(run.run_dir).report
    if out.suffix.lower() != ".md":
        raise GPT2Error(f"--out {out}: the report is Markdown, give a file name ending in .md")
    plot_path = RunDir(run.run_dir).plot
    if plot:
        write_plot([run.run_dir], plot_path)
    link = None
    if plot_path.is_file():
        link = Path(os.path.relpath(plot_path.resolve(), out.resolve().parent)).as_posix()
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, render_report(run, link))
    return out
