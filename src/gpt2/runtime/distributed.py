"""The torchrun process group and every collective the package uses.

One process per device. ``torchrun`` sets RANK / LOCAL_RANK / WORLD_SIZE (and MASTER_ADDR/PORT);
without them the run is a single process and nothing here touches torch.distributed. NCCL is
used for CUDA devices, gloo for CPU (tests, laptops).

Two kinds of collectives: training passes its :class:`DistContext` (``all_reduce_mean``,
``any_rank``, ``all_gather_objects``, ``broadcast_from_main``, ``barrier``); evaluation asks the
process group itself (``rank_and_world_size``, ``all_reduce_sum``), so ``gpt2.evaluate`` works the
same whoever initialised it (``gpt2 eval``, the trainer, a test). Every one is the identity in a
single process.

Fault tolerance under ``torchrun --max-restarts N``: a rank that waits longer than ``$GPT2_DIST_TIMEOUT``
seconds (default 600) for the others, to join or in one collective, fails, so the agent restarts the
group instead of it hanging; and a worker dies with its agent (``kill -9`` of torchrun leaves no orphan
still training and writing).
"""

from __future__ import annotations

import ctypes
import math
import os
import signal
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
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
    die_with_torchrun_agent()
    if world_size > 1:
        if device.type == "mps":
            raise GPT2Error("multi-process training is not supported on MPS; use --device cpu or a CUDA machine")
        join_process_group(device)
    elif device.type == "cuda":
        torch.cuda.set_device(device)
    return DistContext(rank=rank, local_rank=local_rank, world_size=world_size, device=device)


TIMEOUT_ENV = "GPT2_DIST_TIMEOUT"
DEFAULT_TIMEOUT_SECONDS = 600.0  # torch's NCCL default; a checkpoint save of the largest model fits in it
PR_SET_PDEATHSIG = 1  # linux/prctl.h


def join_process_group(device: torch.device) -> None:
    """Start this torchrun worker's process group (nccl on CUDA, gloo on CPU) unless one is running."""
    text = os.environ.get(TIMEOUT_ENV) or str(DEFAULT_TIMEOUT_SECONDS)
    try:
        seconds = float(text)
    except ValueError:
        seconds = math.nan
    if not 0 < seconds < math.inf:
        raise GPT2Error(f"${TIMEOUT_ENV} must be a positive number of seconds, got {text!r}")
    if dist.is_initialized():
        return
    timeout = timedelta(seconds=seconds)
    die_with_torchrun_agent()
    options: dict[str, Any] = {"timeout": timeout}
    if os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True":
        # torchrun keeps one store for all restarts of the workers and (torch 2.13) no longer separates their keys:
        # a restarted group would read the addresses of the one that died (connection refused, or a hang).
        store = dist.TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), timeout=timeout)
        attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
        options["store"] = dist.PrefixStore(f"gpt2/attempt_{attempt}/", store)
        options |= {"rank": int(os.environ["RANK"]), "world_size": int(os.environ["WORLD_SIZE"])}
    if device.type == "cuda":
        torch.cuda.set_device(device)
        dist.init_process_group(backend="nccl", device_id=device, **options)
    else:
        dist.init_process_group(backend="gloo", **options)


def die_with_torchrun_agent() -> None:
    """Under torchrun on Linux: have the kernel SIGKILL this worker when its agent dies.

    torchrun starts workers in sessions of their own, so a ``kill -9`` of the agent left them training and writing.
    Checkpoints are written atomically, so being killed at any moment is safe.
    """
    if "TORCHELASTIC_RUN_ID" in os.environ and sys.platform == "linux":
        ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


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
