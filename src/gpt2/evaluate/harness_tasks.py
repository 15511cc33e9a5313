"""``gpt2 eval lm-eval``: task presets, GPT-2 124M's published numbers, the result table and its file.

Nothing here imports torch or lm-eval at module level (the CLI and ``gpt2 report`` import it to
read results); :func:`run_lm_eval` imports them when it runs.

Results are kept in ``lm_eval.json`` next to the model when ``--model`` is one of our run or
checkpoint directories: one entry per task, a later evaluation of the same task replacing the
earlier one. ``summarize_lm_eval`` turns that file into table rows for the report and the app.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from gpt2.errors import GPT2Error
from gpt2.store.files import atomic_write_text, read_json_object
from gpt2.store.rundir import RunDir

INSTALL_HINT = "pip install 'gpt2-from-scratch[eval]'"

# The zero-shot tasks of GPT-2's paper table (and of every small-model leaderboard since), by lm-eval name.
PRESETS: dict[str, tuple[str, ...]] = {
    "gpt2-paper": ("lambada_openai", "hellaswag", "piqa", "arc_easy", "arc_challenge", "winogrande", "wikitext"),
}

# OpenAI GPT-2 124M (hub name "gpt2") through lm-eval's own `hf` backend, zero-shot; sources in
# docs/evaluation.md. A metric missing here has no number we could trace to a citable run ("—").
GPT2_124M_PUBLISHED: dict[tuple[str, str], float] = {
    ("lambada_openai", "acc"): 0.3256,  # lm-evaluation-harness issue #2159
    ("lambada_openai", "perplexity"): 40.0554,  # same run
    ("hellaswag", "acc"): 0.2892,
    ("hellaswag", "acc_norm"): 0.3114,
}
# CORE of OpenAI's GPT-2 checkpoints, as measured by nanochat (gpt2 eval core prints these beside ours)
GPT2_CORE = {"124M": 0.1139, "355M": 0.1849, "774M": 0.2146, "1558M": 0.2565}


def require_lm_eval() -> None:
    """Raise one clear GPT2Error when lm-evaluation-harness is not installed."""
    try:
        import lm_eval  # noqa: F401
    except ImportError:
        raise GPT2Error(f"gpt2 eval lm-eval needs lm-evaluation-harness: {INSTALL_HINT}") from None


def expand_tasks(spec: str) -> list[str]:
    """Task names from ``--tasks``: comma-separated lm-eval names and/or presets (e.g. ``gpt2-paper``)."""
    names: list[str] = []
    for part in (p.strip() for p in spec.split(",")):
        if not part:
            continue
        for name in PRESETS.get(part, (part,)):
            if name not in names:
                names.append(name)
    if not names:
        raise GPT2Error("--tasks: give at least one task name (e.g. hellaswag or gpt2-paper)")
    return names


def results_path(model_spec: str, kind: str = "lm_eval") -> Path | None:
    """Where results ``kind`` ("lm_eval", "core") of ``model_spec`` are kept: inside it when it is one of our
    run/checkpoint directories."""
    from gpt2.store.checkpoint import is_checkpoint_dir

    ours = RunDir(model_spec)
    if is_checkpoint_dir(ours.root) or ours.latest.is_file():
        return getattr(ours, kind)
    return None  # a Hugging Face directory or hub name: not ours to write into


# ----------------------------------------------------------------------------- results -> rows


def metric_rows(results: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per (task, metric) of lm-eval's ``results`` dict: task, metric, value, stderr, gpt2_124m.

    lm-eval keys metrics as ``"acc,none"`` (metric, filter); the ``none`` filter is dropped from the name.
    """
    rows = []
    for task, metrics in results.items():
        for key, value in metrics.items():
            if "," not in key or "_stderr," in key or not isinstance(value, (int, float)):
                continue
            metric, filt = key.split(",", 1)
            stderr = metrics.get(f"{metric}_stderr,{filt}")
            rows.append(
                {
                    "task": task,
                    "metric": metric if filt == "none" else f"{metric} ({filt})",
                    "value": float(value),
                    "stderr": float(stderr) if isinstance(stderr, (int, float)) else None,
                    "gpt2_124m": GPT2_124M_PUBLISHED.get((task, metric)),
                }
            )
    return rows


def format_number(value: float | None) -> str:
    """A metric for a table: 4 decimals (2 from 100 up, e.g. perplexities); None/NaN -> "—"."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    return f"{value:.4f}" if abs(value) < 100 else f"{value:.2f}"


def format_table(rows: Sequence[dict[str, Any]]) -> str:
    """The rows as an aligned text table, GPT-2 124M's published number next to each metric."""
    header = ("task", "metric", "value", "± stderr", "GPT-2 124M")
    body = [
        (
            r["task"],
            r["metric"],
            format_number(r["value"]),
            format_number(r.get("stderr")),
            format_number(r.get("gpt2_124m")),
        )
        for r in rows
    ]
    widths = [max(len(str(line[i])) for line in [header, *body]) for i in range(len(header))]
    lines = ["  ".join(str(cell).ljust(w) for cell, w in zip(line, widths, strict=True)) for line in [header, *body]]
    return "\n".join(lines)


