"""``gpt2 eval hellaswag|loss`` and the seed-compatible ``hellaswag.py``: output, and every bad input."""

import json
import runpy
import sys
from pathlib import Path

import pytest

import gpt2
from evaluate_helpers import ITEMS, tiny_model, write_jsonl
from gpt2.cli import main
from gpt2.data import prepare_documents
from gpt2.evaluate import hellaswag
from gpt2.evaluate.hellaswag import hellaswag_accuracy, load_hellaswag

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return gpt2.save_model(tmp_path_factory.mktemp("ckpt") / "tiny", tiny_model(seed=7))


@pytest.fixture
def items_file(tmp_path):
    return write_jsonl(tmp_path / "hs.jsonl", ITEMS)


def test_hellaswag_json_is_one_object_with_the_metrics(checkpoint, items_file, capsys):
    assert main(["eval", "hellaswag", "--model", str(checkpoint), "--data", str(items_file), "--json"]) == 0
    out = capsys.readouterr().out
    result = json.loads(out)  # exactly one JSON object on stdout
    expected = hellaswag_accuracy(gpt2.load(checkpoint), load_hellaswag(items_file))
    assert {k: result[k] for k in expected} == expected
    assert result["n"] == 3 and result["wall_s"] > 0 and result["items_per_s"] > 0


def test_hellaswag_text_report_and_limit(checkpoint, items_file, capsys):
    argv = ["eval", "hellaswag", "--model", str(checkpoint), "--data", str(items_file), "--limit", "2"]
    assert main([*argv, "--batch-size", "1", "--device", "cpu", "--autocast", "fp32"]) == 0
    out = capsys.readouterr().out
    for word in ("acc ", "acc_norm ", "acc_norm_token ", "(2 items)", "wall time"):
        assert word in out


def test_seed_compatible_root_script(checkpoint, items_file, capsys, monkeypatch):
    argv = ["hellaswag.py", "-m", str(checkpoint), "-d", "cpu", "--data", str(items_file), "--json"]
    monkeypatch.setattr(sys, "argv", argv)
    with pytest.raises(SystemExit) as exit_info:
        runpy.run_path(str(ROOT / "hellaswag.py"), run_name="__main__")
    assert exit_info.value.code == 0
    assert json.loads(capsys.readouterr().out)["n"] == 3


GOOD = json.dumps(ITEMS[0])


@pytest.mark.parametrize(
    "lines, where",
    [
        ([GOOD, "{oops"], ":2: malformed JSON"),
        ([GOOD, json.dumps({**ITEMS[1], "label": 7})], ":2: label 7 is out of range"),
        ([json.dumps({**ITEMS[1], "endings": ITEMS[1]["endings"] + ["fifth"]})], ":1: expected 4 endings, got 5"),
        ([], "no HellaSwag items"),
    ],
)
def test_bad_hellaswag_files_exit_1_naming_file_and_line(checkpoint, tmp_path, capsys, lines, where):
    path = tmp_path / "bad.jsonl"
    path.write_text("".join(line + "\n" for line in lines))
    assert main(["eval", "hellaswag", "--model", str(checkpoint), "--data", str(path)]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"error: {path}") or (where == "no HellaSwag items" and str(path) in err)
    assert where in err and "Traceback" not in err and err.count("\n") == 1


def test_model_tokenizer_mismatch_and_missing_model(tmp_path, items_file, capsys):
    hf_dir = tmp_path / "small-vocab"
    hf_dir.mkdir()
    config = {"model_type": "gpt2", "vocab_size": 1000, "n_positions": 64, "n_embd": 32, "n_layer": 1, "n_head": 2}
    (hf_dir / "config.json").write_text(json.dumps(config))
    assert main(["eval", "hellaswag", "--model", str(hf_dir), "--data", str(items_file)]) == 1
    assert "50257" in capsys.readouterr().err
    assert main(["eval", "hellaswag", "--model", str(tmp_path / "nope"), "--data", str(items_file)]) == 1
    assert "nope" in capsys.readouterr().err


def test_default_data_without_network_suggests_data(checkpoint, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("GPT2_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(hellaswag, "HELLASWAG_VAL_URL", "http://127.0.0.1:9/hellaswag_val.jsonl")
    assert main(["eval", "hellaswag", "--model", str(checkpoint)]) == 1
    assert "--data FILE" in capsys.readouterr().err


def test_eval_loss_on_prepared_data_and_text(checkpoint, tmp_path, capsys):
    docs = [f"Line {i} of a small corpus about rivers and hills. " * 4 for i in range(10)]
    prepare_documents(docs, tmp_path / "data", shard_tokens=2000, val_tokens=300)
    argv = ["eval", "loss", "--model", str(checkpoint), "--batch-size", "2", "--seq-len", "32", "--json"]
    assert main([*argv, "--data", str(tmp_path / "data"), "--tokens", "128"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["tokens"] == 128 and result["perplexity"] > 1 and result["bpb"] > 1 and result["bytes_per_token"] > 1
    text = tmp_path / "notes.txt"
    text.write_text(" ".join(docs))
    assert main(["eval", "loss", "--model", str(checkpoint), "--text", str(text), "--seq-len", "32"]) == 0
    out = capsys.readouterr().out
    assert "perplexity" in out and "nats/token" in out and "bits/byte" in out and "bytes/token" in out
    assert main(["eval", "loss", "--model", str(checkpoint), "--data", str(tmp_path / "missing")]) == 1
    assert "missing" in capsys.readouterr().err


def test_hellaswag_batch_help_shows_the_evaluator_default():
    from gpt2.evaluate import cli as eval_cli
    from gpt2.evaluate.hellaswag import DEFAULT_BATCH_SIZE

    assert f"default: {DEFAULT_BATCH_SIZE})" in eval_cli.HELLASWAG_BATCH_HELP  # the help shows it without importing it


def test_lm_eval_missing_is_one_error_naming_the_extra(checkpoint, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "lm_eval", None)  # what `import lm_eval` sees when it is not installed
    code = main(["eval", "lm-eval", "--model", str(checkpoint), "--tasks", "hellaswag"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(err) == 1
    assert "pip install 'gpt2-from-scratch[eval]'" in err[0]
