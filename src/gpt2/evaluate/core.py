"""CORE: the DCLM paper's 22 in-context-learning tasks (arXiv 2406.11794), scored exactly as nanochat scores them.

Data: nanochat's ``eval_bundle.zip`` (downloaded once into the user cache, its SHA-256 recorded beside it) or a
directory in its layout: ``core.yaml`` (the tasks), ``eval_meta_data.csv`` (their random baselines, percent) and
``eval_data/<dataset_uri>`` (JSON lines). Each task's examples are shuffled with ``random.Random(1337)`` and cut to
``--max-per-task``; example ``i`` gets ``k`` few-shot examples ``random.Random(1234 + i).sample`` of the others.
``multiple_choice`` / ``schema`` examples are right when the option with the lowest mean loss per scored token is
``gold`` (scored: the tokens after the options' common prefix / the options' common suffix); ``language_modeling``
ones when greedy decoding reproduces the continuation. Per task, centered accuracy = (acc - baseline) /
(1 - baseline); CORE is their mean. docs/evaluation.md lists where the numbers can differ from nanochat's;
tests/test_evaluate_core.py pins that they do not on a local bundle of every task type.
"""

from __future__ import annotations

import csv
import functools
import hashlib
import math
import os
import random
import shutil
import time
import urllib.error
import urllib.request
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from gpt2.errors import GPT2Error
from gpt2.evaluate.harness_tasks import GPT2_CORE
from gpt2.evaluate.hellaswag import default_cache_dir
from gpt2.evaluate.scoring import EncodedRequest, score_requests
from gpt2.runtime.device import model_device
from gpt2.runtime.distributed import all_reduce_sum, rank_and_world_size
from gpt2.runtime.parallel import unwrap_model
from gpt2.store.files import atomic_directory, atomic_output, atomic_write_text, parse_json_line
from gpt2.tokenizer import get_tokenizer

EVAL_BUNDLE_URL = "https://karpathy-public.s3.us-west-2.amazonaws.com/eval_bundle.zip"
BUNDLE_ENV = "GPT2_CORE_BUNDLE"
TASK_TYPES = ("multiple_choice", "schema", "language_modeling")
SHUFFLE_SEED, FEWSHOT_SEED = 1337, 1234  # nanochat's scripts/base_eval.py and core_eval.py
CHUNK = 256  # examples tokenized and scored together (bounds the memory of the token lists)
# The 22 tasks of CORE (DCLM's "low variance" set), in core.yaml's order: a bundle without one of them is named short.
CORE_TASKS = (
    "hellaswag_zeroshot", "jeopardy", "bigbench_qa_wikidata", "arc_easy", "arc_challenge", "copa", "commonsense_qa",
    "piqa", "openbook_qa", "lambada_openai", "hellaswag", "winograd", "winogrande", "bigbench_dyck_languages",
    "agi_eval_lsat_ar", "bigbench_cs_algorithms", "bigbench_operators", "bigbench_repeat_copy_logic", "squad", "coqa",
    "boolq", "bigbench_language_identification",
)  # fmt: skip
# OpenAI's GPT-2 checkpoints as measured by nanochat (dev/estimate_gpt3_core.ipynb, all 22 tasks).
# The string field and then the options (a list; language modelling: a second string) of each task type's examples
_FIELDS = {
    "multiple_choice": ("query", "choices"),
    "schema": ("continuation", "context_options"),
    "language_modeling": ("context", "continuation"),
}


@dataclass(frozen=True)
class CoreTask:
    """One task of the bundle: its settings and examples (shuffled, cut to max_per_task)."""

    label: str
    task_type: str
    num_fewshot: int
    delimiter: str
    random_baseline: float  # percent, as eval_meta_data.csv gives it
    examples: tuple[dict, ...]
    source: str

    def centered(self, accuracy: float) -> float:
        baseline = 0.01 * self.random_baseline
        return (accuracy - baseline) / (1.0 - baseline)


# ----------------------------------------------------------------------------- the bundle


def download_bundle(cache_dir: str | Path | None = None, url: str = EVAL_BUNDLE_URL) -> Path:
    """nanochat's eval bundle, downloaded and unpacked into ``cache_dir`` (default: the user cache) on first use;
    the zip's SHA-256 goes to ``eval_bundle.zip.sha256`` beside it and into every core.json made from it."""
    root = (Path(cache_dir) if cache_dir is not None else default_cache_dir()) / "core"
    bundle = root / "unpacked" / "eval_bundle"
    if (bundle / "core.yaml").is_file():
        return bundle
    archive = root / "eval_bundle.zip"
    try:
        with atomic_output(archive) as tmp, open(tmp, "wb") as out, urllib.request.urlopen(url, timeout=60) as resp:
            shutil.copyfileobj(resp, out)
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise GPT2Error(
            f"could not download the CORE eval bundle from {url} ({exc}); "
            f"pass a local copy: gpt2 eval core --bundle DIR or ${BUNDLE_ENV}=DIR"
        ) from None
    digest = hashlib.sha256(archive.read_bytes()).hexdigest()
    atomic_write_text(root / "eval_bundle.zip.sha256", f"{digest}  eval_bundle.zip\n")
    try:
        with atomic_directory(root / "unpacked") as tmp, zipfile.ZipFile(archive) as zf:
            zf.extractall(tmp)
    except zipfile.BadZipFile:
        raise GPT2Error(f"{archive}: not a zip file (sha256 {digest}); delete it and retry") from None
    if not (bundle / "core.yaml").is_file():
        raise GPT2Error(f"{archive} (sha256 {digest}) holds no eval_bundle/core.yaml")
    return bundle


