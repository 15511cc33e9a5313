"""Where and how a model runs: devices, precision, processes and wrappers. Used by every command.

``gpt2.runtime.device``       ``--device`` / ``--dtype`` resolution, the device a model is on, autocast
``gpt2.runtime.distributed``  the torchrun process group (DistContext) and every collective we use
``gpt2.runtime.parallel``     DDP / FSDP2 / torch.compile wrapping, gradient sync, and ``unwrap_model``

This layer sits just above the model: it may import ``gpt2.model``, ``gpt2.config`` and
``gpt2.errors``, never train / evaluate / generate / app, so all of those can share it.
"""

from gpt2.runtime.device import autocast, model_device, resolve_amp_dtype, resolve_device
from gpt2.runtime.distributed import (
    DistContext,
    all_gather_objects,
    all_reduce_mean,
    all_reduce_sum,
    any_rank,
    barrier,
    broadcast_from_main,
    rank_and_world_size,
    setup_distributed,
    teardown_distributed,
)
from gpt2.runtime.parallel import gradient_sync, unwrap_model, wrap_model

__all__ = [
    "DistContext",
    "all_gather_objects",
    "all_reduce_mean",
    "all_reduce_sum",
    "any_rank",
    "autocast",
    "barrier",
    "broadcast_from_main",
    "gradient_sync",
    "model_device",
    "rank_and_world_size",
    "resolve_amp_dtype",
    "resolve_device",
    "setup_distributed",
    "teardown_distributed",
    "unwrap_model",
    "wrap_model",
]