def save_results(path: Path, model: str, evaluation: dict[str, Any], settings: dict[str, Any]) -> None:
    """Merge this evaluation's tasks into ``path`` (a task evaluated again replaces its old entry)."""
    stored = read_json_object(path, "lm-eval results") if path.is_file() else {}
    tasks = stored.get("tasks")
    if not isinstance(tasks, dict):
        tasks = {}
    when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    for task, metrics in evaluation.get("results", {}).items():
        tasks[task] = {
            "metrics": {k: v for k, v in metrics.items() if isinstance(v, (int, float))},
            "n_shot": evaluation.get("n-shot", {}).get(task),
            "n_samples": evaluation.get("n-samples", {}).get(task),
            "evaluated_at": when,
            **settings,
        }
    atomic_write_text(path, json.dumps({"model": model, "tasks": tasks}, indent=2, sort_keys=True) + "\n")


def summarize_lm_eval(path: str | Path) -> list[dict[str, Any]]:
    """Rows (task, metric, value, stderr, gpt2_124m, n_shot, limit) of a saved ``lm_eval.json``.

    ``path`` is the file or a run/checkpoint directory holding it; no file -> ``[]``.
    """
    path = RunDir(path).lm_eval if Path(path).is_dir() else Path(path)
    if not path.is_file():
        return []
    tasks = read_json_object(path, "lm-eval results").get("tasks")
    if not isinstance(tasks, dict):
        raise GPT2Error(f"corrupt lm-eval results {path}: no 'tasks' object")
    rows = []
    for task, entry in sorted(tasks.items()):
        for row in metric_rows({task: entry.get("metrics", {})}):
            rows.append({**row, "n_shot": entry.get("n_shot"), "limit": entry.get("limit")})
    return rows


def read_core(path: str | Path) -> dict[str, Any] | None:
    """A saved ``core.json`` (``gpt2 eval core --model RUN_OR_CHECKPOINT``): the file, or a run/checkpoint
    directory holding it; None when there is none."""
    path = RunDir(path).core if Path(path).is_dir() else Path(path)
    if not path.is_file():
        return None
    result = read_json_object(path, "CORE results")
    if type(result.get("core")) not in (int, float) or not isinstance(result.get("tasks"), dict):
        raise GPT2Error(f"corrupt CORE results {path}: no 'core' number or 'tasks' object")
    return result


# ----------------------------------------------------------------------------- running


def _task_manager(include_path: str | None, tasks: Sequence[str]):
    """lm-eval's TaskManager over its built-in tasks plus ``include_path``; unknown names are an error."""
    from lm_eval.tasks import TaskManager

    if include_path is not None and not Path(include_path).is_dir():
        raise GPT2Error(f"--include-path {include_path}: not a directory")
    manager = TaskManager(include_path=include_path)
    known = set(manager.all_tasks)
    unknown = [t for t in tasks if t not in known]
    if unknown:
        where = f" (nor in --include-path {include_path})" if include_path else ""
        raise GPT2Error(
            f"unknown lm-eval task(s): {', '.join(unknown)}{where}; "
            "a task YAML that fails to parse is skipped by lm-eval, so check its syntax too"
        )
    return manager


def run_lm_eval(
    model: Any,
    tasks: Sequence[str],
    *,
    include_path: str | None = None,
    limit: int | None = None,
    num_fewshot: int | None = None,
    batch_size: int = 64,
    device: Any = None,
    dtype: Any = None,
    log_samples: bool = False,
) -> dict[str, Any] | None:
    """Evaluate a loaded model (``GPT``) on lm-eval ``tasks``; lm-eval's result dict (None on ranks > 0)."""
    require_lm_eval()
    import lm_eval
    from datasets.exceptions import DatasetGenerationError

    from gpt2.evaluate.harness import GPT2ScratchLM

    manager = _task_manager(include_path, tasks)
    lm = GPT2ScratchLM(model=model, batch_size=batch_size, device=device, dtype=dtype)
    # datasets logs a parser's traceback at ERROR before raising; we report that error as one line below
    datasets_log = logging.getLogger("datasets")
    level = datasets_log.level
    datasets_log.setLevel(logging.CRITICAL)
    try:
        return lm_eval.simple_evaluate(
            model=lm,
            tasks=list(tasks),
            num_fewshot=num_fewshot,
            limit=limit,
            task_manager=manager,
            log_samples=log_samples,
            bootstrap_iters=1000,
        )
    except GPT2Error:
        raise
    except OSError as exc:  # datasets' ConnectionError / DatasetNotFoundError: the hub is out of reach
        raise GPT2Error(
            f"lm-eval could not load the data of {', '.join(tasks)}: {exc} "
            "(hub tasks download their dataset once; offline, use local tasks with --include-path)"
        ) from None
    except DatasetGenerationError as exc:  # a malformed data file: its parser's error is the cause
        raise GPT2Error(f"lm-eval could not load the data of {', '.join(tasks)}: {exc.__cause__ or exc}") from None
    except StopIteration:  # datasets' JSON reader, given an empty file, finds no first batch
        raise GPT2Error(f"lm-eval could not load the data of {', '.join(tasks)}: a data file is empty") from None
    except (ValueError, KeyError, TypeError) as exc:  # lm-eval's errors for bad task configs / documents
        raise GPT2Error(f"lm-eval could not run {', '.join(tasks)}: {exc}") from None
    finally:
        datasets_log.setLevel(level)