def bundle_sha256(bundle: Path) -> str | None:
    """The recorded SHA-256 of the zip a downloaded bundle came from; None for a local directory."""
    record = bundle.parent.parent / "eval_bundle.zip.sha256"
    return record.read_text().split()[0] if record.is_file() else None


def _check_example(row: Any, task_type: str, where: str) -> dict:
    if not isinstance(row, dict):
        raise GPT2Error(f"{where}: expected a JSON object, got {type(row).__name__}")
    text, options = _FIELDS[task_type]
    if not isinstance(row.get(text), str):
        raise GPT2Error(f"{where}: field {text!r} must be a string")
    if task_type == "language_modeling":
        if not isinstance(row.get(options), str):
            raise GPT2Error(f"{where}: field {options!r} must be a string")
        return row
    values = row.get(options)
    if not (isinstance(values, list) and len(values) >= 2 and all(isinstance(o, str) for o in values)):
        raise GPT2Error(f"{where}: field {options!r} must be a list of at least 2 strings")
    gold = row.get("gold")
    if not (isinstance(gold, int) and not isinstance(gold, bool) and 0 <= gold < len(values)):
        raise GPT2Error(f"{where}: field 'gold' must be an index into {options!r}, got {gold!r}")
    return row


def _read_examples(path: Path, task_type: str) -> list[dict]:
    if not path.is_file():
        raise GPT2Error(f"CORE task data not found: {path}")
    rows = []
    with open(path, encoding="utf-8") as f:
        for line_no, line in enumerate(f, start=1):  # nanochat too reads every line, a blank one is an error
            row = parse_json_line(line, f"{path}:{line_no}")
            rows.append(_check_example(row, task_type, f"{path}:{line_no}"))
    return rows


@functools.lru_cache(maxsize=4)  # in-loop CORE reads the bundle once per run, not at every evaluation
def load_bundle(directory: str | Path, max_per_task: int | None = None) -> tuple[CoreTask, ...]:
    """The tasks of ``directory``'s core.yaml, in its order; every file and row is checked here."""
    import yaml

    directory = Path(directory)
    for name in ("core.yaml", "eval_meta_data.csv", "eval_data"):
        if not (directory / name).exists():
            raise GPT2Error(f"CORE eval bundle {directory}: {name} is missing")
    try:
        config = yaml.safe_load((directory / "core.yaml").read_text(encoding="utf-8"))
        with open(directory / "eval_meta_data.csv", encoding="utf-8", newline="") as f:
            baselines = {row["Eval Task"]: float(row["Random baseline"]) for row in csv.DictReader(f)}
    except (yaml.YAMLError, KeyError, TypeError, ValueError, UnicodeDecodeError) as exc:
        raise GPT2Error(f"CORE eval bundle {directory}: unreadable core.yaml or eval_meta_data.csv ({exc})") from None
    entries = config.get("icl_tasks") if isinstance(config, dict) else None
    if not isinstance(entries, list) or not entries:
        raise GPT2Error(f"{directory / 'core.yaml'}: no 'icl_tasks' list")
    tasks = []
    for entry in entries:
        entry = entry if isinstance(entry, dict) else {}
        label, task_type, shots = entry.get("label"), entry.get("icl_task_type"), entry.get("num_fewshot")
        where = f"{directory / 'core.yaml'} task {label!r}"
        if task_type not in TASK_TYPES:
            raise GPT2Error(f"{where}: unknown icl_task_type {task_type!r} (expected one of {', '.join(TASK_TYPES)})")
        shots = shots[0] if isinstance(shots, list) and len(shots) == 1 else shots  # core.yaml writes [k]
        delimiter = entry.get("continuation_delimiter", " ")
        if not all(isinstance(v, str) for v in (label, entry.get("dataset_uri"), delimiter)):
            raise GPT2Error(f"{where}: needs a string 'label' and 'dataset_uri' (and 'continuation_delimiter')")
        if not isinstance(shots, int) or shots < 0:
            raise GPT2Error(f"{where}: num_fewshot must be [k] with k >= 0, got {entry.get('num_fewshot')!r}")
        if label not in baselines:
            raise GPT2Error(f"{directory / 'eval_meta_data.csv'}: no 'Random baseline' for task {label!r}")
        path = directory / "eval_data" / entry["dataset_uri"]
        try:
            examples = _read_examples(path, task_type)
        except UnicodeDecodeError:
            raise GPT2Error(f"{path}: not UTF-8 text") from None
        random.Random(SHUFFLE_SEED).shuffle(examples)  # the same subset for every --max-per-task run
        examples = examples[:max_per_task] if max_per_task else examples
        if len(examples) <= shots:
            raise GPT2Error(
                f"{path}: task {label} needs more than {shots} examples ({shots}-shot), has {len(examples)}"
            )
        tasks.append(CoreTask(label, task_type, shots, delimiter, baselines[label], tuple(examples), str(path)))
    return tuple(tasks)


