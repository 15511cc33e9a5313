"""Muon + AdamW (``--optimizer muon``), the named recipes and the wsd schedule: grouping, the hand-written
Newton-Schulz step against torch.optim.Muon, the trainer with Muon (resume after SIGKILL, bf16, NaN guard)
and the bad inputs."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from gpt2 import GPT, GPT2Error, GPTConfig
from gpt2.model import optimizer_param_groups
from gpt2.runtime.distributed import DistContext
from gpt2.store.checkpoint import load_checkpoint
from gpt2.store.rundir import read_metrics
from gpt2.store.tensors import load_tensor_tree
from gpt2.train.config import TrainConfig
from gpt2.train.optim import BlockMuon, build_optimizers, muon_param_groups, newton_schulz, newton_schulz_flops
from gpt2.train.recipes import RECIPES, build_config
from gpt2.train.schedule import learning_rate
from gpt2.train.trainer import Trainer, train
from train_helpers import (
    QUIET,
    TINY_RUN,
    prepared_dataset,
    run_train,
    start_train,
    subprocess_env,
    tiny_config,
    train_losses,
)

HIDDEN = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")
MUON_RUN = [*TINY_RUN, *QUIET, "--recipe", "muon", "--warmup-steps", "2", "--muon-lr", "0.02"]


@pytest.fixture(scope="module")
def model() -> GPT:
    torch.manual_seed(0)
    return GPT(GPTConfig.named("tiny"))


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    return prepared_dataset(tmp_path_factory.getbasetemp())


def _names(model: GPT, params: list) -> set[str]:
    by_id = {id(p): n for n, p in model.named_parameters()}
    return {by_id[id(p)] for p in params}


@pytest.mark.parametrize("qkv", ["fused", "split"])
def test_every_parameter_in_exactly_one_group(model, qkv):
    cfg = TrainConfig(model=model.config, optimizer="muon", muon_qkv=qkv, lr=1e-3, muon_lr=0.05)
    muon, adamw = muon_param_groups(model, cfg)
    params = [p for g in muon + adamw for p in g["params"]]
    assert len(params) == len({id(p) for p in params}) == len(list(model.parameters()))  # no duplicate, none left
    assert _names(model, [p for g in muon for p in g["params"]]) == {
        f"transformer.h.{i}.{name}" for i in range(model.config.n_layer) for name in HIDDEN
    }
    embeddings, scalars = adamw
    assert _names(model, embeddings["params"]) == {"transformer.wte.weight", "transformer.wpe.weight"}  # + tied head
    assert all(p.ndim == 1 for p in scalars["params"]) and scalars["weight_decay"] == 0.0
    assert [g["lr"] for g in muon] == [0.05] * len(muon) and embeddings["lr"] == scalars["lr"] == 1e-3
    if qkv == "split":
        assert [g["blocks"] for g in muon] == [1, 3]
        assert all(n.endswith("c_attn.weight") for n in _names(model, muon[1]["params"]))


def test_adamw_recipe_builds_the_seed_optimizer(model):
    optimizers = build_optimizers(model, TrainConfig(model=model.config), torch.device("cpu"))
    assert list(optimizers.by_name) == ["optimizer"]
    adamw = optimizers.adamw
    seed = optimizer_param_groups(model, 0.1)
    assert [[id(p) for p in g["params"]] for g in adamw.param_groups] == [[id(p) for p in g["params"]] for g in seed]
    assert adamw.defaults["lr"] == 6e-4 and adamw.defaults["betas"] == (0.9, 0.95) and adamw.defaults["fused"]


@pytest.mark.parametrize("shape", [(96, 32), (32, 96), (48, 48)])
def test_newton_schulz_matches_torch_muon(shape):
    from torch.optim._muon import _zeropower_via_newtonschulz

    g = torch.randn(shape, generator=torch.Generator().manual_seed(1))
    ours = newton_schulz(g)
    assert torch.equal(ours, _zeropower_via_newtonschulz(g, (3.4445, -4.7750, 2.0315), 5, 1e-7))
    singular = torch.linalg.svdvals(ours.float())
    assert singular.min() > 0.5 and singular.max() < 1.5  # roughly orthogonal: U S' V^T, S' in ~(0.7, 1.2)


def _steps(optimizer: torch.optim.Optimizer, params: list[torch.nn.Parameter], grads: list[list[torch.Tensor]]):
    for step_grads in grads:
        for p, g in zip(params, step_grads, strict=True):
            p.grad = g.clone()
        optimizer.step()


def test_block_muon_with_one_block_is_torch_muon():
    gen = torch.Generator().manual_seed(2)
    init = [torch.randn(96, 32, generator=gen), torch.randn(32, 128, generator=gen)]
    grads = [[torch.randn_like(w) for w in init] for _ in range(3)]
    ours, stock = [torch.nn.Parameter(w.clone()) for w in init], [torch.nn.Parameter(w.clone()) for w in init]
    _steps(BlockMuon(ours, lr=0.05, momentum=0.9, weight_decay=0.1), ours, grads)
    _steps(torch.optim.Muon(stock, lr=0.05, momentum=0.9, weight_decay=0.1, adjust_lr_fn="original"), stock, grads)
    assert all(torch.equal(a, b) for a, b in zip(ours, stock, strict=True))


def test_block_muon_orthogonalises_q_k_v_separately():
    """Three blocks of a 3C x C matrix = stock Muon on three separate C x C matrices."""
    gen = torch.Generator().manual_seed(3)
    init = torch.randn(3 * 16, 16, generator=gen)
    grads = [torch.randn_like(init) for _ in range(3)]
    fused = torch.nn.Parameter(init.clone())
    _steps(BlockMuon([fused], lr=0.05, blocks=3), [fused], [[g] for g in grads])
    parts = [torch.nn.Parameter(block.clone()) for block in init.chunk(3)]
    _steps(torch.optim.Muon(parts, lr=0.05, weight_decay=0.0), parts, [list(g.chunk(3)) for g in grads])
    assert torch.equal(fused.detach(), torch.cat([p.detach() for p in parts]))


def test_newton_schulz_flops_of_124m():
    with torch.device("meta"):
        big = GPT(GPTConfig.named("124M"))
    flops = newton_schulz_flops(big, TrainConfig(optimizer="muon", muon_qkv="fused"))
    m = 768  # per layer: c_attn (768 x 2304 wide), c_proj (768^2), c_fc and mlp c_proj (768 x 3072)
    per_layer = sum(5 * (4 * m * m * n + 2 * m**3) for n in (3 * m, m, 4 * m, 4 * m))
    assert flops == 12 * per_layer and 1.4e12 < flops < 1.6e12
    split = newton_schulz_flops(big, TrainConfig(optimizer="muon", muon_qkv="split"))
    assert split - flops == 12 * 5 * (3 * 6 * m**3 - (4 * m * m * 3 * m + 2 * m**3))  # c_attn as 3 square blocks
    assert newton_schulz_flops(big, TrainConfig()) == 0


def test_wsd_schedule():
    lr = lambda s: learning_rate(s, 0.02, 10, 100, 0.0, "wsd", 0.4)  # noqa: E731
    assert lr(0) == pytest.approx(0.002) and lr(9) == pytest.approx(0.02)
    assert lr(10) == lr(59) == 0.02  # stable until the last 40 steps
    assert lr(60) == 0.02 and lr(80) == pytest.approx(0.01) and lr(99) == pytest.approx(0.0005)
    assert lr(100) == 0.0
    # the seed's cosine is untouched by the new arguments
    assert learning_rate(500, 6e-4, 715, 19073) == learning_rate(500, 6e-4, 715, 19073, 0.1, "cosine", 0.9)


def test_recipes_and_precedence():
    muon = build_config({"size": "tiny", "recipe": "muon"}, "cpu")
    assert muon == build_config({"recipe": "tiny-muon"}, "cpu") and muon.recipe == "tiny-muon"
    assert (muon.optimizer, muon.schedule, muon.muon_lr, muon.weight_decay) == ("muon", "wsd", 0.02, 0.0)
    assert muon.muon_qkv == "split"  # q, k, v orthogonalised separately (measured in docs/training.md)
    assert muon.lr == 3e-3 and muon.warmup_steps == 20  # not changed by Muon: tiny's
    explicit = build_config({"size": "tiny", "recipe": "muon", "muon_lr": 0.05, "schedule": "cosine"}, "cpu")
    assert explicit.muon_lr == 0.05 and explicit.schedule == "cosine"  # flags beat the recipe
    seed = build_config({"size": "tiny", "recipe": "gpt2"}, "cpu")
    assert seed == build_config({"size": "tiny"}, "cpu") and seed.optimizer == "adamw" and seed.schedule == "cosine"
    assert seed.recipe == "tiny" and RECIPES["124M"]() == TrainConfig()  # the seed's recipe: the field defaults


# ---------------------------------------------------------------- the trainer with Muon


def test_muon_trains_with_bf16_accumulation_eval_and_nan_guard(dataset, tmp_path):
    torch.manual_seed(0)
    tiny = GPT(GPTConfig.named("tiny"))
    counter = {"n": 0}

    def poison(module, inputs, output):  # step 2's micro-steps produce NaN logits: the update is skipped
        counter["n"] += 1
        return output * float("nan") if counter["n"] in (3, 4) else output

    tiny.lm_head.register_forward_hook(poison)
    out = tmp_path / "run"
    options = dict(recipe="muon", muon_qkv="fused", autocast="bf16", eval_every=4, eval_tokens=256)
    cfg = tiny_config(dataset, out, steps=8, **options)  # stock torch.optim.Muon here; split runs elsewhere
    summary = train(cfg, model=tiny)
    rows = read_metrics(out)
    train_rows = [r for r in rows if r["type"] == "train"]
    assert [r.get("skipped", False) for r in train_rows] == [False, True] + [False] * 6
    assert train_rows[-1]["loss"] < train_rows[0]["loss"] - 0.2, [r["loss"] for r in train_rows]
    assert train_rows[0]["muon_lr"] == pytest.approx(0.01) and train_rows[0]["lr"] == pytest.approx(1.5e-3)
    assert [r["step"] for r in rows if r["type"] == "eval"] == [4, 8] and summary["step"] == 8
    run = json.loads((out / "run.json").read_text())
    assert run["config"]["recipe"] == "tiny-muon" and run["dtype"] == "bfloat16" and run["optimizer_flops_per_step"] > 0
    muon_state = load_tensor_tree(out / "step_000008", "muon")["state"]
    adamw_state = load_tensor_tree(out / "step_000008", "optimizer")["state"]
    assert set(muon_state) == {f"transformer.h.{i}.{n}" for i in range(2) for n in HIDDEN}
    assert set(adamw_state).isdisjoint(muon_state) and "transformer.wte.weight" in adamw_state
    assert all(set(s) == {"momentum_buffer"} for s in muon_state.values())


def _wait_for(predicate, proc: subprocess.Popen, timeout: float = 150.0) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline or proc.poll() is not None:
            return False
        time.sleep(0.02)
    return True


def test_muon_resume_after_sigkill_is_bitwise(dataset, tmp_path, one_torch_thread):
    # one thread in-process like the subprocesses (subprocess_env): float reductions then match bit for bit
    args = [*MUON_RUN, "--data", str(dataset), "--steps", "8", "--save-every", "3"]
    full, killed = tmp_path / "full", tmp_path / "killed"
    train(build_config({**vars_of(args), "out": str(full)}, "cpu"))
    proc = start_train([*args, "--out", str(killed)], tmp_path / "killed.log")
    ready = _wait_for(lambda: (killed / "latest").is_file(), proc)
    proc.kill()
    assert proc.wait(timeout=60) == -signal.SIGKILL and ready, (tmp_path / "killed.log").read_text()
    assert len(train_losses(killed)) < 8
    resumed = run_train([*args, "--out", str(killed)], timeout=150)
    assert resumed.returncode == 0 and "resumed from" in resumed.stdout + resumed.stderr, resumed.stderr[-2000:]
    assert train_losses(killed) == train_losses(full)  # bitwise: both optimizers' states came back
    a, b = load_checkpoint(full / "step_000008"), load_checkpoint(killed / "step_000008")
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True))


def vars_of(args: list[str]) -> dict:
    """``gpt2 train`` flags -> build_config options (through the real parser)."""
    from gpt2.cli import build_parser
    from gpt2.train.cli import options_from_args

    return options_from_args(build_parser("train").parse_args(["train", *args]))


# ---------------------------------------------------------------- bad input


def _one_error_line(result: subprocess.CompletedProcess, *needles: str) -> None:
    lines = [line for line in result.stderr.strip().splitlines() if line]
    assert result.returncode != 0 and "Traceback" not in result.stderr, result.stderr[-2000:]
    assert any(all(n in line for n in needles) for line in lines), result.stderr[-2000:]


def test_unknown_optimizer_and_recipe(dataset, tmp_path):
    _one_error_line(run_train([*TINY_RUN, *QUIET, "--optimizer", "sgd", "--out", str(tmp_path)]), "--optimizer")
    _one_error_line(run_train([*TINY_RUN, *QUIET, "--recipe", "fast", "--out", str(tmp_path)]), "--recipe", "fast")
    config = tmp_path / "c.json"
    config.write_text('{"recipe": "fast"}')
    result = run_train([*TINY_RUN, *QUIET, "--config", str(config), "--data", str(dataset), "--out", str(tmp_path)])
    _one_error_line(result, "--recipe fast: unknown recipe; known: 124M, 350M, 774M, 1558M, mini, tiny, 124M-muon")
    with pytest.raises(GPT2Error, match="--fsdp does not work with --optimizer muon: FSDP shards each matrix"):
        tiny_config(dataset, tmp_path, recipe="muon", fsdp=True).validate(world_size=2)


def test_muon_missing_from_torch_is_one_clear_error(dataset, tmp_path):
    out = tmp_path / "run"
    code = (
        "import sys, torch; del torch.optim.Muon; from gpt2.cli import main; "
        f"sys.exit(main(['train', *{[*MUON_RUN, '--muon-qkv', 'fused', '--data', str(dataset), '--out', str(out)]!r}]))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=subprocess_env())
    _one_error_line(result, "--optimizer muon needs torch.optim.Muon (torch >= 2.9)", "--optimizer adamw")
    assert not out.exists()  # refused before anything was written


def test_resuming_with_another_optimizer_is_refused(dataset, tmp_path):
    out = tmp_path / "run"
    train(tiny_config(dataset, out, steps=2))  # AdamW
    before = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    result = run_train([*MUON_RUN, "--data", str(dataset), "--out", str(out), "--steps", "4"])
    _one_error_line(result, "cannot resume from", "--optimizer adamw, this run asks for --optimizer muon")
    assert {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()} == before  # untouched
    with pytest.raises(GPT2Error, match="trained with --optimizer adamw"):
        Trainer(tiny_config(dataset, out, steps=4, recipe="muon"), DistContext())
    muon_run = tmp_path / "muon"
    train(tiny_config(dataset, muon_run, steps=2, recipe="muon"))  # split q/k/v
    with pytest.raises(GPT2Error, match="trained with --muon-qkv split, this run asks for --muon-qkv fused"):
        Trainer(tiny_config(dataset, muon_run, steps=4, recipe="muon", muon_qkv="fused"), DistContext())
