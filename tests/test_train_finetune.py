"""Fine-tuning (``gpt2 train --init-from SRC``) end to end: it helps, it starts from exactly SRC's function,
it resumes bitwise, and bad sources or dropout values fail cleanly before RUN_DIR is touched."""

from __future__ import annotations

import json
import math
import signal
from pathlib import Path

import pytest
import torch
from torch.nn import functional as F

from gpt2.cli import main
from gpt2.config import GPT2_VOCAB_SIZE, GPTConfig
from gpt2.data import TokenShardLoader, prepare_documents
from gpt2.data.sources import demo_documents
from gpt2.store.checkpoint import load_checkpoint, read_meta
from gpt2.store.rundir import latest_checkpoint, read_metrics
from gpt2.train.trainer import train
from train_helpers import QUIET, TINY_RUN, start_train, tiny_config, train_losses, wait_for

# Two disjoint corpora that ship with the package (the demo's plays, offline): A (pre-training) Shakespeare's
# comedies, B (fine-tuning) his tragedies, other characters and plots in the same style.
COMEDIES, TRAGEDIES = slice(0, 8), slice(32, 38)  # gpt2.data.sources.demo_play_files(), sorted by category
A_TOKENS, B_TOKENS = 40_000, 100_000
# Both the fine-tune and the from-scratch run: the same 10 steps of 8 x 64 tokens at the same lr (tiny models take
# a high one), val loss on 4096 held-out B tokens. (At 20 steps the margin is smaller: ~0.3 nats at lr 5e-3.)
STEPS, LR, BATCH = 10, 5e-3, dict(batch_tokens=512, micro_batch=8, seq_len=64, warmup_steps=2)