# ----------------------------------------------------------------------------- prompts and tokens


def render_prompts(task: CoreTask, index: int) -> list[str]:
    """The prompts of example ``index``: one per choice / context option, or (without, with) the continuation."""
    examples, item, d = task.examples, task.examples[index], task.delimiter
    # nanochat samples from the list of the other indices; sampling range(n - 1) and skipping `index` draws the same
    rng = random.Random(FEWSHOT_SEED + index)
    shots = [examples[j + (j >= index)] for j in rng.sample(range(len(examples) - 1), task.num_fewshot)]
    if task.task_type == "multiple_choice":
        head = "".join(f"{s['query']}{d}{s['choices'][s['gold']]}\n\n" for s in shots)
        return [f"{head}{item['query']}{d}{choice}" for choice in item["choices"]]
    if task.task_type == "schema":
        head = "".join(f"{s['context_options'][s['gold']]}{d}{s['continuation']}\n\n" for s in shots)
        return [f"{head}{option}{d}{item['continuation']}" for option in item["context_options"]]
    head = "".join(f"{s['context'].strip()}{d}{s['continuation']}\n\n" for s in shots)
    prompt = f"{head}{item['context'].strip()}{d}"
    return [prompt.strip(), prompt + item["continuation"]]  # stripped, so its last token is not merged away


def _common_length(rows: Sequence[Sequence[int]]) -> int:
    """Length of the longest common prefix of ``rows``."""
    n = min(len(r) for r in rows)
    return next((i for i in range(n) if any(r[i] != rows[0][i] for r in rows)), n)


def example_requests(task: CoreTask, index: int, ids: list[list[int]], block_size: int) -> list[EncodedRequest]:
    """(context, scored tokens) rows of one example from its prompts' tokens ``ids`` (BOS already in front)."""
    where = f"{task.source}: example {index} (after the shuffle)"
    if task.task_type == "multiple_choice":
        starts = [_common_length(ids)] * len(ids)
    elif task.task_type == "schema":
        suffix = _common_length([row[::-1] for row in ids])
        starts = [len(row) - suffix for row in ids]
    else:
        without, ids = ids[0], ids[1:]
        if len(without) >= len(ids[0]) or ids[0][: len(without)] != without:
            raise GPT2Error(f"{where}: the prompt without the continuation does not tokenize as a prefix of it")
        starts = [len(without)]
    requests = []
    for row, start in zip(ids, starts, strict=True):
        crop = max(0, len(row) - block_size)  # keep the last block_size tokens
        if start - crop < 1:
            raise GPT2Error(f"{where}: the answer does not fit the model's context window ({block_size})")
        requests.append(EncodedRequest(row[crop:start], row[start:]))
    return requests


# ----------------------------------------------------------------------------- scoring


def predict(
    model: nn.Module,
    task: CoreTask,
    indices: Sequence[int],
    *,
    batch_rows: int = 64,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
    pad_to_rows: int = 0,
) -> list[int]:
    """The model's answer to each example of ``indices``: the chosen option, or 1/0 (greedy continuation right/wrong).

    Rows are padded to ``pad_to_rows`` with a 2-token dummy so every rank runs the same forward passes.
    """
    tokenizer, block_size = get_tokenizer(), unwrap_model(model).config.block_size
    prompts = [render_prompts(task, i) for i in indices]
    flat_ids = tokenizer.encode_batch([p for ps in prompts for p in ps])
    per_example, at = [], 0
    for i, ps in zip(indices, prompts, strict=True):
        ids = [[tokenizer.eot_id, *row] for row in flat_ids[at : at + len(ps)]]
        per_example.append(example_requests(task, i, ids, block_size))
        at += len(ps)
    # An option with no token of its own (a token-prefix of another choice) is not scored: its mean is NaN
    scored = [r for reqs in per_example for r in reqs if r.continuation]
    dummy = EncodedRequest([tokenizer.eot_id], [tokenizer.eot_id])
    padding = [dummy] * (pad_to_rows - len(scored))
    scores = iter(score_requests(model, scored + padding, batch_rows=batch_rows, device=device, dtype=dtype))
    answers = []
    for reqs in per_example:
        results = [next(scores) if r.continuation else None for r in reqs]
        if task.task_type == "language_modeling":
            assert results[0] is not None  # its one request has a continuation
            answers.append(int(results[0].is_greedy))
        else:  # nanochat's argmin: list.index(min(...)), whose NaN behaviour we keep
            means = [-s.logprob / s.num_tokens if s else math.nan for s in results]
            answers.append(means.index(min(means)))
    return answers


