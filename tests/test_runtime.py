"""gpt2.runtime: device / dtype resolution, autocast, the process group and its collectives, and unwrap_model
on the real torch.compile, DDP and FSDP wrappers (a one-process gloo group, so it runs on any CPU)."""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP

from gpt2 import GPT, GPT2Error, GPTConfig
from gpt2.runtime.device import autocast, model_device, resolve_amp_dtype, resolve_device
from gpt2.runtime.distributed import (
    DistContext,
    all_gather_objects,
    all_reduce_mean,
    all_reduce_sum,
    any_rank,
    barrier,
    broadcast_from_main,
    join_process_group,
    rank_and_world_size,
    setup_distributed,
    teardown_distributed,
)
from gpt2.runtime.parallel import gradient_sync, unwrap_model, wrap_model
from gpt2.store.checkpoint import load_checkpoint, save_model

CPU_ONLY = not torch.cuda.is_available() and not torch.backends.mps.is_available()


@pytest.fixture(scope="module")
def model() -> GPT:
    torch.manual_seed(0)
    return GPT(GPTConfig.named("tiny"))


@pytest.fixture(scope="module")
def gloo_group(tmp_path_factory):
    """A real one-process gloo process group (what DDP and FSDP need), destroyed after this module."""
    store = tmp_path_factory.mktemp("gloo") / "store"
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=0, world_size=1)
    yield
    dist.destroy_process_group()


