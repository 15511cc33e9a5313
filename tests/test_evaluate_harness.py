"""``gpt2 eval lm-eval``: our lm-evaluation-harness backend equals lm-eval's own ``hf`` backend.

Offline: the tasks are local YAML + JSONL files made here (a HellaSwag-style multiple-choice task, a
lambada-style last-word task, a perplexity task scored with ``loglikelihood_rolling`` and a
``generate_until`` task), run once through ``gpt2 eval lm-eval --include-path`` on a tiny random
model and once through lm-eval's ``hf`` backend on the same weights exported with ``gpt2 export``.
The model's window is 64 tokens, so rolling windows, left truncation and generation truncation all happen.
"""

from __future__ import annotations

import json
import math
import os
import random
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("lm_eval", reason="lm-evaluation-harness is not installed (pip install '.[eval]')")

import gpt2  # noqa: E402
from evaluate_helpers import SHARED_HELLASWAG, tiny_model, write_jsonl  # noqa: E402
from gpt2.cli import main  # noqa: E402
from gpt2.evaluate.harness_tasks import summarize_lm_eval  # noqa: E402

TASKS = ["local_mc", "local_lambada", "local_rolling", "local_gen"]
BLOCK_SIZE = 64
WORDS = [
    "the",
    "a",
    "cat",
    "dog",
    "sat",
    "ran",
    "on",
    "under",
    "mat",
    "tree",
    "house",
    "river",
    "blue",
    "green",
    "quickly",
    "slowly",
    "and",
    "then",
]


def _text(rng: random.Random, n_words: int, end: str = ".") -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n_words)).capitalize() + end


def _mc_docs(rng: random.Random) -> list[dict]:
    """The first 20 items of the shared HellaSwag file (preprocessed like lm-eval), else synthetic ones."""
    if SHARED_HELLASWAG.is_file():
        from gpt2.evaluate.hellaswag import load_hellaswag

        items = load_hellaswag(SHARED_HELLASWAG, limit=20)
        return [{"ctx": it.ctx, "endings": list(it.endings), "label": it.label} for it in items]
    return [
        {"ctx": _text(rng, 12), "endings": [_text(rng, rng.randint(2, 8)) for _ in range(4)], "label": rng.randrange(4)}
        for _ in range(20)
    ]


TASK_YAML = {
    "local_mc": """
task: local_mc
dataset_path: json
dataset_kwargs: {{data_files: {{test: {dir}/mc.jsonl}}}}
test_split: test
output_type: multiple_choice
doc_to_text: "{{{{ctx}}}}"
doc_to_choice: "{{{{endings}}}}"
doc_to_target: "{{{{label}}}}"
metric_list: [{{metric: acc, aggregation: mean, higher_is_better: true}},
              {{metric: acc_norm, aggregation: mean, higher_is_better: true}}]
""",
    "local_lambada": """
task: local_lambada
dataset_path: json
dataset_kwargs: {{data_files: {{test: {dir}/docs.jsonl}}}}
test_split: test
output_type: loglikelihood
doc_to_text: "{{{{text.split(' ')[:-1]|join(' ')}}}}"
doc_to_target: "{{{{' '+text.split(' ')[-1]}}}}"
metric_list: [{{metric: perplexity, aggregation: perplexity, higher_is_better: false}},
              {{metric: acc, aggregation: mean, higher_is_better: true}}]
""",
    "local_rolling": """
task: local_rolling
dataset_path: json
dataset_kwargs: {{data_files: {{test: {dir}/docs.jsonl}}}}
test_split: test
output_type: loglikelihood_rolling
doc_to_text: ""
doc_to_target: "{{{{text}}}}"
metric_list: [{{metric: word_perplexity}}, {{metric: byte_perplexity}}, {{metric: bits_per_byte}}]
""",
    "local_gen": """
task: local_gen
dataset_path: json
dataset_kwargs: {{data_files: {{test: {dir}/gen.jsonl}}}}
test_split: test
output_type: generate_until
doc_to_text: "{{{{prompt}}}}"
doc_to_target: "{{{{answer}}}}"
generation_kwargs: {{until: ["\\n", "295", " Zeit Zeit"], max_gen_toks: 12, do_sample: false}}
metric_list: [{{metric: exact_match, aggregation: mean, higher_is_better: true}}]
""",
}


