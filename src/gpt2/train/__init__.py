"""Training: ``gpt2 train`` / ``train.py`` on 1..N GPUs or CPU processes (torchrun), with exact resume.

``gpt2.train.config``       TrainConfig (its field defaults: the 124M recipe), --config files
``gpt2.train.recipes``      the named recipes, fine-tuning, and the one precedence recipe < --config < flags
``gpt2.train.schedule``     warmup + cosine learning rate
``gpt2.train.state``        the stateful pieces of a checkpoint: model, optimizer, RNG, train state (+ data position)
``gpt2.train.checkpointer`` saves / restores those pieces as one ``step_N/`` directory
``gpt2.train.trainer``      the wiring and the loop
``gpt2.train.hooks``        in-loop validation loss, HellaSwag and samples
``gpt2.train.console``      metrics rows and console lines
``gpt2.train.signals``      SIGTERM / Ctrl-C: finish the step, save, exit
``gpt2.train.mfu``          peak FLOP/s table and MFU
``gpt2.train.options``      the flags and their help, generated from the TrainConfig fields
``gpt2.train.cli``          the ``gpt2 train`` command

Devices, autocast, the torchrun process group and DDP / FSDP2 wrapping live in ``gpt2.runtime``
(shared with evaluation and generation, which never import ``gpt2.train``).
The run directory itself (metrics.jsonl, run.json, step_N/, latest) is :mod:`gpt2.store.rundir`.
Names resolve on first use (lazy), so ``gpt2 train --help`` does not import torch.
"""

from typing import TYPE_CHECKING

from gpt2._lazy import lazy_exports

if TYPE_CHECKING:  # the exports; at run time imported on first use (gpt2._lazy)
    from gpt2.train.config import TrainConfig  # noqa: F401
    from gpt2.train.trainer import train  # noqa: F401

__getattr__, __dir__, __all__ = lazy_exports(__name__)
