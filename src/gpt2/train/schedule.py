"""Learning-rate schedule: linear warmup, then cosine decay to a floor (GPT-3 paper, section B)."""

from __future__ import annotations

import math


def learning_rate(step: int, max_lr: float, warmup_steps: int, total_steps: int, min_lr_ratio: float = 0.1) -> float:
    """The learning rate for optimizer step ``step`` (0-based).

    Warmup: ``max_lr * (step + 1) / warmup_steps`` for the first ``warmup_steps`` steps (never 0,
    so the first step already learns). Then a half cosine from ``max_lr`` at ``warmup_steps`` to
    ``max_lr * min_lr_ratio`` at ``total_steps``, and that floor afterwards.
    """
    min_lr = max_lr * min_lr_ratio
    if step < warmup_steps:
        return max_lr * (step + 1) / warmup_steps
    if step >= total_steps:
        return min_lr
    decay_steps = max(1, total_steps - warmup_steps)
    progress = (step - warmup_steps) / decay_steps  # 0 -> 1
    coeff = 0.5 * (1.0 + math.cos(math.pi * progress))  # 1 -> 0
    return min_lr + coeff * (max_lr - min_lr)
