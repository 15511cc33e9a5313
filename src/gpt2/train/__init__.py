"""Training: ``gpt2 train`` / ``train.py`` on 1..N GPUs or CPU processes (torchrun), with exact resume.

``gpt2.train.config``       TrainConfig, per-size defaults, --config files
``gpt2.train.schedule``     warmup + cosine learning rate
``gpt2.train.distributed``  torchrun detection, process groups, DDP / FSDP2 wrapping
``gpt2.train.state``        checkpoint save / resume (model, optimizer, RNG, data position)
``gpt2.train.trainer``      the loop
``gpt2.train.hooks``        in-loop validation loss, HellaSwag and samples
``gpt2.train.runlog``       metrics.jsonl, run.json, console lines, pre-flight checks
``gpt2.train.mfu``          peak FLOP/s table and MFU
``gpt2.train.cli``          the ``gpt2 train`` command
"""

from gpt2.train.config import TrainConfig
from gpt2.train.trainer import train

__all__ = ["TrainConfig", "train"]