def evaluate_task(model: nn.Module, task: CoreTask, **kwargs: Any) -> float:
    """Accuracy of ``model`` on ``task`` (``kwargs``: :func:`predict`'s batch_rows, device, dtype).

    Under torch.distributed rank r scores examples r, r + world, ...: in chunks padded to the same rows on
    every rank (an option count is known without tokenizing), so all ranks run the same forward passes.
    """
    rank, world = rank_and_world_size()
    options = {"multiple_choice": "choices", "schema": "context_options"}.get(task.task_type)
    rows = [len(item[options]) if options else 1 for item in task.examples]
    mine, correct = list(range(rank, len(rows), world)), 0
    for start in range(0, -(-len(rows) // world), CHUNK):
        chunk = mine[start : start + CHUNK]
        most = max(sum(rows[i] for i in range(r, len(rows), world)[start : start + CHUNK]) for r in range(world))
        for i, answer in zip(chunk, predict(model, task, chunk, pad_to_rows=most, **kwargs), strict=True):
            correct += answer == (1 if options is None else task.examples[i]["gold"])
    device = model_device(unwrap_model(model), kwargs.get("device"))
    total_correct, n = all_reduce_sum([correct, len(mine)], device)
    return total_correct / n


def evaluate_core(model: nn.Module, tasks: Sequence[CoreTask], progress: Any = None, **kwargs: Any) -> dict[str, Any]:
    """``{"core", "tasks": {label: {accuracy, centered, n, ...}}, "missing", "reference"}`` of ``model``.

    CORE is the mean centered accuracy over the tasks given (nanochat's definition); ``missing`` names
    the CORE tasks the bundle lacks, so a partial score is never mistaken for the real one.
    ``progress(label, row)`` is called after each task (the CLI prints it on rank 0).
    """
    rows: dict[str, dict[str, Any]] = {}
    for task in tasks:
        t0 = time.perf_counter()
        accuracy = evaluate_task(model, task, **kwargs)
        rows[task.label] = dict(
            accuracy=accuracy, centered=task.centered(accuracy), n=len(task.examples), task_type=task.task_type,
            num_fewshot=task.num_fewshot, random_baseline=task.random_baseline, wall_s=time.perf_counter() - t0,
        )  # fmt: skip
        if progress is not None:
            progress(task.label, rows[task.label])
    core = sum(r["centered"] for r in rows.values()) / len(rows)
    missing = [label for label in CORE_TASKS if label not in rows]
    return {"core": core, "tasks": rows, "missing": missing, "reference": GPT2_CORE}


def resolve_bundle(bundle: str | Path | None) -> Path:
    """``--bundle`` if given, else ``$GPT2_CORE_BUNDLE``, else the downloaded bundle in the user cache."""
    chosen = bundle or os.environ.get(BUNDLE_ENV)
    if not chosen:
        return download_bundle()
    path = Path(chosen).expanduser()
    if not path.is_dir():
        origin = "--bundle" if bundle else f"${BUNDLE_ENV}"
        raise GPT2Error(f"{origin} {chosen}: not a directory (expected core.yaml, eval_meta_data.csv, eval_data/)")
    return path


def format_table(result: dict[str, Any]) -> str:
    """The per-task table, CORE and the GPT-2 family's CORE beside it."""
    lines = [f"{'task':<34} {'shots':>5} {'n':>6} {'accuracy':>9} {'centered':>9}"]
    for label, row in result["tasks"].items():
        n, acc, cen = row["n"], row["accuracy"], row["centered"]
        lines.append(f"{label:<34} {row['num_fewshot']:>5} {n:>6} {acc:>9.4f} {cen:>9.4f}")
    count = len(result["tasks"])
    lines.append(f"{'CORE':<34} {'':>5} {'':>6} {'':>9} {result['core']:>9.4f}   (mean of {count} tasks)")
    if result["missing"]:
        lines.append(f"missing CORE tasks ({len(result['missing'])}): {', '.join(result['missing'])}")
    lines.append("GPT-2 (OpenAI weights, nanochat): " + ", ".join(f"{k} {v:.4f}" for k, v in GPT2_CORE.items()))
    return "\n".join(lines)
