"""Training: ``gpt2 train`` / ``train.py`` on 1..N GPUs or CPU processes (torchrun), with exact resume.

``gpt2.train.config``       TrainConfig, per-size defaults, --config files
``gpt2.train.schedule``     warmup + cosine learning rate
``gpt2.train.distributed``  torchrun detection, process groups, DDP / FSDP2 wrapping
``gpt2.train.state``        checkpoint save / resume (model, optimizer, RNG, data position)
``gpt2.train.trainer``      the loop
``gpt2.train.hooks``        in-loop validation loss, HellaSwag and samples
``gpt2.train.runlog``       metrics.jsonl, run.json, console lines, pre-flight checks
``gpt2.train.mfu``          peak FLOP/s table and MFU
``gpt2.train.options``      the flags, help and docs table generated from the TrainConfig fields
``gpt2.train.cli``          the ``gpt2 train`` command

Names resolve on first use (lazy), so ``gpt2 train --help`` does not import torch.
"""

from typing import TYPE_CHECKING

from gpt2._lazy import lazy_exports

if TYPE_CHECKING:  # the exports; at run time imported on first use (gpt2._lazy)
    from gpt2.train.config import TrainConfig  # noqa: F401
    from gpt2.train.trainer import train  # noqa: F401

__getattr__, __dir__, __all__ = lazy_exports(__name__)
