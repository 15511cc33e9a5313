"""Process groups, device choice and model wrapping (DDP or FSDP2) for ``gpt2 train``.

One process per device. ``torchrun`` sets RANK / LOCAL_RANK / WORLD_SIZE (and MASTER_ADDR/PORT);
without them the run is a single process and nothing here touches torch.distributed. NCCL is
used for CUDA devices, gloo for CPU (tests, laptops).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
import torch.nn as nn

from gpt2.errors import GPT2Error


@dataclass
class DistContext:
    """Where this process sits in the job: ranks are global, local_rank picks the GPU on its node."""

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the only process that writes files and prints."""
        return self.rank == 0


def resolve_device(spec: str, local_rank: int = 0) -> torch.device:
    """``auto`` -> cuda > mps > cpu; ``cuda`` under torchrun -> ``cuda:LOCAL_RANK``."""
    if spec == "auto":
        if torch.cuda.is_available():
            spec = "cuda"
        elif getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            spec = "mps"
        else:
            spec = "cpu"
    try:
        device = torch.device(spec)
    except RuntimeError:
        raise GPT2Error(f"--device {spec!r} is not a device (use auto, cpu, cuda, cuda:N or mps)") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise GPT2Error(f"--device {spec}: CUDA is not available in this PyTorch build / machine")
        index = local_rank if device.index is None else device.index
        if index >= torch.cuda.device_count():
            raise GPT2Error(f"--device cuda:{index}: only {torch.cuda.device_count()} GPU(s) visible")
        device = torch.device("cuda", index)
    elif device.type == "mps" and not torch.backends.mps.is_available():
        raise GPT2Error("--device mps: Apple MPS is not available on this machine")
    elif device.type not in ("cpu", "cuda", "mps"):
        raise GPT2Error(f"--device {spec!r}: only cpu, cuda and mps are supported")
    return device


def setup_distributed(device_spec: str) -> DistContext:
    """Initialise the process group when launched by torchrun; return this process's context."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = resolve_device(device_spec, local_rank)
    if world_size > 1:
        if device.type == "mps":
            raise GPT2Error("multi-process training is not supported on MPS; use --device cpu or a CUDA machine")
        if not dist.is_initialized():
            if device.type == "cuda":
                torch.cuda.set_device(device)
                dist.init_process_group(backend="nccl", device_id=device)
            else:
                dist.init_process_group(backend="gloo")
    elif device.type == "cuda":
        torch.cuda.set_device(device)
    return DistContext(rank=rank, local_rank=local_rank, world_size=world_size, device=device)


def teardown_distributed() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def wrap_model(model: nn.Module, ctx: DistContext, fsdp: bool, compile_model: bool) -> nn.Module:
    """The module to run forward/backward through: compiled, then DDP-wrapped, or sharded with FSDP2.

    ``model`` itself stays usable for evaluation and sampling (it shares the parameters): with
    FSDP it is sharded in place (every rank must then call it together), otherwise it is plain.
    """
    if fsdp:
        from torch.distributed.fsdp import fully_shard

        # Shard each block separately so only one block's full weights exist at a time, then the rest
        # (embeddings, final norm, tied head) at the root.
        for block in model.transformer.h:
            fully_shard(block)
        fully_shard(model)
        return torch.compile(model) if compile_model else model
    runner = torch.compile(model) if compile_model else model
    if ctx.distributed:
        from torch.nn.parallel import DistributedDataParallel as DDP

        device_ids = [ctx.device.index] if ctx.device.type == "cuda" else None
        runner = DDP(runner, device_ids=device_ids)
    return runner


@contextlib.contextmanager
def gradient_sync(runner: nn.Module, model: nn.Module, enabled: bool) -> Iterator[None]:
    """Skip the gradient all-reduce on accumulation micro-steps; only the last one synchronises."""
    if enabled:
        yield
    elif hasattr(runner, "no_sync"):  # DDP
        with runner.no_sync():
            yield
    elif hasattr(model, "set_requires_gradient_sync"):  # FSDP2
        model.set_requires_gradient_sync(False)
        try:
            yield
        finally:
            model.set_requires_gradient_sync(True)
    else:
        yield


def all_reduce_mean(value: torch.Tensor, ctx: DistContext) -> torch.Tensor:
    """Mean of ``value`` over ranks (gloo has no AVG, so SUM / world)."""
    if not ctx.distributed:
        return value
    value = value.clone()
    dist.all_reduce(value, op=dist.ReduceOp.SUM)
    return value / ctx.world_size


def any_rank(flag: bool, ctx: DistContext) -> bool:
    """True when ``flag`` is set on at least one rank (e.g. a SIGTERM that reached only some processes)."""
    if not ctx.distributed:
        return flag
    value = torch.tensor([1.0 if flag else 0.0], device=ctx.device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item() > 0)


def all_gather_objects(obj: Any, ctx: DistContext) -> list[Any]:
    """``obj`` of every rank, in rank order, on every rank (small objects such as RNG states; pickled in memory)."""
    if not ctx.distributed:
        return [obj]
    out: list[Any] = [None] * ctx.world_size
    dist.all_gather_object(out, obj)
    return out


def broadcast_from_main(obj: Any, ctx: DistContext) -> Any:
    """Rank 0's ``obj`` on every rank."""
    if not ctx.distributed:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def barrier(ctx: DistContext) -> None:
    if ctx.distributed:
        dist.barrier()
