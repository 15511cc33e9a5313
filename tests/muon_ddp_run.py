"""Run by test_train_distributed under torchrun: ``gpt2 train ARGS`` (with Muon), then every rank's weights
compared bitwise with rank 0's. Prints ``ranks identical: True`` on rank 0 when they all match."""

from __future__ import annotations

import sys

import torch
import torch.distributed as dist

from gpt2.cli import build_parser
from gpt2.runtime.distributed import setup_distributed, teardown_distributed
from gpt2.train.cli import options_from_args
from gpt2.train.recipes import build_config
from gpt2.train.trainer import Trainer

config = build_config(options_from_args(build_parser("train").parse_args(["train", *sys.argv[1:]])), "cpu")
ctx = setup_distributed(config.device)
trainer = Trainer(config, ctx)
trainer.run()
flat = torch.cat([p.detach().flatten() for p in trainer.model.parameters()])
gathered = [torch.empty_like(flat) for _ in range(ctx.world_size)]
dist.all_gather(gathered, flat)
if ctx.is_main:
    print("ranks identical:", all(torch.equal(gathered[0], other) for other in gathered))
teardown_distributed()
