"""CORE: the same answers as nanochat's core_eval on a local bundle of every task type and few-shot count,
the bundle's format and its checks, and ``gpt2 eval core`` end to end."""

import json
from pathlib import Path

import pytest
import torch

import gpt2
from core_bundle import CORE_YAML, COVERING, source_items, write_bundle
from core_reference import centered, evaluate_example, load_task_data
from evaluate_helpers import hf_tokenizer
from gpt2 import GPT, GPT2Error, GPTConfig
from gpt2.cli import main
from gpt2.config import GPT2_VOCAB_SIZE
from gpt2.evaluate import core
from gpt2.tokenizer import get_tokenizer

N = 13  # examples a task: 10-shot tasks need 11


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)  # a 48-token window: the 10-shot prompts (~500 tokens) are cropped as nanochat crops them
    return GPT(GPTConfig(block_size=48, n_layer=2, n_head=2, n_embd=32)).eval()


def greedy_lm_rows(model, n):
    """lambada-style rows, half of whose continuations are the model's own greedy next word (so some are right)."""
    tokenizer, rows = get_tokenizer(), []
    for k, (ctx, endings, label) in enumerate(source_items(n)):
        ids = [tokenizer.eot_id, *tokenizer.encode(ctx.strip())][-model.config.block_size :]
        with torch.no_grad():
            word = tokenizer.decode([int(model(torch.tensor([ids]))[0][0, -1, :GPT2_VOCAB_SIZE].argmax())])
        own = k % 2 == 0 and word.startswith(" ") and word[1:].strip() == word[1:] != ""
        rows.append({"context": ctx, "continuation": word[1:] if own else endings[label]})
    return rows


@pytest.fixture(scope="module")
def bundle(tmp_path_factory, model):
    directory = tmp_path_factory.mktemp("core") / "eval_bundle"
    return write_bundle(directory, COVERING, n=N, data={"lambada_openai": greedy_lm_rows(model, N)})


class NanochatModel:
    """Our GPT behind the interface nanochat's core_eval calls: logits (B, T, V) and ``max_seq_len``."""

    def __init__(self, gpt):
        self.gpt, self.max_seq_len = gpt, gpt.config.block_size

    def __call__(self, input_ids):
        return self.gpt(input_ids)[0][..., :GPT2_VOCAB_SIZE]  # OpenAI's GPT-2 has 50257 outputs, ours 50304


class NanochatTokenizer:
    """transformers' GPT-2 BPE behind nanochat's tokenizer interface (BOS = <|endoftext|> for GPT-2)."""

    def __init__(self, hf):
        self.hf = hf

    def get_bos_token_id(self):
        return 50256

    def __call__(self, texts, prepend):
        return [[prepend, *self.hf.encode(t, add_special_tokens=False)] for t in texts]


@pytest.mark.slow
def test_answers_and_accuracies_equal_nanochats(model, bundle, tmp_path):
    tokenizer = NanochatTokenizer(hf_tokenizer(tmp_path / "hf"))
    tasks = core.load_bundle(bundle)
    assert [t.label for t in tasks] == list(COVERING)
    types = {(t.task_type, t.num_fewshot, t.delimiter) for t in tasks}
    assert {(ty, k) for ty, k, _ in types} >= {("multiple_choice", 0), ("multiple_choice", 3), ("schema", 0)}
    assert {
        ("multiple_choice", 10, "\nAnswer: "),
        ("language_modeling", 0, " "),
        ("language_modeling", 10, " "),
    } <= types
    cropped, accuracies = 0, {}
    for task in tasks:
        data = load_task_data(task.source)
        assert list(task.examples) == data  # the same shuffle (seed 1337)
        meta = {"task_type": task.task_type, "num_fewshot": task.num_fewshot, "continuation_delimiter": task.delimiter}
        reference = [evaluate_example(i, NanochatModel(model), tokenizer, data, "cpu", meta) for i in range(N)]
        ours = core.predict(model, task, range(N), batch_rows=5)  # batches mix rows of several examples
        assert ours == [answer for _, answer in reference], task.label
        accuracy = accuracies[task.label] = core.evaluate_task(model, task, batch_rows=7)
        assert accuracy == sum(right for right, _ in reference) / N, task.label
        assert task.centered(accuracy) == pytest.approx(centered(accuracy, task.random_baseline), abs=1e-12)
        cropped += sum(len(get_tokenizer().encode(p)) >= 48 for i in range(N) for p in core.render_prompts(task, i))
    assert accuracies["lambada_openai"] > 0  # the greedy rows: the language-modelling path can be right
    assert cropped > N * 5  # the crop to the context window was exercised


