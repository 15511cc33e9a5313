"""The torchrun process group and every collective the package uses.

One process per device. ``torchrun`` sets RANK / LOCAL_RANK / WORLD_SIZE (and MASTER_ADDR/PORT);
without them the run is a single process and nothing here touches torch.distributed. NCCL is
used for CUDA devices, gloo for CPU (tests, laptops).

Two kinds of collectives: training passes its :class:`DistContext` (``all_reduce_mean``,
``any_rank``, ``all_gather_objects``, ``broadcast_from_main``, ``barrier``); evaluation asks the
process group itself (``rank_and_world_size``, ``all_reduce_sum``), so ``gpt2.evaluate`` works the
same whoever initialised it (``gpt2 eval``, the trainer, a test). Every one is the identity in a
single process.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from gpt2.errors import GPT2Error
from gpt2.runtime.device import resolve_device


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


def setup_distributed(device_spec: str) -> DistContext:
    """Initialise the process group when launched by torchrun; return this process's context.

    ``device_spec`` is a ``--device`` value (see :func:`gpt2.runtime.device.resolve_device`).
    """
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


# ---------------------------------------------------------------------------------------------
# Collectives of the training loop (given its DistContext).


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


# ---------------------------------------------------------------------------------------------
# Collectives of evaluation (whatever process group is initialised, if any).


def rank_and_world_size() -> tuple[int, int]:
    """(rank, world_size) of this process; (0, 1) when torch.distributed is not initialised."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def all_reduce_sum(values: Sequence[float], device: torch.device | str) -> list[float]:
    """Element-wise sum of ``values`` over all ranks (the values themselves when not distributed).

    Sums are done in float64 so integer counts up to 2**53 stay exact. NCCL can only reduce
    CUDA tensors, so under the nccl backend the buffer goes to the current CUDA device.
    """
    if not (dist.is_available() and dist.is_initialized()):
        return [float(v) for v in values]
    if dist.get_backend() == "nccl":
        device = torch.device("cuda", torch.cuda.current_device())
    buffer = torch.tensor([float(v) for v in values], dtype=torch.float64, device=device)
    dist.all_reduce(buffer, op=dist.ReduceOp.SUM)
    return buffer.tolist()
