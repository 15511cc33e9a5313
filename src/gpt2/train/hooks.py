"""In-loop evaluation: the slots of :mod:`gpt2.evaluate.slots` (validation loss, benchmarks) and sample
generations, every N steps.

A slot or the sampling whose data is unavailable (no val split, an evaluation's file missing) prints one warning and
switches itself off instead of stopping a long run.

Every rank calls every hook: the evaluation functions shard their work and all-reduce, and an
FSDP model needs all ranks in each forward pass. The model passed in is the plain (uncompiled,
un-DDP'd) module, so shapes that differ from training never trigger recompilation.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn as nn

from gpt2.errors import GPT2Error
from gpt2.evaluate import slots
from gpt2.train.config import TrainConfig


class InLoopEvaluation:
    """Runs the slots and the sampling at the steps they are due; returns metrics and rows for metrics.jsonl."""

    def __init__(
        self, config: TrainConfig, device: torch.device, amp_dtype: torch.dtype | None, warn: Callable[[str], None]
    ):
        self.config = config
        self.warn = warn
        self.device = device
        self.context = slots.SlotContext(config, device, amp_dtype)
        self.disabled: set[str] = set()

    def val_loss(self, model: nn.Module) -> dict[str, Any]:
        """The val-loss slot's metrics of ``model`` (the distillation teacher's, beside the student's)."""
        return slots.val_loss(model, self.context)

    @staticmethod
    def _due(step: int, every: int, last: bool) -> bool:
        return every > 0 and (step % every == 0 or last)

    def run(self, model: nn.Module, step: int, last: bool) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """(eval metrics, sample rows) for optimizer step ``step``; empty when nothing is due."""
        cfg = self.config
        metrics: dict[str, Any] = {}
        samples: list[dict[str, Any]] = []
        was_training = model.training
        model.eval()
        try:
            for slot in slots.SLOTS:
                if slot.name not in self.disabled and self._due(step, slot.every(cfg), last):
                    metrics.update(self._call(slot.name, {}, slot.run, model, self.context))
            if self._due(step, cfg.sample_interval, last) and "sampling" not in self.disabled:
                samples = self._call("sampling", [], self.samples, model)
        finally:
            model.train(was_training)
        return metrics, samples

    def _call(self, name: str, empty: Any, hook: Callable[..., Any], *args: Any) -> Any:
        """``hook(*args)``; missing data disables the hook (one warning) and gives ``empty``."""
        try:
            return hook(*args)
        except GPT2Error as exc:  # e.g. no val split, an evaluation's file missing and the hub unreachable
            self.disabled.add(name)
            self.warn(f"in-loop {name} disabled: {exc}")
        return empty

    def samples(self, model: nn.Module) -> list[dict[str, Any]]:
        from gpt2.generate import generate

        cfg = self.config
        texts = generate(
            model,
            cfg.sample_prompt,
            max_new_tokens=min(cfg.sample_tokens, cfg.model.block_size - 1),
            top_k=50,
            num_samples=cfg.num_samples,
            seed=cfg.seed,  # the same seed every time, so samples of different steps are comparable
            device=str(self.device),
        )
        return [{"prompt": cfg.sample_prompt, "text": text} for text in texts]