@pytest.fixture(scope="module")
def corpora(tmp_path_factory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("corpora")
    plays = list(demo_documents())
    prepare_documents(plays[COMEDIES], base / "comedies", shard_tokens=20_000, val_tokens=4_000, max_tokens=A_TOKENS)
    prepare_documents(plays[TRAGEDIES], base / "tragedies", shard_tokens=50_000, val_tokens=8_000, max_tokens=B_TOKENS)
    return {"A": base / "comedies", "B": base / "tragedies"}


@pytest.fixture(scope="module")
def pretrained(corpora, tmp_path_factory) -> Path:
    """The module's one tiny model: 60 steps (30k tokens) on the comedies; a run directory."""
    out = tmp_path_factory.mktemp("pretrain") / "run"
    train(tiny_config(corpora["A"], out, steps=60, lr=1e-2, **{**BATCH, "warmup_steps": 5}))
    return out


@pytest.mark.slow
def test_fine_tuning_beats_training_from_scratch(corpora, pretrained, tmp_path):
    data = corpora["B"]
    common = dict(steps=STEPS, eval_every=STEPS, eval_tokens=4096, **BATCH)
    tuned = train(tiny_config(data, tmp_path / "tuned", init_from=str(pretrained), lr=LR, **common))
    scratch = train(tiny_config(data, tmp_path / "scratch", lr=LR, **common))
    first_tuned, first_scratch = train_losses(tmp_path / "tuned")[0], train_losses(tmp_path / "scratch")[0]
    print(
        f"\n{data.name}: {STEPS} steps x {BATCH['batch_tokens']} tokens; val loss fine-tuned from the comedies "
        f"{tuned['val_loss']:.4f} vs from scratch {scratch['val_loss']:.4f} "
        f"(first train loss {first_tuned:.3f} vs {first_scratch:.3f})"
    )
    assert first_scratch == pytest.approx(math.log(50304), abs=0.3)  # random init: ~uniform
    assert first_tuned < first_scratch - 1.0  # the pretrained weights are really used
    assert tuned["val_loss"] < scratch["val_loss"] - 0.5
    run = json.loads((tmp_path / "tuned" / "run.json").read_text())
    assert run["init_from"]["spec"] == str(pretrained)
    assert run["init_from"]["checkpoint"] == str(latest_checkpoint(pretrained).resolve())
    assert run["init_from"]["meta"]["step"] == 60 and run["config"]["init_from"] == str(pretrained)
    assert run["model"]["block_size"] == 64  # --seq-len 64 cropped the 128 position embeddings
    ckpt = latest_checkpoint(tmp_path / "tuned")
    assert read_meta(ckpt)["init_from"]["meta"]["step"] == 60 and load_checkpoint(ckpt).config.block_size == 64
    report = tmp_path / "report.md"
    assert main(["report", str(tmp_path / "tuned"), "--out", str(report), "--no-plot"]) == 0
    assert f"| initial weights | fine-tuned from {pretrained} (" in report.read_text()


def test_first_loss_equals_the_transformers_loss_and_export_stays_equal(corpora, tmp_path):
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    hf_config = transformers.GPT2Config(n_layer=2, n_embd=64, n_head=2, n_positions=128, vocab_size=GPT2_VOCAB_SIZE)
    hf = transformers.GPT2LMHeadModel(hf_config).eval()  # random weights; eval: HF's own 0.1 dropout off
    hf.save_pretrained(tmp_path / "hf")
    out = tmp_path / "run"
    options = dict(steps=1, batch_tokens=512, micro_batch=8, seq_len=64, lr=1e-3)  # one micro-batch per step
    train(tiny_config(corpora["B"], out, init_from=str(tmp_path / "hf"), **options))
    x, y = TokenShardLoader(corpora["B"], "train", 8, 64, seed=7).next_batch()  # the run's first batch
    with torch.no_grad():
        expected = F.cross_entropy(hf(x).logits.flatten(0, 1), y.flatten()).item()
    first = train_losses(out)[0]
    print(f"\nfirst loss {first:.6f}, transformers {expected:.6f}")
    assert first == pytest.approx(expected, abs=1e-4)
    tuned = load_checkpoint(latest_checkpoint(out))
    assert tuned.config.vocab_size == GPT2_VOCAB_SIZE  # kept, not padded: see gpt2.train.init
    # after a step the weights changed; exported, transformers computes the same logits as our model
    assert main(["export", str(out), "--format", "hf", "--out", str(tmp_path / "export")]) == 0
    exported = transformers.GPT2LMHeadModel.from_pretrained(tmp_path / "export").eval()
    with torch.no_grad():
        diff = (exported(x).logits - tuned(x)[0]).abs().max().item()
        moved = (hf(x).logits - tuned(x)[0]).abs().max().item()
    assert diff < 1e-4 and moved > 1e-3


@pytest.mark.slow
def test_kill_and_resume_of_a_fine_tuning_run_is_bitwise(corpora, pretrained, tmp_path):
    args = [*TINY_RUN, *QUIET, "--data", str(corpora["B"]), "--init-from", str(pretrained), "--steps", "8"]
    args += ["--save-every", "3", "--lr", "1e-3", "--warmup-steps", "2", "--dropout", "0.1"]  # dropout: RNG too
    runs = {name: tmp_path / name for name in ("full", "killed")}
    procs = {name: start_train([*args, "--out", str(out)], tmp_path / f"{name}.log") for name, out in runs.items()}
    ready = wait_for(lambda: (runs["killed"] / "latest").is_file(), [procs["killed"]])
    procs["killed"].send_signal(signal.SIGKILL)
    codes = {name: proc.wait(timeout=150) for name, proc in procs.items()}
    assert ready and codes == {"full": 0, "killed": -signal.SIGKILL}, (tmp_path / "killed.log").read_text()
    assert len(train_losses(runs["killed"])) < 8
    resumed = start_train([*args, "--out", str(runs["killed"])], tmp_path / "resume.log")
    code = resumed.wait(timeout=150)
    log = (tmp_path / "resume.log").read_text()
    assert code == 0, log
    assert "resumed from" in log and "note: --init-from is ignored" in log
    assert train_losses(runs["killed"]) == train_losses(runs["full"])  # float equality: bitwise
    assert [row["step"] for row in read_metrics(runs["killed"])] == list(range(1, 9))
    run = json.loads((runs["killed"] / "run.json").read_text())
    assert run["init_from"]["spec"] == str(pretrained) and run["model"]["dropout"] == 0.1 and run["resumes"]


def _vocab_65_nanogpt_file(path: Path) -> Path:
    """A nanoGPT ``shakespeare_char``-like .pt: a character vocabulary of 65 rows, too small for GPT-2 tokens."""
    config = GPTConfig.named("tiny")
    with torch.device("meta"):
        from gpt2.model import GPT

        shapes = {k: v.shape for k, v in GPT(config).state_dict().items() if k != "lm_head.weight"}
    state = {k: torch.zeros(shape) for k, shape in shapes.items()}
    state["transformer.wte.weight"] = torch.zeros(65, config.n_embd)
    model_args = {**config.to_dict(), "vocab_size": 65}
    torch.save({"model": state, "model_args": model_args, "iter_num": 5000}, path)
    return path


@pytest.mark.parametrize(
    ("make_source", "extra", "message"),
    [
        (lambda d, p: str(d / "missing"), [], "--init-from {d}/missing: model not found"),
        (lambda d, p: (d / "notes.txt").write_text("hi") and str(d / "notes.txt"), [], "unsupported model file"),
        (lambda d, p: str(_vocab_65_nanogpt_file(d / "char.pt")), [], "vocab_size is 65"),
        (lambda d, p: str(p), ["--size", "mini"], "--size mini asks for n_layer=6 (the weights have 2)"),
        (lambda d, p: str(p), ["--dropout", "1.0"], "--dropout must be in [0, 1), got 1.0"),
        (lambda d, p: str(p), ["--dropout", "-0.1"], "--dropout must be in [0, 1), got -0.1"),
    ],
)
def test_bad_sources_and_dropout_fail_before_run_dir_is_touched(
    corpora, pretrained, tmp_path, capsys, make_source, extra, message
):
    source = make_source(tmp_path, pretrained)
    existing = tmp_path / "existing"  # a directory with something in it, no checkpoint
    existing.mkdir()
    (existing / "notes.md").write_text("mine")
    for out in (tmp_path / "new", existing):
        argv = ["train", "--data", str(corpora["B"]), "--out", str(out), "--init-from", source, *extra]
        code = main([*argv, "--device", "cpu", "--steps", "2"])
        err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
        assert code == 1 and len(err) == 1 and err[0].startswith("error: "), err
        assert message.format(d=tmp_path) in err[0]
    assert not (tmp_path / "new").exists()
    assert [p.name for p in existing.iterdir()] == ["notes.md"]
    assert main(["train", "--size", "tiny", "--dropout", "1", "--out", str(tmp_path / "new")]) == 1  # no --init-from
    assert "--dropout must be in [0, 1)" in capsys.readouterr().err and not (tmp_path / "new").exists()


def test_fine_tuning_defaults_by_device_and_size_under_explicit_options(pretrained):
    from gpt2.train.recipes import build_config, resolve_micro_batch

    unset = dict(lr=None, steps=None, batch_tokens=None, micro_batch=None)
    config = tiny_config(Path("unused"), Path("unused-run"), init_from=str(pretrained), **unset)
    # tiny on a CPU: 500 steps of 2,048 tokens at tiny's own lr 3e-3 (measured: docs/training.md, "Fine-tuning on a
    # CPU"), 65,536 val tokens; tiny_config's explicit warmup_steps=2 and eval_every=0 beat the recipe's 20 and 50
    tuned = (config.recipe, config.lr, config.steps, config.batch_tokens, config.eval_tokens, config.warmup_steps)
    assert tuned == ("tiny", 3e-3, 500, 2048, 65536, 2) and config.eval_every == 0
    assert config.size == "tiny" and config.model.vocab_size == 50304 and config.model.block_size == 32  # --seq-len 32
    assert resolve_micro_batch(config, "cpu", 1).micro_batch == 16  # 2,048 / 32 = 64 sequences, capped at 16
    # a Hugging Face GPT-2 124M on a GPU: the 124M recipe fine-tuned, 500 steps of 65,536 tokens at lr 6e-5
    hf = GPTConfig(vocab_size=GPT2_VOCAB_SIZE)
    gpu = resolve_micro_batch(build_config({"init_from": "gpt2"}, "cuda", hf), "cuda", 1)
    expected = dict(recipe="124M", model=hf, lr=6e-5, steps=500, batch_tokens=65536, micro_batch=64, warmup_steps=20)
    expected.update(eval_every=50, eval_tokens=10 * 2**19, save_every=100, hellaswag_every=0, min_lr_ratio=0.1)
    assert {name: getattr(gpu, name) for name in expected} == expected  # as before the CPU defaults
    # on a CPU: 2,048-token steps of 2 sequences at GPT-2's lr; the Muon variant keeps its own schedule
    cpu = resolve_micro_batch(build_config({"init_from": "gpt2", "recipe": "muon"}, "cpu", hf), "cpu", 1)
    tuned = (cpu.recipe, cpu.lr, cpu.batch_tokens, cpu.micro_batch, cpu.schedule, cpu.min_lr_ratio)
    assert tuned == ("124M-muon", 6e-5, 2048, 2, "wsd", 0.0)


def test_python_train_py_passes_init_from_through(corpora, pretrained, tmp_path):
    import subprocess
    import sys

    from train_helpers import REPO, subprocess_env

    out = tmp_path / "run"
    command = [sys.executable, str(REPO / "train.py"), *TINY_RUN, *QUIET, "--data", str(corpora["B"])]
    command += ["--init-from", str(pretrained), "--steps", "1", "--out", str(out)]
    result = subprocess.run(command, capture_output=True, text=True, env=subprocess_env(), timeout=150)
    assert result.returncode == 0, result.stderr[-2000:]
    assert json.loads((out / "run.json").read_text())["init_from"]["spec"] == str(pretrained)
    assert train_losses(out)[0] < math.log(50304) - 1.0  # started from the pretrained weights