# One tiny model, but ~6 lm-eval runs, and each unknown-task check indexes lm-eval's built-in task configs.
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def setup(tmp_path_factory, one_torch_thread):
    """One tiny model (ours + its HF export), the local tasks, and both backends' results on them."""
    root = tmp_path_factory.mktemp("harness")
    ckpt, hf_dir, task_dir = root / "ckpt", root / "hf", root / "tasks"
    gpt2.save_model(ckpt, tiny_model(seed=3, block_size=BLOCK_SIZE))
    assert main(["export", str(ckpt), "--format", "hf", "--out", str(hf_dir)]) == 0
    rng = random.Random(0)
    task_dir.mkdir()
    write_jsonl(task_dir / "mc.jsonl", _mc_docs(rng))
    # Documents of 5 to ~150 tokens: the long ones need several 64-token windows.
    # The repetitive ones end in the word this random model predicts greedily (lambada acc > 0).
    docs = [_text(rng, n) for n in (5, 20, 60, 90, 140)] + ["Then slowly slowly slowly", "The tree tree tree tree"]
    write_jsonl(task_dir / "docs.jsonl", [{"text": d} for d in docs])
    prompts = [_text(rng, n, end="") for n in (3, 10, 30, 80)]  # the last is cut to 64 - 12 tokens
    write_jsonl(task_dir / "gen.jsonl", [{"prompt": p, "answer": "the"} for p in prompts])
    for name, text in TASK_YAML.items():
        (task_dir / f"{name}.yaml").write_text(text.format(dir=task_dir))

    out = root / "ours.json"
    args = ["eval", "lm-eval", "--model", str(ckpt), "--tasks", ",".join(TASKS), "--include-path", str(task_dir)]
    assert main([*args, "--device", "cpu", "--batch-size", "16", "--out", str(out)]) == 0
    ours = json.loads(out.read_text())

    import lm_eval
    from lm_eval.tasks import TaskManager

    reference = lm_eval.simple_evaluate(
        model="hf",
        model_args=f"pretrained={hf_dir}",
        tasks=TASKS,
        task_manager=TaskManager(include_path=str(task_dir)),
        device="cpu",
        batch_size=1,  # one row per forward: no padding on the reference side at all
        log_samples=True,
        bootstrap_iters=1000,
    )
    return {"ckpt": ckpt, "tasks": task_dir, "ours": ours, "reference": reference}


def _responses(evaluation: dict, task: str) -> list:
    samples = sorted(evaluation["samples"][task], key=lambda s: s["doc_id"])
    return [resp for s in samples for resp in s["filtered_resps"]]


def test_every_metric_equals_lm_eval_hf_backend(setup):
    ours, reference = setup["ours"]["results"], setup["reference"]["results"]
    for task in TASKS:
        expected = {k: v for k, v in reference[task].items() if isinstance(v, float) and "_stderr" not in k}
        assert expected, f"{task}: lm-eval reported no metrics"
        for key, value in expected.items():
            assert math.isclose(ours[task][key], value, rel_tol=1e-4, abs_tol=1e-6), (task, key, ours[task][key], value)


def test_the_local_tasks_exercise_every_branch(setup):
    results = setup["ours"]["results"]
    assert 0 < results["local_lambada"]["acc,none"] < 1  # is_greedy both True and False
    assert results["local_mc"]["sample_len"] == 20


def test_per_request_loglikelihoods_within_1e_4(setup):
    worst = 0.0
    for task in ("local_mc", "local_lambada", "local_rolling"):
        mine, theirs = _responses(setup["ours"], task), _responses(setup["reference"], task)
        assert len(mine) == len(theirs) > 0
        for a, b in zip(mine, theirs, strict=True):
            a_ll, b_ll = (a[0], b[0]) if isinstance(a, list) else (a, b)
            assert abs(a_ll - b_ll) < 1e-4, (task, a, b)
            worst = max(worst, abs(a_ll - b_ll))
            if isinstance(a, list):
                assert a[1] == b[1], (task, "is_greedy", a, b)
    print(f"max |log-likelihood difference| vs lm-eval hf: {worst:.2e}")


def test_generations_equal_lm_eval_hf_backend(setup):
    mine, theirs = _responses(setup["ours"], "local_gen"), _responses(setup["reference"], "local_gen")
    assert mine == theirs
    assert any(mine), "every generation was empty: the test would not see a difference"


def test_gpt2_eval_hellaswag_equals_lm_eval_on_the_same_items(setup, capsys):
    """The fast path (no lm-eval) gives lm-eval's acc / acc_norm on the same multiple-choice items."""
    capsys.readouterr()
    data = setup["tasks"] / "mc.jsonl"
    assert main(["eval", "hellaswag", "--model", str(setup["ckpt"]), "--data", str(data), "--json"]) == 0
    fast = json.loads(capsys.readouterr().out)
    reference = setup["reference"]["results"]["local_mc"]
    assert fast["n"] == 20
    assert math.isclose(fast["acc"], reference["acc,none"]) and math.isclose(
        fast["acc_norm"], reference["acc_norm,none"]
    )


def test_results_saved_next_to_the_model_and_summarized(setup):
    rows = summarize_lm_eval(setup["ckpt"])
    by_key = {(r["task"], r["metric"]): r for r in rows}
    assert set(TASKS) == {r["task"] for r in rows}
    assert by_key[("local_mc", "acc_norm")]["value"] == setup["ours"]["results"]["local_mc"]["acc_norm,none"]
    assert summarize_lm_eval(setup["tasks"]) == []  # a directory without results


