"""The little torch.distributed glue evaluation needs: who am I, and summing counts over ranks."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.distributed as dist


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