def assert_same_weights(a: torch.nn.Module, b: torch.nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for key in sa:
        assert torch.equal(sa[key], sb[key]), key


# --------------------------------------------------------------------------- devices and precision


def test_resolve_device_specs_and_errors():
    assert resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(GPT2Error, match="--device 'gpu' is not a device"):
        resolve_device("gpu")
    with pytest.raises(GPT2Error, match="only cpu, cuda and mps"):
        resolve_device("meta")
    if CPU_ONLY:
        assert resolve_device("auto") == torch.device("cpu")
        with pytest.raises(GPT2Error, match="CUDA is not available"):
            resolve_device("cuda:1")
        with pytest.raises(GPT2Error, match="MPS is not available"):
            resolve_device("mps")
    elif torch.cuda.is_available():
        assert resolve_device("cuda", local_rank=0) == torch.device("cuda", 0)  # torchrun's LOCAL_RANK picks the GPU


def test_model_device_is_where_the_weights_are(model):
    assert model_device(model) == torch.device("cpu")
    assert model_device(torch.nn.ReLU()) == torch.device("cpu")  # no weights: cpu
    with torch.device("meta"):
        assert model_device(torch.nn.Linear(2, 2)) == torch.device("meta")
    assert model_device(model, "meta") == torch.device("meta")  # an explicit device wins


def test_amp_dtype_resolution():
    cpu = torch.device("cpu")
    assert resolve_amp_dtype("auto", cpu) is None  # fp32 on CPU: bf16 autocast is slower there
    assert resolve_amp_dtype("fp32", cpu) is None
    assert resolve_amp_dtype("bf16", cpu) is torch.bfloat16
    with pytest.raises(GPT2Error, match="--autocast fp16 needs a CUDA GPU"):
        resolve_amp_dtype("fp16", cpu)
    with pytest.raises(GPT2Error, match="--autocast 'int8'"):
        resolve_amp_dtype("int8", cpu)
    if torch.cuda.is_available():
        expected = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        assert resolve_amp_dtype("auto", torch.device("cuda")) is expected


def test_autocast_runs_matmuls_in_the_dtype_or_not_at_all():
    a, b = torch.randn(4, 4), torch.randn(4, 4)
    with autocast("cpu", torch.bfloat16):
        assert (a @ b).dtype == torch.bfloat16
    for full_precision in (None, torch.float32):
        with autocast(torch.device("cpu"), full_precision):
            assert not torch.is_autocast_enabled("cpu")
            assert (a @ b).dtype == torch.float32


# --------------------------------------------------------------------------- process group and collectives


def test_single_process_context_and_collectives_are_identities(monkeypatch):
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    ctx = setup_distributed("cpu")
    assert ctx == DistContext() and (ctx.is_main, ctx.distributed) == (True, False)
    assert not dist.is_initialized()  # one process: no process group
    value = torch.tensor(2.5)
    assert all_reduce_mean(value, ctx) is value and any_rank(True, ctx) and not any_rank(False, ctx)
    assert all_gather_objects({"a": 1}, ctx) == [{"a": 1}] and broadcast_from_main("x", ctx) == "x"
    barrier(ctx)
    assert rank_and_world_size() == (0, 1)
    assert all_reduce_sum([1, 2.5], "cpu") == [1.0, 2.5]
    teardown_distributed()  # a no-op without a process group


@pytest.mark.parametrize("value", ["soon", "0", "-5", "inf", "nan"])
def test_process_group_timeout_must_be_a_positive_number_of_seconds(monkeypatch, value):
    monkeypatch.setenv("GPT2_DIST_TIMEOUT", value)
    with pytest.raises(GPT2Error, match=rf"^\$GPT2_DIST_TIMEOUT must be a positive number of seconds, got '{value}'$"):
        join_process_group(torch.device("cpu"))
    assert not dist.is_initialized()


def test_collectives_over_a_real_group(gloo_group):
    # world_size 1 inside a real group: the same values, but through torch.distributed
    assert rank_and_world_size() == (0, 1)
    assert all_reduce_sum([3, 2**53], "cpu") == [3.0, float(2**53)]  # float64 keeps large counts exact
    ctx = DistContext(world_size=1)
    assert all_reduce_mean(torch.tensor(1.5), ctx).item() == 1.5


# --------------------------------------------------------------------------- unwrap_model on real wrappers


def test_unwrap_plain_and_compiled(model):
    assert unwrap_model(model) is model
    compiled = torch.compile(model)  # building the wrapper is lazy and cheap; it is never run here
    assert unwrap_model(compiled) is model


def test_unwrap_ddp_in_either_order_with_compile(model, gloo_group):
    ddp = DDP(model)
    assert unwrap_model(ddp) is model
    assert unwrap_model(DDP(torch.compile(model))) is model  # the order the trainer builds
    assert unwrap_model(torch.compile(DDP(model))) is model
    assert unwrap_model(torch.compile(DDP(torch.compile(model)))) is model


def test_wrap_model_builds_what_unwrap_model_undoes(model, gloo_group):
    runner = wrap_model(model, DistContext(world_size=2), fsdp=False, compile_model=True)  # world_size 2: wrap in DDP
    assert isinstance(runner, DDP) and unwrap_model(runner) is model
    assert wrap_model(model, DistContext(), fsdp=False, compile_model=False) is model
    with gradient_sync(runner, model, enabled=False):
        assert not runner.require_backward_grad_sync  # DDP's no_sync
    assert runner.require_backward_grad_sync


def test_unwrap_fsdp(gloo_group):
    from torch.distributed.fsdp import FullyShardedDataParallel, fully_shard

    torch.manual_seed(0)
    sharded = GPT(GPTConfig.named("tiny"))
    fully_shard(sharded)  # FSDP2 changes the class in place to a GPT subclass: nothing to strip
    assert unwrap_model(sharded) is sharded and isinstance(sharded, GPT)
    assert unwrap_model(torch.compile(sharded)) is sharded
    plain = GPT(GPTConfig.named("tiny"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "switching to NO_SHARD since the world size is 1"
        fsdp1 = FullyShardedDataParallel(plain, device_id=torch.device("cpu"))
    assert unwrap_model(fsdp1) is plain
    assert unwrap_model(DDP(torch.compile(fsdp1))) is plain


def test_unwrap_rejects_what_is_not_a_gpt(model, gloo_group):
    with pytest.raises(GPT2Error, match="expected a gpt2 GPT model .* got Linear$"):
        unwrap_model(torch.nn.Linear(2, 2))
    with pytest.raises(GPT2Error, match="got Linear inside DistributedDataParallel"):
        unwrap_model(DDP(torch.compile(torch.nn.Linear(2, 2))))


def test_save_model_unwraps_ddp_of_compiled(tmp_path, model, gloo_group):
    runner = DDP(torch.compile(model))
    assert next(iter(runner.state_dict())).startswith("module._orig_mod.")  # what a naive save would write
    assert_same_weights(load_checkpoint(save_model(tmp_path / "ddp_compiled", runner)), model)
    assert_same_weights(load_checkpoint(save_model(tmp_path / "compiled_ddp", torch.compile(DDP(model)))), model)