def test_gpt2_paper_preset_on_local_stand_ins(setup, capsys, tmp_path):
    """The preset's 7 hub task names, each served by a local stand-in YAML (``--include-path`` wins)."""
    stand_ins = {"lambada_openai": "local_lambada", "wikitext": "local_rolling"}
    for name in ("lambada_openai", "hellaswag", "piqa", "arc_easy", "arc_challenge", "winogrande", "wikitext"):
        template = stand_ins.get(name, "local_mc")
        text = TASK_YAML[template].format(dir=setup["tasks"]).replace(f"task: {template}", f"task: {name}")
        (tmp_path / f"{name}.yaml").write_text(text)
    args = ["--model", str(setup["ckpt"]), "--tasks", "gpt2-paper", "--include-path", str(tmp_path), "--limit", "3"]
    assert main(["eval", "lm-eval", *args, "--device", "cpu"]) == 0
    table = capsys.readouterr().out.splitlines()
    rows = {tuple(line.split()[:2]): line.split() for line in table if line.split()[:1] != ["task"]}
    assert rows[("lambada_openai", "acc")][-1] == "0.3256"  # GPT-2 124M's published number, next to ours
    assert rows[("hellaswag", "acc_norm")][-1] == "0.3114"
    assert rows[("piqa", "acc")][-1] == "—"  # no citable number
    assert ("wikitext", "word_perplexity") in rows and ("winogrande", "acc_norm") in rows


def test_two_ranks_under_torchrun_give_the_same_metrics(setup, tmp_path):
    """torchrun, 2 gloo ranks: lm-eval splits the documents over the ranks, rank 0 gathers and prints."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(gpt2.__file__).parents[1])}
    ckpt = tmp_path / "ckpt"  # a copy: rank 0 writes lm_eval.json next to the model
    shutil.copytree(setup["ckpt"], ckpt)
    launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={port}"]
    args = ["--model", str(ckpt), "--tasks", ",".join(TASKS), "--include-path", str(setup["tasks"])]
    done = subprocess.run(
        [*launcher, "-m", "gpt2", "eval", "lm-eval", *args, "--device", "cpu", "--batch-size", "16", "--json"],
        env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    rows = json.loads(done.stdout.strip().splitlines()[-1])["rows"]
    assert json.loads(done.stdout.strip().splitlines()[-1])["world_size"] == 2
    single = setup["ours"]["results"]
    for row in rows:
        expected = single[row["task"]][row["metric"] + ",none"]
        assert math.isclose(row["value"], expected, rel_tol=1e-6), (row, expected)
    assert {r["task"] for r in rows} == set(TASKS)


def _exit_code(argv: list[str]) -> int:
    """``gpt2 ...``'s exit status: main()'s return value, or argparse's SystemExit code."""
    try:
        return main(argv)
    except SystemExit as exc:
        return int(exc.code or 0)


@pytest.mark.parametrize(
    "extra, message",
    [
        # one run for both (each unknown-name check indexes lm-eval's built-in tasks, ~10 s): a name lm-eval
        # has nowhere, and a task whose YAML does not parse (lm-eval skips the file, so its name is unknown)
        (["--tasks", "no_such_task,broken"], "unknown lm-eval task(s): no_such_task, broken"),
        (["--num-fewshot", "-1"], "--num-fewshot"),
    ],
)
def test_bad_input_is_one_clear_error(setup, capsys, tmp_path, extra, message):
    (tmp_path / "broken.yaml").write_text("task: broken\n  dataset_path: [unclosed\n")
    args = ["eval", "lm-eval", "--model", str(setup["ckpt"]), "--tasks", "local_mc", "--include-path", str(tmp_path)]
    code = _exit_code([*args, *extra])
    err = capsys.readouterr().err.strip().splitlines()
    assert code != 0
    assert message in err[-1] and "Traceback" not in "\n".join(err)


@pytest.mark.parametrize(
    "content, reason", [("{oops\n", "JSON parse error: Missing a name for object member"), ("", "a data file is empty")]
)
def test_a_malformed_or_empty_dataset_is_one_clear_error(setup, capsys, tmp_path, content, reason):
    """Issue 28.16: datasets' DatasetGenerationError / StopIteration were tracebacks."""
    (tmp_path / "local_mc.yaml").write_text(TASK_YAML["local_mc"].format(dir=tmp_path))
    (tmp_path / "mc.jsonl").write_text(content)
    args = ["--model", str(setup["ckpt"]), "--tasks", "local_mc", "--include-path", str(tmp_path), "--device", "cpu"]
    code = _exit_code(["eval", "lm-eval", *args])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and err[-1].startswith(f"error: lm-eval could not load the data of local_mc: {reason}"), err
    assert "Traceback" not in "\n".join(err)


def test_a_path_that_is_not_a_model(setup, capsys, tmp_path):
    args = ["--model", str(tmp_path), "--tasks", "local_mc", "--include-path", str(setup["tasks"])]
    code = _exit_code(["eval", "lm-eval", *args])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(err) == 1 and str(tmp_path) in err[0]