def test_common_prefix_and_suffix_are_not_scored():
    # nanochat scores only the tokens after the choices' common prefix (MC) / the common suffix (schema)
    mc = core.CoreTask("t", "multiple_choice", 0, " ", 25, ({"query": "Q", "choices": ["the cat", "the dog"]},), "x")
    ids = [[50256, 48, 262, 3797], [50256, 48, 262, 3290]]
    assert [r.continuation for r in core.example_requests(mc, 0, ids, 1024)] == [[3797], [3290]]
    schema = core.CoreTask("s", "schema", 0, " ", 50, ({},), "x")
    ids = [[50256, 1, 2, 9, 9], [50256, 3, 9, 9]]
    requests = core.example_requests(schema, 0, ids, 1024)
    assert [(r.context, r.continuation) for r in requests] == [([50256, 1, 2], [9, 9]), ([50256, 3], [9, 9])]
    cropped = core.example_requests(schema, 0, ids, 4)  # the last 4 tokens of each row
    assert [(r.context, r.continuation) for r in cropped] == [([1, 2], [9, 9]), ([50256, 3], [9, 9])]
    with pytest.raises(GPT2Error, match="does not fit the model's context window"):
        core.example_requests(schema, 0, ids, 2)


def test_an_option_with_no_tokens_of_its_own_follows_nanochats_nan_rule(model, tmp_path):
    # " the" is a token prefix of " the cat": nothing of it is scored, its mean loss is NaN, and
    # list.index(min(...)) picks a NaN only when it comes first
    examples = (
        {"query": "Pick one:", "choices": ["the", "the cat sat"], "gold": 1},
        {"query": "Pick one:", "choices": ["the cat sat", "the"], "gold": 0},
        {"query": "Pick one:", "choices": ["a dog", "a", "a cat"], "gold": 2},
    )
    task = core.CoreTask("t", "multiple_choice", 0, " ", 25, examples, "x")
    tokenizer = NanochatTokenizer(hf_tokenizer(tmp_path / "hf"))
    meta = {"task_type": "multiple_choice", "num_fewshot": 0, "continuation_delimiter": " "}
    reference = [evaluate_example(i, NanochatModel(model), tokenizer, list(examples), "cpu", meta)[1] for i in range(3)]
    assert core.predict(model, task, range(3)) == reference
    assert reference[0] == 0 and reference[1] == 0  # the NaN option wins at index 0, never elsewhere


