"""``gpt2 train``: command-line options -> TrainConfig -> the training loop.

Every option defaults to None here so that the precedence is explicit: a flag on the command
line beats a value from ``--config FILE``, which beats the per-size default (config.SIZE_DEFAULTS),
which beats the TrainConfig default.
"""

from __future__ import annotations

import argparse
from typing import Any

from gpt2.train.config import TRAIN_FIELDS, build_config, read_config_file


def _flag_pair(parser: argparse.ArgumentParser, name: str, help_text: str) -> None:
    """--name / --no-name, default None (= decided later)."""
    parser.add_argument(f"--{name}", dest=name.replace("-", "_"), action=argparse.BooleanOptionalAction, help=help_text)


def add_train_arguments(parser: argparse.ArgumentParser) -> None:
    model = parser.add_argument_group("model and data")
    model.add_argument("--size", help="model size from the registry: 124M (default), 350M, 774M, 1558M, mini, tiny")
    model.add_argument(
        "--config",
        metavar="FILE",
        help='JSON file of options (TrainConfig names, e.g. {"lr": 3e-4}) and/or a model shape (GPTConfig fields)',
    )
    model.add_argument("--data", metavar="DIR", help="prepared dataset directory (gpt2 prepare)")
    model.add_argument("--out", metavar="RUN_DIR", help="run directory: checkpoints, metrics.jsonl, run.json")

    opt = parser.add_argument_group("optimisation (defaults: the GPT-2 124M recipe)")
    opt.add_argument("--steps", type=int, help="optimizer steps (124M: 19073, ~10B tokens)")
    opt.add_argument("--batch-tokens", type=int, help="tokens per optimizer step over all ranks (124M: 524288)")
    opt.add_argument("--micro-batch", type=int, help="sequences per forward pass per rank (124M: 64 on GPU, 8 on CPU)")
    opt.add_argument("--seq-len", type=int, help="tokens per sequence (default: min(block size, 1024))")
    opt.add_argument("--lr", type=float, help="peak learning rate (124M: 6e-4)")
    opt.add_argument("--min-lr-ratio", type=float, help="final lr as a fraction of --lr (0.1)")
    opt.add_argument("--warmup-steps", type=int, help="linear warmup steps (124M: 715)")
    opt.add_argument("--weight-decay", type=float, help="AdamW weight decay on >=2-D weights (0.1)")
    opt.add_argument("--grad-clip", type=float, help="max global gradient norm, 0 = off (1.0)")
    opt.add_argument("--beta1", type=float, help="AdamW beta1 (0.9)")
    opt.add_argument("--beta2", type=float, help="AdamW beta2 (0.95)")
    opt.add_argument("--seed", type=int, help="seed for init and data order (1337)")
    _flag_pair(opt, "shuffle", "shuffle the shard order every epoch (default: off, as the seed)")

    hw = parser.add_argument_group("hardware")
    hw.add_argument("--device", help="auto (cuda > mps > cpu), cpu, cuda, cuda:N, mps")
    hw.add_argument("--dtype", choices=["auto", "bf16", "fp16", "fp32"], help="autocast dtype (auto: bf16 on GPUs)")
    _flag_pair(hw, "compile", "torch.compile the model (default: on for CUDA)")
    _flag_pair(hw, "fused-loss", "chunked output layer + loss without the full logits (faster on CPU; default off)")
    hw.add_argument("--fsdp", action="store_true", default=None, help="shard with FSDP2 instead of DDP (774M+)")
    hw.add_argument("--peak-flops", type=float, help="peak FLOP/s of one device for MFU (default: GPU table)")

    loop = parser.add_argument_group("evaluation, sampling and checkpoints (every N steps, 0 = never)")
    loop.add_argument("--eval-every", type=int, help="validation loss every N steps (250)")
    loop.add_argument("--eval-tokens", type=int, help="validation tokens per evaluation")
    loop.add_argument("--hellaswag-every", type=int, help="HellaSwag every N steps (default: --eval-every)")
    loop.add_argument("--hellaswag-limit", type=int, help="HellaSwag examples per evaluation (default: all)")
    loop.add_argument("--hellaswag-path", help="HellaSwag JSONL file (default: the evaluation module's)")
    loop.add_argument("--sample-every", type=int, help="generate samples every N steps (default: --eval-every)")
    loop.add_argument("--sample-prompt", help="prompt for the in-loop samples")
    loop.add_argument("--sample-tokens", type=int, help="tokens per in-loop sample (32)")
    loop.add_argument("--num-samples", type=int, help="samples per in-loop generation (2)")
    loop.add_argument("--save-every", type=int, help="checkpoint every N steps (1000); always at the end")
    loop.add_argument("--keep-last", type=int, help="checkpoints to keep, 0 = all (3)")
    _flag_pair(loop, "resume", "continue from RUN_DIR/latest (default: when it exists); --no-resume refuses to")
    loop.add_argument("--max-bad-steps", type=int, help="abort after N non-finite losses in a row (5)")
    loop.add_argument("--log-every", type=int, help="console line every N steps (1)")


def options_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """Merge ``--config FILE`` values with the explicitly given flags (flags win)."""
    options: dict[str, Any] = read_config_file(args.config) if getattr(args, "config", None) else {}
    for name in sorted(TRAIN_FIELDS - {"model"}):
        value = getattr(args, name, None)
        if value is not None:
            options[name] = value
    return options


def run_train(args: argparse.Namespace) -> int:
    from gpt2.runtime.device import resolve_device
    from gpt2.train.trainer import train

    options = options_from_args(args)
    device_type = resolve_device(options.get("device", "auto")).type
    config = build_config(options, device_type)
    train(config)
    return 0
