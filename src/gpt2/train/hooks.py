"""In-loop evaluation: validation loss, HellaSwag and sample generations every N steps.

The functions come from ``gpt2.evaluate`` and ``gpt2.generate`` and are imported only when first
needed. A hook whose data is unavailable (no val split, no HellaSwag file) prints one warning and
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
from gpt2.train.config import TrainConfig


class InLoopEvaluation:
    """Runs the enabled hooks at the steps they are due; returns metrics rows for metrics.jsonl."""

    def __init__(
        self, config: TrainConfig, device: torch.device, amp_dtype: torch.dtype | None, warn: Callable[[str], None]
    ):
        self.config = config
        self.warn = warn
        self.device = device
        self.amp_dtype = amp_dtype
        self.disabled: set[str] = set()
        self._hellaswag_items: list[Any] | None = None

    def _disable(self, name: str, reason: str) -> None:
        if name not in self.disabled:
            self.disabled.add(name)
            self.warn(f"in-loop {name} disabled: {reason}")

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
            if self._due(step, cfg.eval_every, last) and "val loss" not in self.disabled:
                metrics.update(self._call("val loss", self.val_loss, model, {}))
            if self._due(step, cfg.hellaswag_interval, last) and "hellaswag" not in self.disabled:
                metrics.update(self._call("hellaswag", self.hellaswag, model, {}))
            if self._due(step, cfg.sample_interval, last) and "sampling" not in self.disabled:
                samples = self._call("sampling", self.samples, model, [])
        finally:
            model.train(was_training)
        return metrics, samples

    def _call(self, name: str, hook: Callable[[nn.Module], Any], model: nn.Module, empty: Any) -> Any:
        """``hook(model)``; missing data disables the hook (one warning) and gives ``empty``."""
        try:
            return hook(model)
        except GPT2Error as exc:  # e.g. no val split, HellaSwag file missing and the hub unreachable
            self._disable(name, str(exc))
        return empty

    def val_loss(self, model: nn.Module) -> dict[str, Any]:
        from gpt2.evaluate.loss import evaluate_loss

        cfg = self.config
        result = evaluate_loss(
            model,
            cfg.data,
            split="val",
            max_tokens=cfg.eval_tokens,
            batch_size=cfg.micro_batch,
            seq_len=cfg.seq_len,
            device=str(self.device),
            dtype=self.amp_dtype,
        )
        return {"val_loss": result["loss"], "val_tokens": result["tokens"]}

    def hellaswag(self, model: nn.Module) -> dict[str, Any]:
        from gpt2.evaluate.hellaswag import hellaswag_accuracy, load_hellaswag

        cfg = self.config
        if self._hellaswag_items is None:
            self._hellaswag_items = load_hellaswag(cfg.hellaswag_path, limit=cfg.hellaswag_limit)
        result = hellaswag_accuracy(model, self._hellaswag_items, device=str(self.device), dtype=self.amp_dtype)
        return {
            "hellaswag_acc": result["acc"],
            "hellaswag_acc_norm": result["acc_norm"],
            "hellaswag_acc_norm_token": result.get("acc_norm_token"),
            "hellaswag_n": result["n"],
        }

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
