"""Peak memory of a piece of work: the most bytes held by live tensors at any moment while it runs.

On CUDA the caching allocator keeps this statistic (``torch.cuda.max_memory_allocated``). On CPU
PyTorch keeps none and ``tracemalloc`` does not see its allocations; the process's peak RSS does,
but it also counts the allocator's cached and fragmented pages, which made repeated measurements of
the same step differ by a few percent, as much as the ours/reference gap. So on CPU we count tensor
storage ourselves: a dispatch mode sees every tensor an operator returns (forward, backward and
optimizer alike), adds its storage's size once, and subtracts it when the storage dies. The result is
exact and repeatable, and means the same thing on both devices. Scratch buffers a kernel allocates
and frees internally are not counted (on either device).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves


class TensorMemoryTracker(TorchDispatchMode):
    """Tracks the bytes of live tensor storages on one device type; ``peak_bytes`` is the maximum seen.

    Only storages created while the mode is active are counted (views and in-place results share a
    storage and count once). A storage's death is noticed at the next operator, before that operator's
    outputs are added, so the peak is never inflated by memory that was already free.
    """

    def __init__(self, device_type: str = "cpu"):
        super().__init__()
        self.device_type = device_type
        self.live: dict[int, tuple[int, int]] = {}  # data pointer -> (weak reference to the storage, bytes)
        self.current_bytes = 0
        self.peak_bytes = 0

    def _forget_dead_storages(self) -> None:
        dead = [ptr for ptr, (ref, _) in self.live.items() if torch.UntypedStorage._expired(ref)]
        for ptr in dead:
            ref, nbytes = self.live.pop(ptr)
            torch.UntypedStorage._free_weak_ref(ref)
            self.current_bytes -= nbytes

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        self._forget_dead_storages()
        for tensor in tree_leaves(out):
            if not isinstance(tensor, torch.Tensor) or tensor.device.type != self.device_type:
                continue
            storage = tensor.untyped_storage()
            nbytes = storage.nbytes()
            if nbytes == 0 or storage.data_ptr() in self.live:
                continue
            self.live[storage.data_ptr()] = (storage._weak_ref(), nbytes)
            self.current_bytes += nbytes
            self.peak_bytes = max(self.peak_bytes, self.current_bytes)
        return out

    def __exit__(self, *exc: Any) -> None:
        super().__exit__(*exc)
        for ref, _ in self.live.values():
            torch.UntypedStorage._free_weak_ref(ref)
        self.live.clear()


def peak_memory_bytes(work: Callable[[], Any], device: torch.device | str) -> int:
    """Peak bytes of tensors allocated while ``work()`` runs (those it creates itself, such as a model, included).

    CPU: counted by :class:`TensorMemoryTracker` (adds Python work per operator: do not time under it).
    CUDA: ``max_memory_allocated`` above what was allocated before.
    """
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        work()
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device) - before
    with TensorMemoryTracker(device.type) as tracker:
        work()
    return tracker.peak_bytes
