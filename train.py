"""Seed-compatible entry point: ``python train.py`` or ``torchrun --standalone --nproc_per_node=8 train.py``.

Same as ``gpt2 train`` (all its options work here); with no options it runs the GPT-2 124M
recipe of the seed on the dataset prepared by ``gpt2 prepare``. See docs/training.md.
"""

import sys

from gpt2.cli import main

if __name__ == "__main__":
    sys.exit(main(["train", *sys.argv[1:]]))
