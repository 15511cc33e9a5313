"""Training: ``gpt2 train`` / ``train.py`` on 1..N GPUs or CPU processes (torchrun), with exact resume.

``gpt2.train.config``       TrainConfig (its field defaults: the 124M recipe), --config files
``gpt2.train.recipes``      the named recipes, fine-tuning, and the one precedence recipe < --config < flags
``gpt2.train.schedule``     warmup + cosine learning rate
``gpt2.train.state``        the trainer's checkpoint component (step, clock, data position) and the resume checks
``gpt2.train.trainer``      the wiring and the loop
``gpt2.train.hooks``        in-loop evaluation (the slots of gpt2.evaluate.slots) and samples
``gpt2.train.console``      metrics rows and console lines
``gpt2.train.signals``      SIGTERM / Ctrl-C: finish the step, save, exit
``gpt2.train.mfu``          peak FLOP/s table and MFU
``gpt2.train.options``      the flags and their help, generated from the TrainConfig fields
``gpt2.train.cli``          the ``gpt2 train`` command

Devices, autocast, the torchrun process group and DDP / FSDP2 wrapping live in ``gpt2.runtime``
(shared with evaluation and generation, which never import ``gpt2.train``).
The run directory (metrics.jsonl, run.json, step_N/, latest) is :mod:`gpt2.store.rundir`; the checkpointer
that saves model, optimizer, RNG and train state as one ``step_N/`` is :mod:`gpt2.store.checkpointer`.
Names resolve on first use (lazy), so ``gpt2 train --help`` does not import torch.
"""

from gpt2._lazy import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(
    __name__, {"gpt2.train.config": ("TrainConfig",), "gpt2.train.trainer": ("train",)}
)
