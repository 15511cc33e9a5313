"""Model wrappers: DDP / FSDP2 / torch.compile around a GPT for training, and the way back to the GPT.

The trainer runs forward/backward through ``wrap_model``'s result (DDP(compile(model)), or the
FSDP2-sharded model, maybe compiled); evaluation, sampling and saving want the plain ``GPT``
inside, which :func:`unwrap_model` finds whatever the order and nesting of the wrappers.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from gpt2.errors import GPT2Error
from gpt2.model import GPT
from gpt2.runtime.distributed import DistContext


def wrap_model(model: GPT, ctx: DistContext, fsdp: bool, compile_model: bool) -> nn.Module:
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
        return torch.compile(model) if compile_model else model  # type: ignore[return-value]  # a Module in, a Module out
    runner: nn.Module = torch.compile(model) if compile_model else model  # type: ignore[assignment]  # as above
    if ctx.distributed:
        device_ids = [ctx.device.index] if ctx.device.type == "cuda" else None
        runner = DistributedDataParallel(runner, device_ids=device_ids)
    return runner


@contextlib.contextmanager
def gradient_sync(runner: nn.Module, model: nn.Module, enabled: bool) -> Iterator[None]:
    """Skip the gradient all-reduce on accumulation micro-steps; only the last one synchronises."""
    if enabled:
        yield
    elif isinstance(runner, DistributedDataParallel):
        with runner.no_sync():
            yield
    elif hasattr(model, "set_requires_gradient_sync"):  # FSDP2 (fully_shard) adds it to the model's class
        model.set_requires_gradient_sync(False)  # type: ignore[operator]  # mypy sees Module.__getattr__
        try:
            yield
        finally:
            model.set_requires_gradient_sync(True)  # type: ignore[operator]
    else:
        yield


def _inner_module(module: nn.Module) -> nn.Module | None:
    """The module directly inside a torch.compile / DDP / FSDP1 wrapper; None when ``module`` is no wrapper.

    FSDP2 (``fully_shard``) is not a wrapper: it changes the module's class in place to a subclass
    of the original, so a sharded GPT is still a GPT. The torch.compile and FSDP1 classes are looked
    up only if their modules are loaded (a wrapper of that kind cannot exist otherwise), because
    importing torch._dynamo costs over a second.
    """
    if isinstance(module, DistributedDataParallel):
        return module.module
    eval_frame = sys.modules.get("torch._dynamo.eval_frame")
    if eval_frame is not None and isinstance(module, eval_frame.OptimizedModule):
        return module._orig_mod
    fsdp = sys.modules.get("torch.distributed.fsdp")
    if fsdp is not None and isinstance(module, fsdp.FullyShardedDataParallel):
        return module.module
    return None


def unwrap_model(module: nn.Module) -> GPT:
    """The ``GPT`` inside any nesting of torch.compile (``_orig_mod``), DDP and FSDP (``.module``) wrappers.

    Evaluation, sampling and saving run the plain module: DDP's forward would broadcast buffers,
    compiled code would recompile for every new padded length, and the wrappers prefix the
    state-dict keys. Raises GPT2Error when what is inside is not a GPT.
    """
    inner = module
    while not isinstance(inner, GPT):
        wrapped = _inner_module(inner)
        if wrapped is None:
            where = f" inside {type(module).__name__}" if inner is not module else ""
            raise GPT2Error(
                f"expected a gpt2 GPT model (alone or inside torch.compile / DDP / FSDP wrappers), "
                f"got {type(inner).__name__}{where}"
            )
        inner = wrapped
    return inner
