"""Seed-compatible entry point: ``python hellaswag.py -m gpt2 -d cuda``.

Same as ``gpt2 eval hellaswag`` (all its options work here, e.g. ``--data FILE --limit 500 --json``):
``-m/--model`` is a hub name (gpt2, gpt2-medium, ...), a Hugging Face directory, one of our
checkpoints or a run directory; ``-d/--device`` is auto, cpu, cuda, cuda:N or mps. It reports
acc, acc_norm (lm-evaluation-harness) and acc_norm_token (the seed's / build-nanogpt's metric).
See docs/evaluation.md.
"""

import argparse
import sys

from gpt2.cli import main

if __name__ == "__main__":
    seed_options = argparse.ArgumentParser(add_help=False)
    seed_options.add_argument("-m", "--model", "--model_type", default="gpt2")
    seed_options.add_argument("-d", "--device", default="auto")
    known, rest = seed_options.parse_known_args()
    sys.exit(main(["eval", "hellaswag", "--model", known.model, "--device", known.device, *rest]))
