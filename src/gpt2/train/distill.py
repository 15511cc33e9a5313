"""Knowledge distillation (``gpt2 train --distill-from TEACHER``): the student also learns the teacher's soft targets.

Hinton et al. 2015 ("Distilling the Knowledge in a Neural Network"): soften both next-token distributions with a
temperature T, make the student's match the teacher's (KL divergence), and mix that with the ordinary loss:

    loss = alpha * T^2 * KL(softmax(teacher / T) || softmax(student / T)) + (1 - alpha) * CE(student, next token)

The T^2 keeps the soft term's gradients the same size whatever T (they scale as 1/T^2). Defaults T = 2.0 and
alpha = 0.5 are those of Hugging Face's distillation script that trained DistilBERT and DistilGPT2 (transformers,
examples/research_projects/distillation/train.py: --temperature 2.0, --alpha_ce 0.5 for the KL term, --alpha_clm 0.5
for the next-token term; Sanh et al. 2019, DistilBERT, also distil at T = 2). The KL is over GPT-2's 50,257 real
tokens: padding rows (ours pad to 50,304, Hugging Face's models do not) are never a token of either model.

The teacher is any model source (:func:`gpt2.store.load.load`), frozen: eval mode (no dropout), no gradients, its
forward under the run's autocast (bf16 on GPUs), on every rank for that rank's micro-batch (it is not DDP-wrapped:
it has no gradients to synchronise). It holds no state, so a resumed run recomputes the very same soft targets.
Its forward pass (2 FLOPs per teacher weight per token) is part of every step: tokens/s includes it, and so does the
FLOP count of MFU.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch.nn import functional as F

from gpt2.config import GPT2_VOCAB_SIZE, PADDED_VOCAB_SIZE
from gpt2.errors import GPT2Error
from gpt2.model import GPT
from gpt2.runtime.distributed import DistContext, all_reduce_mean
from gpt2.train.config import TrainConfig, option_name

GPT2_VOCABS = (GPT2_VOCAB_SIZE, PADDED_VOCAB_SIZE)  # the GPT-2 BPE as Hugging Face stores it, and as we pad it


def soft_target_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """T^2 * KL(teacher_T || student_T), the mean over positions of the sum over the 50,257 real tokens (fp32)."""
    s = student_logits[..., :GPT2_VOCAB_SIZE].flatten(0, -2).float() / temperature
    t = teacher_logits[..., :GPT2_VOCAB_SIZE].flatten(0, -2).float() / temperature
    kl = F.kl_div(F.log_softmax(s, dim=-1), F.log_softmax(t, dim=-1), reduction="batchmean", log_target=True)
    return kl * temperature**2


def check_options(cfg: TrainConfig) -> None:
    """The distillation options are valid, and only given with ``--distill-from``."""
    if cfg.distill_temperature <= 0:
        raise GPT2Error(f"{option_name('distill_temperature')} must be positive, got {cfg.distill_temperature}")
    if not 0 <= cfg.distill_alpha <= 1:
        raise GPT2Error(f"{option_name('distill_alpha')} must be in [0, 1], got {cfg.distill_alpha}")
    if cfg.distill_from and cfg.fused_loss:
        raise GPT2Error(
            f"{option_name('fused_loss')} cannot be used with {option_name('distill_from')}: the soft targets need "
            "the student's full logits, which the fused loss never forms"
        )


def check_teacher(teacher: GPT, cfg: TrainConfig) -> None:
    """The teacher reads the student's tokens: the same tokenizer, and a context at least ``--seq-len`` long."""
    spec, have, want = cfg.distill_from, teacher.config.vocab_size, cfg.model.vocab_size
    if have != want and not {have, want} <= set(GPT2_VOCABS):
        raise GPT2Error(
            f"{option_name('distill_from')} {spec}: the teacher's vocabulary has {have:,} rows, the student's "
            f"{want:,}; distillation needs the same tokenizer (GPT-2's {GPT2_VOCAB_SIZE:,} tokens, padded to "
            f"{PADDED_VOCAB_SIZE:,} or not)"
        )
    if teacher.config.block_size < cfg.seq_len:
        raise GPT2Error(
            f"{option_name('distill_from')} {spec}: the teacher's context is {teacher.config.block_size} tokens, "
            f"shorter than {option_name('seq_len')} {cfg.seq_len}"
        )


class Distiller:
    """The teacher and the distillation loss the training step calls instead of the plain next-token loss."""

    def __init__(self, teacher: GPT, temperature: float, alpha: float):
        self.teacher = teacher.eval().requires_grad_(False)
        self.temperature, self.alpha = temperature, alpha
        self._parts: list[torch.Tensor] = []  # (soft, hard) of each micro-step since the last train row
        self._teacher_val_loss: float | None = None

    @classmethod
    def load(cls, cfg: TrainConfig, device: torch.device) -> Distiller | None:
        """The distiller of ``cfg`` (None without ``--distill-from``); the teacher is loaded and checked here."""
        check_options(cfg)
        if not cfg.distill_from:
            return None
        from gpt2.store.load import load

        try:
            teacher = load(cfg.distill_from)
        except GPT2Error as exc:
            raise GPT2Error(f"{option_name('distill_from')} {cfg.distill_from}: {exc}") from None
        check_teacher(teacher, cfg)
        return cls(teacher.to(device), cfg.distill_temperature, cfg.distill_alpha)

    def loss(self, student: Callable[..., Any], x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The mixed loss of one micro-batch; ``student`` is the (DDP-wrapped) model being trained."""
        logits, hard = student(x, y)
        with torch.no_grad():
            teacher_logits = self.teacher(x)[0]
        soft = soft_target_loss(logits, teacher_logits, self.temperature)
        self._parts.append(torch.stack([soft.detach(), hard.detach()]))
        return self.alpha * soft + (1 - self.alpha) * hard

    def train_metrics(self, ctx: DistContext) -> dict[str, float]:
        """The two parts of the loss, averaged over the micro-steps since the last call and over ranks."""
        soft, hard = all_reduce_mean(torch.stack(self._parts).mean(dim=0), ctx).tolist()
        self._parts = []
        return {"loss_soft": soft, "loss_hard": hard}

    def teacher_val_loss(self, val_loss: Callable[[GPT], dict[str, Any]]) -> float:
        """The teacher's validation loss by the student's own measure ``val_loss`` (computed once: it is frozen)."""
        if self._teacher_val_loss is None:
            self._teacher_val_loss = val_loss(self.teacher)["val_loss"]
        return self._teacher_val_loss

    def flops_per_token(self, seq_len: int) -> float:
        """The teacher's forward FLOPs per token: a third of its training FLOPs (no backward pass)."""
        return self.teacher.flops_per_token(seq_len) / 3
