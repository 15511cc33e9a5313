"""Training hyper-parameters: one dataclass, per-size defaults, and the checks that run before anything starts.

The 124M defaults are the seed's (build-nanogpt) recipe: 2^19-token batches of T=1024, AdamW
beta=(0.9, 0.95), weight decay 0.1, max lr 6e-4 with 715 warmup steps and cosine decay to 10%
over 19,073 steps (~10B tokens), grad clip 1.0. Larger sizes take the GPT-3 paper's (table 2.1)
smaller learning rates; ``tiny``/``mini`` get settings that train in minutes on a CPU.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gpt2.config import GPTConfig
from gpt2.errors import GPT2Error

# Per-size defaults for the options that depend on the model size. Everything not listed here
# takes the TrainConfig field default. "micro_batch_cpu" replaces micro_batch when no GPU is used.
SIZE_DEFAULTS: dict[str, dict[str, Any]] = {
    "124M": dict(lr=6e-4, batch_tokens=2**19, micro_batch=64, micro_batch_cpu=8),
    "350M": dict(lr=3e-4, batch_tokens=2**19, micro_batch=32, micro_batch_cpu=4),
    "774M": dict(lr=2.5e-4, batch_tokens=2**19, micro_batch=16, micro_batch_cpu=2),
    "1558M": dict(lr=2e-4, batch_tokens=2**20, micro_batch=8, micro_batch_cpu=1),
    "mini": dict(
        lr=1e-3, batch_tokens=2**14, micro_batch=16, micro_batch_cpu=16, steps=2000, warmup_steps=100, eval_every=100
    ),
    "tiny": dict(
        lr=3e-3, batch_tokens=2**12, micro_batch=16, micro_batch_cpu=16, steps=200, warmup_steps=20, eval_every=50
    ),
}


@dataclass
class TrainConfig:
    """Everything that defines a training run. Token counts are tokens, steps are optimizer steps."""

    model: GPTConfig = field(default_factory=lambda: GPTConfig.named("124M"))
    size: str | None = "124M"  # registry name the model came from (None for a custom config)
    data: str = "edu_fineweb10B"  # prepared dataset directory (gpt2 prepare; the seed's default name)
    out: str = "runs/gpt2"  # RUN_DIR
    # optimisation (seed recipe)
    steps: int = 19073
    batch_tokens: int = 2**19  # tokens per optimizer step, summed over micro-steps and ranks
    micro_batch: int = 64  # sequences per forward/backward on one rank
    seq_len: int = 1024
    lr: float = 6e-4
    min_lr_ratio: float = 0.1  # the cosine decays to lr * min_lr_ratio
    warmup_steps: int = 715
    weight_decay: float = 0.1
    grad_clip: float = 1.0  # max global grad norm; 0 disables clipping
    beta1: float = 0.9
    beta2: float = 0.95
    seed: int = 1337
    shuffle: bool = False  # shuffle shard order per epoch (the seed reads shards in order)
    # hardware
    device: str = "auto"  # auto | cpu | cuda | cuda:N | mps
    dtype: str = "auto"  # auto | bf16 | fp16 | fp32 (autocast dtype; weights stay fp32)
    compile: bool | None = None  # None = on for CUDA
    # output layer + loss in chunks of rows, never materialising the (B*T, V) logits (gpt2.fused_loss): same loss
    # up to float rounding, faster for small models on CPU; off by default so the seed recipe stays bit-for-bit
    fused_loss: bool = False
    fsdp: bool = False
    peak_flops: float | None = None  # per-device peak FLOP/s for MFU; None = look the GPU up
    # in-loop evaluation, sampling and checkpoints (every N steps; 0 disables)
    eval_every: int = 250
    eval_tokens: int = 10 * 2**19  # validation tokens per evaluation (~5M at 124M, like the seed's 20 x 2^19 / 2)
    hellaswag_every: int | None = None  # None = same as eval_every
    hellaswag_limit: int | None = None  # examples (None = all 10,042)
    hellaswag_path: str | None = None
    sample_every: int | None = None  # None = same as eval_every
    sample_prompt: str = "Hello, I'm a language model,"
    sample_tokens: int = 32
    num_samples: int = 2
    save_every: int = 1000
    keep_last: int = 3  # checkpoints kept in RUN_DIR (0 = keep all)
    resume: bool | None = None  # None = resume when RUN_DIR has a checkpoint; True = must; False = must not
    max_bad_steps: int = 5  # consecutive non-finite losses before the run aborts
    log_every: int = 1  # console line every N steps (metrics.jsonl always gets every step)

    def grad_accum_steps(self, world_size: int) -> int:
        """Micro-steps per optimizer step on each rank: batch_tokens / (micro_batch * seq_len * world_size)."""
        per_micro = self.micro_batch * self.seq_len * world_size
        if self.batch_tokens % per_micro != 0:
            raise GPT2Error(
                f"--batch-tokens {self.batch_tokens} is not divisible by micro-batch x seq-len x world size = "
                f"{self.micro_batch} x {self.seq_len} x {world_size} = {per_micro}; pick --batch-tokens as a "
                f"multiple of {per_micro} (e.g. {max(1, round(self.batch_tokens / per_micro)) * per_micro})"
            )
        return self.batch_tokens // per_micro

    def validate(self, world_size: int = 1) -> None:
        """Raise GPT2Error naming the option when the configuration cannot work."""
        positive = ("steps", "batch_tokens", "micro_batch", "seq_len")
        for name in positive:
            if getattr(self, name) <= 0:
                raise GPT2Error(f"--{name.replace('_', '-')} must be positive, got {getattr(self, name)}")
        non_negative = ("warmup_steps", "eval_every", "save_every", "keep_last", "grad_clip", "weight_decay")
        for name in non_negative:
            if getattr(self, name) < 0:
                raise GPT2Error(f"--{name.replace('_', '-')} must be >= 0, got {getattr(self, name)}")
        if self.seq_len > self.model.block_size:
            raise GPT2Error(
                f"--seq-len {self.seq_len} exceeds the model's context window (block_size {self.model.block_size})"
            )
        if not self.lr > 0:
            raise GPT2Error(f"--lr must be positive, got {self.lr}")
        if not 0 <= self.min_lr_ratio <= 1:
            raise GPT2Error(f"--min-lr-ratio must be in [0, 1], got {self.min_lr_ratio}")
        if self.max_bad_steps < 1:
            raise GPT2Error(f"--max-bad-steps must be >= 1, got {self.max_bad_steps}")
        if self.dtype not in ("auto", "bf16", "fp16", "fp32"):
            raise GPT2Error(f"--dtype must be auto, bf16, fp16 or fp32, got {self.dtype!r}")
        if self.peak_flops is not None and self.peak_flops <= 0:
            raise GPT2Error(f"--peak-flops must be positive, got {self.peak_flops}")
        if self.fsdp and world_size < 2:
            raise GPT2Error("--fsdp needs several processes (launch with torchrun --nproc_per_node=N)")
        self.grad_accum_steps(world_size)

    @property
    def hellaswag_interval(self) -> int:
        return self.eval_every if self.hellaswag_every is None else self.hellaswag_every

    @property
    def sample_interval(self) -> int:
        return self.eval_every if self.sample_every is None else self.sample_every

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["model"] = self.model.to_dict()
        return data


TRAIN_FIELDS = {f.name for f in dataclasses.fields(TrainConfig)}
MODEL_FIELDS = {f.name for f in dataclasses.fields(GPTConfig)}


def read_config_file(path: str | Path) -> dict[str, Any]:
    """Options from a JSON ``--config`` file.

    The file holds training options by their ``TrainConfig`` names (``"lr"``, ``"steps"``, ...), a
    ``"size"``, and/or the model shape, either as GPTConfig fields at the top level (a model's
    ``config.json`` works as is) or under ``"model"``. Unknown keys are an error, so typos never
    silently fall back to a default.
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise GPT2Error(f"--config file not found: {path}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise GPT2Error(f"--config {path}: not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise GPT2Error(f"--config {path}: expected a JSON object")
    data = {k: v for k, v in data.items() if k not in ("format", "format_version")}  # a checkpoint's config.json
    model = dict(data.pop("model", None) or {})
    for key in list(data):
        if key in MODEL_FIELDS:
            model[key] = data.pop(key)
    unknown = sorted(set(data) - TRAIN_FIELDS)
    if unknown:
        raise GPT2Error(f"--config {path}: unknown option(s) {', '.join(unknown)}")
    if model:
        data["model"] = model
    return data


def build_config(options: dict[str, Any], device_type: str) -> TrainConfig:
    """Resolve a TrainConfig from explicit options (CLI flags and ``--config`` values, already merged).

    Precedence: explicit option > per-size default > TrainConfig default. ``device_type`` ("cuda",
    "mps", "cpu") picks the micro-batch default (small on CPU, where big batches only cost memory).
    """
    options = {k: v for k, v in options.items() if v is not None}
    size = options.pop("size", None)
    model_fields = options.pop("model", None)
    if model_fields is not None:
        base = GPTConfig.named(size).to_dict() if size else {}
        model = GPTConfig.from_dict({**base, **model_fields})
        if size and model != GPTConfig.named(size):
            size = None  # a modified shape no longer gets that size's defaults
    else:
        size = size or "124M"
        model = GPTConfig.named(size)
    defaults = dict(SIZE_DEFAULTS.get(size or "", {}))
    cpu_micro = defaults.pop("micro_batch_cpu", None)
    if device_type != "cuda" and cpu_micro is not None:
        defaults["micro_batch"] = cpu_micro
    if "seq_len" not in options:
        defaults["seq_len"] = min(model.block_size, 1024)
    unknown = sorted(set(options) - TRAIN_FIELDS)
    if unknown:
        raise GPT2Error(f"unknown training option(s): {', '.join(unknown)}")
    return TrainConfig(model=model, size=size, **{**defaults, **options})
