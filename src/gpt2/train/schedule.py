"""Learning-rate schedules: linear warmup, then cosine decay to a floor (GPT-3 paper, section B), or
warmup-stable-decay (``wsd``: constant, then a linear decay over the last part of training, as modded-nanogpt)."""

from __future__ import annotations

import math

SCHEDULES = ("cosine", "wsd")


def learning_rate(
    step: int,
    max_lr: float,
    warmup_steps: int,
    total_steps: int,
    min_lr_ratio: float = 0.1,
    schedule: str = "cosine",
    decay_frac: float = 0.4,
) -> float:
    """The learning rate for optimizer step ``step`` (0-based).

    Warmup: ``max_lr * (step + 1) / warmup_steps`` for the first ``warmup_steps`` steps (never 0,
    so the first step already learns). Then, ``cosine``: a half cosine from ``max_lr`` at ``warmup_steps``
    to ``max_lr * min_lr_ratio`` at ``total_steps``; ``wsd``: ``max_lr`` until the last
    ``decay_frac * total_steps`` steps, then linearly down to the floor. The floor afterwards.
    """
    min_lr = max_lr * min_lr_ratio
    if step < warmup_steps:
        return max_lr * (step + 1) / warmup_steps
    if step >= total_steps:
        return min_lr
    if schedule == "wsd":
        decay_start = max(warmup_steps, total_steps - math.ceil(decay_frac * total_steps))
        if step < decay_start:
            return max_lr
        progress = (step - decay_start) / max(1, total_steps - decay_start)  # 0 -> 1
        return min_lr + (1.0 - progress) * (max_lr - min_lr)
    decay_steps = max(1, total_steps - warmup_steps)
    progress = (step - warmup_steps) / decay_steps  # 0 -> 1
    coeff = 0.5 * (1.0 + math.cos(math.pi * progress))  # 1 -> 0
    return min_lr + coeff * (max_lr - min_lr)