@pytest.mark.slow
def test_cli_writes_core_json_with_all_22_tasks(model, tmp_path, monkeypatch, capsys):
    directory = write_bundle(tmp_path / "eval_bundle", n=11)
    ckpt = gpt2.save_model(tmp_path / "ckpt", model)
    monkeypatch.setenv("GPT2_CORE_BUNDLE", str(directory))
    assert main(["eval", "core", "--model", str(ckpt), "--max-per-task", "11", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    saved = json.loads((ckpt / "core.json").read_text())
    assert sorted(saved["tasks"]) == sorted(row[0] for row in CORE_YAML) and saved["missing"] == []
    assert saved["core"] == pytest.approx(sum(r["centered"] for r in saved["tasks"].values()) / 22)
    assert saved["tasks"]["boolq"]["random_baseline"] == 62 and saved["tasks"]["squad"]["num_fewshot"] == 10
    assert saved["bundle"] == str(directory) and saved["bundle_sha256"] is None and saved["max_per_task"] == 11
    assert f"{saved['core']:.4f}   (mean of 22 tasks)" in out and "124M 0.1139" in out and "missing" not in out


def test_partial_bundle_names_the_missing_tasks(model, bundle, capsys):
    result = core.evaluate_core(model, core.load_bundle(bundle, 11))
    assert list(result["tasks"]) == list(COVERING)
    assert result["missing"] == [row[0] for row in CORE_YAML if row[0] not in COVERING]
    table = core.format_table(result)
    assert "(mean of 7 tasks)" in table
    assert "missing CORE tasks (15): bigbench_qa_wikidata, arc_challenge" in table


def test_core_runs_in_the_training_loop(tmp_path_factory, tmp_path):
    """--core-every: the CORE slot logs the same score as gpt2 eval core on the saved model, and the report shows it."""
    from gpt2.report import write_report
    from gpt2.store.checkpoint import find_checkpoint
    from gpt2.store.load import load
    from gpt2.store.rundir import read_metrics
    from gpt2.train.recipes import build_config
    from gpt2.train.trainer import train
    from train_helpers import prepared_dataset

    dataset_dir = prepared_dataset(tmp_path_factory.getbasetemp())
    small = write_bundle(tmp_path / "small", ("lambada_openai", "winograd"), n=5)
    run = tmp_path / "run"
    cfg = build_config(
        {"size": "tiny", "data": str(dataset_dir), "out": str(run), "steps": 1, "batch_tokens": 64, "seq_len": 32,
         "micro_batch": 2, "device": "cpu", "eval_every": 0, "sample_every": 0, "hellaswag_every": 0,
         "core_every": 1, "core_max_per_task": 4, "core_bundle": str(small), "eval_tokens": 64}
    )  # fmt: skip
    train(cfg)
    logged = [row["core"] for row in read_metrics(run) if row["type"] == "eval"]
    trained = load(str(find_checkpoint(run)), "cpu")
    assert logged == [core.evaluate_core(trained, core.load_bundle(small, 4))["core"]]
    assert "| final CORE (--core-max-per-task examples a task) |" in write_report(run).read_text()


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda d: (d / "eval_meta_data.csv").unlink(), r"eval_meta_data.csv is missing"),
        (lambda d: (d / "eval_data/reading_comprehension/squad.jsonl").unlink(), r"task data not found: .*squad"),
        (lambda d: _append(d / "eval_data/world_knowledge/arc_easy.jsonl", "{oops"), r"arc_easy.jsonl:14: malformed"),
        (
            lambda d: _append(d / "eval_data/world_knowledge/arc_easy.jsonl", '{"query": "q", "choices": ["a"]}'),
            r"arc_easy.jsonl:14: field 'choices' must be a list of at least 2 strings",
        ),
        (
            lambda d: _replace(d / "core.yaml", "icl_task_type: schema", "icl_task_type: ranking"),
            r"task 'winograd': unknown icl_task_type 'ranking' \(expected one of multiple_choice, schema",
        ),
        (lambda d: _replace(d / "core.yaml", "num_fewshot: [3]", "num_fewshot: [30]"), r"needs more than 30 examples"),
    ],
    ids=["no-meta-csv", "no-data-file", "bad-json-row", "bad-row-fields", "unknown-type", "too-few-examples"],
)
def test_a_malformed_bundle_is_one_clear_error(bundle, tmp_path, edit, message):
    import shutil

    directory = shutil.copytree(bundle, tmp_path / "bundle")
    edit(directory)
    with pytest.raises(GPT2Error, match=message):
        core.load_bundle(directory)


def _append(path, line):
    path.write_text(path.read_text() + line + "\n")


def _replace(path, old, new):
    path.write_text(path.read_text().replace(old, new))


def test_download_records_the_sha256_and_unpacks_once(tmp_path, bundle):
    import hashlib
    import shutil

    archive = shutil.make_archive(str(tmp_path / "eval_bundle"), "zip", bundle.parent, "eval_bundle")
    url = f"file://{archive}"
    unpacked = core.download_bundle(tmp_path / "cache", url=url)
    assert (unpacked / "core.yaml").read_text() == (bundle / "core.yaml").read_text()
    digest = hashlib.sha256((tmp_path / "cache/core/eval_bundle.zip").read_bytes()).hexdigest()
    assert core.bundle_sha256(unpacked) == digest == hashlib.sha256(Path(archive).read_bytes()).hexdigest()
    assert core.download_bundle(tmp_path / "cache", url="file:///nonexistent") == unpacked  # cached: no download
    with pytest.raises(GPT2Error, match="could not download the CORE eval bundle .* --bundle DIR"):
        core.download_bundle(tmp_path / "other", url="file:///nonexistent.zip")
