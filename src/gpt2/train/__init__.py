"""Training: ``gpt2 train`` / ``train.py`` on 1..N GPUs or CPU processes (torchrun), with exact resume.

``gpt2.train.config``       TrainConfig, per-size defaults, --config files
``gpt2.train.schedule``     warmup + cosine learning rate
``gpt2.train.state``        checkpoint save / resume (model, optimizer, RNG, data position)
``gpt2.train.trainer``      the loop
``gpt2.train.hooks``        in-loop validation loss, HellaSwag and samples
``gpt2.train.runlog``       metrics.jsonl, run.json, console lines, pre-flight checks
``gpt2.train.mfu``          peak FLOP/s table and MFU
``gpt2.train.cli``          the ``gpt2 train`` command

Devices, autocast, the torchrun process group and DDP / FSDP2 wrapping live in ``gpt2.runtime``
(shared with evaluation and generation, which never import ``gpt2.train``).
"""

from gpt2.train.config import TrainConfig
from gpt2.train.trainer import train

__all__ = ["TrainConfig", "train"]
