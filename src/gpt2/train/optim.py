"""The optimizers of a run: AdamW everywhere (build-nanogpt), or Muon on the hidden matrices + AdamW on the rest.

``--optimizer adamw`` builds exactly build-nanogpt's AdamW (two groups: decayed >=2-D weights, undecayed biases
and LayerNorm gains). ``--optimizer muon`` splits the parameters three ways, every parameter in exactly one
group (tests/test_train_optim.py checks it):

* Muon (``torch.optim.Muon``): the 2-D weights of the transformer blocks -- attention ``c_attn`` / ``c_proj``
  and MLP ``c_fc`` / ``c_proj``. Muon replaces the momentum of each matrix by its nearest semi-orthogonal
  matrix (5 Newton-Schulz iterations), so every direction of the update moves equally.
* AdamW "embeddings": ``wte`` (tied with ``lm_head``) and ``wpe``. Their gradient rows are per token /
  per position, not a linear map to orthogonalise; Muon's authors keep them on AdamW.
* AdamW "scalars": biases and LayerNorm gains and biases (1-D), without weight decay.

Each group has its own peak lr (``--muon-lr`` for Muon, ``--lr`` for the AdamW groups); the schedule
(:func:`gpt2.train.schedule.learning_rate`) scales each from its own peak. The two optimizers are two
checkpoint components: ``optimizer`` (the AdamW part, the file an AdamW run has always written) and
``muon`` (the Muon momentum buffers), both keyed by parameter name.

The fused ``c_attn`` (q, k and v stacked, 3C x C): ``--muon-qkv split`` (the default) orthogonalises it as
three C x C blocks, which needs the hand-written :class:`BlockMuon` (the stock step works on whole parameters
only; on the other matrices BlockMuon is ``torch.optim.Muon`` step for step, tested bitwise); ``fused``
orthogonalises it as one matrix with the stock ``torch.optim.Muon``. docs/training.md has the measurement
behind the default (split: 0.03-0.04 lower val loss at equal tokens, two seeds).

DDP: gradients are all-reduced before the step, so every rank runs the same Muon step on the same
gradients and gets the same weights (tests/test_train_distributed.py checks them bitwise). FSDP shards each
matrix across ranks and the Newton-Schulz step needs the whole matrix, so ``TrainConfig.validate`` refuses
``--fsdp --optimizer muon``.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from gpt2.errors import GPT2Error
from gpt2.model import optimizer_param_groups
from gpt2.store.checkpointer import OptimizerState
from gpt2.train.config import TrainConfig, option_name
from gpt2.train.schedule import learning_rate

# Keller Jordan's quintic Newton-Schulz coefficients, as torch.optim.Muon's defaults
NS_COEFFICIENTS = (3.4445, -4.7750, 2.0315)
NS_STEPS = 5
NS_EPS = 1e-7


def is_hidden_matrix(name: str, param: nn.Parameter) -> bool:
    """Whether parameter ``name`` is a hidden 2-D weight (Muon's): a matrix inside a transformer block."""
    return param.ndim == 2 and ".h." in f".{name}"


def muon_param_groups(model: nn.Module, cfg: TrainConfig) -> tuple[list[dict], list[dict]]:
    """(Muon groups, AdamW groups) for ``--optimizer muon``; every trainable parameter in exactly one group.

    With ``--muon-qkv split`` the Muon groups carry ``blocks``: 3 for ``c_attn`` (q, k, v), 1 for the rest.
    """
    muon: list[nn.Parameter] = []
    qkv: list[nn.Parameter] = []
    embeddings: list[nn.Parameter] = []
    scalars: list[nn.Parameter] = []
    for name, param in model.named_parameters():  # a tied parameter is listed once
        if not param.requires_grad:
            continue
        if is_hidden_matrix(name, param):
            (qkv if cfg.muon_qkv == "split" and name.endswith("c_attn.weight") else muon).append(param)
        elif param.ndim >= 2:
            embeddings.append(param)
        else:
            scalars.append(param)
    muon_groups = [{"params": muon, "lr": cfg.muon_lr}]
    if qkv:
        muon_groups = [{**muon_groups[0], "blocks": 1}, {"params": qkv, "lr": cfg.muon_lr, "blocks": 3}]
    adamw_groups = [
        {"params": embeddings, "weight_decay": cfg.weight_decay, "lr": cfg.lr},
        {"params": scalars, "weight_decay": 0.0, "lr": cfg.lr},
    ]
    return [g for g in muon_groups if g["params"]], [g for g in adamw_groups if g["params"]]


def newton_schulz(g: torch.Tensor, steps: int = NS_STEPS, eps: float = NS_EPS) -> torch.Tensor:
    """The nearest (roughly) semi-orthogonal matrix to ``g`` (rows x cols), in bf16: U S' V^T, S' ~ 1.

    The same iteration, in the same operation order, as ``torch.optim.Muon`` (a test checks bitwise equality).
    """
    a, b, c = NS_COEFFICIENTS
    x = g.bfloat16()
    tall = g.size(0) > g.size(1)
    if tall:  # iterate on the wide orientation: the Gram matrix is the small side squared
        x = x.T
    x.div_(x.norm().clamp(min=eps))  # spectral norm <= Frobenius norm = 1
    for _ in range(steps):
        gram = x @ x.T
        x = torch.addmm(x, torch.addmm(gram, gram, gram, beta=b, alpha=c), x, beta=a)
    return x.T if tall else x


class BlockMuon(torch.optim.Optimizer):
    """Muon whose update orthogonalises each of a group's ``blocks`` row blocks separately (q, k, v of c_attn).

    With ``blocks=1`` it is ``torch.optim.Muon`` (Nesterov, "original" lr adjustment sqrt(max(1, rows/cols)),
    decoupled weight decay) step for step; a test checks that. State: ``momentum_buffer`` per parameter, as
    the stock optimizer's, so a checkpoint's ``muon`` component loads in either.
    """

    def __init__(self, params: Any, lr: float, momentum: float = 0.95, weight_decay: float = 0.0, blocks: int = 1):
        super().__init__(params, {"lr": lr, "momentum": momentum, "weight_decay": weight_decay, "blocks": blocks})

    @torch.no_grad()
    def step(self, closure: Any = None) -> None:  # type: ignore[override]  # no closure: never returns a loss
        for group in self.param_groups:
            lr, momentum, blocks = group["lr"], group["momentum"], group["blocks"]
            for param in group["params"]:
                if param.grad is None:
                    continue
                state = self.state[param]
                if "momentum_buffer" not in state:
                    state["momentum_buffer"] = torch.zeros_like(param.grad)
                buf = state["momentum_buffer"]
                buf.lerp_(param.grad, 1 - momentum)
                update = param.grad.lerp(buf, momentum)  # Nesterov
                parts = update.chunk(blocks, dim=0)
                update = torch.cat([newton_schulz(part) for part in parts], dim=0)
                rows, cols = parts[0].shape
                param.mul_(1 - lr * group["weight_decay"])
                param.add_(update, alpha=-lr * math.sqrt(max(1, rows / cols)))


def muon_class(cfg: TrainConfig) -> type[torch.optim.Optimizer]:
    """The Muon of ``--muon-qkv``: ``torch.optim.Muon`` (fused) or :class:`BlockMuon` (split).

    Raises GPT2Error when this torch has no ``torch.optim.Muon`` (the trainer asks before it writes anything).
    """
    muon = getattr(torch.optim, "Muon", None)
    if cfg.muon_qkv == "split":
        return BlockMuon
    if muon is None:
        raise GPT2Error(
            f"{option_name('optimizer')} muon needs torch.optim.Muon (torch >= 2.9); this torch "
            f"{torch.__version__} has none: upgrade torch or use {option_name('optimizer')} adamw"
        )
    return muon


class Optimizers:
    """The run's optimizers by checkpoint component name (``optimizer`` = AdamW, ``muon``), one schedule for all.

    ``set_lr(step)`` gives every group its scheduled lr from the group's own peak (the lr it was built with).
    """

    def __init__(self, optimizers: dict[str, torch.optim.Optimizer], cfg: TrainConfig):
        self.by_name, self.cfg = optimizers, cfg
        self.peaks = {name: [g["lr"] for g in opt.param_groups] for name, opt in optimizers.items()}

    def __iter__(self) -> Iterator[torch.optim.Optimizer]:
        return iter(self.by_name.values())

    @property
    def adamw(self) -> torch.optim.Optimizer:
        return self.by_name["optimizer"]

    def set_lr(self, step: int) -> None:
        cfg = self.cfg
        for name, optimizer in self.by_name.items():
            for group, peak in zip(optimizer.param_groups, self.peaks[name], strict=True):
                group["lr"] = learning_rate(
                    step, peak, cfg.warmup_steps, cfg.steps, cfg.min_lr_ratio, cfg.schedule, cfg.decay_frac
                )

    def zero_grad(self) -> None:
        for optimizer in self:
            optimizer.zero_grad(set_to_none=True)

    def unscale_(self, scaler: torch.amp.GradScaler) -> None:
        for optimizer in self:
            scaler.unscale_(optimizer)

    def step(self, scaler: torch.amp.GradScaler) -> None:
        for optimizer in self:
            scaler.step(optimizer)

    def lrs(self) -> dict[str, float]:
        """Metrics: ``lr`` (first AdamW group) and, with Muon, ``muon_lr`` (its first group, before adjustment)."""
        values = {"lr": self.adamw.param_groups[0]["lr"]}
        if "muon" in self.by_name:
            values["muon_lr"] = self.by_name["muon"].param_groups[0]["lr"]
        return values

    def components(self, model: nn.Module, fsdp: bool) -> dict[str, OptimizerState]:
        """The checkpoint components, one per optimizer, keyed by parameter name."""
        return {name: OptimizerState(model, optimizer, fsdp) for name, optimizer in self.by_name.items()}


def build_optimizers(model: nn.Module, cfg: TrainConfig, device: torch.device) -> Optimizers:
    """The optimizers of ``cfg.optimizer`` for ``model`` (any GPT: fresh, imported or --init-from)."""
    # fused AdamW: one kernel for the whole update, on CUDA (as build-nanogpt) and on CPU, where it is ~7x faster than
    # the default per-tensor loop (30M-parameter model: 110 ms vs 750 ms per step)
    adamw: dict[str, Any] = dict(betas=(cfg.beta1, cfg.beta2), eps=1e-8, fused=device.type in ("cuda", "cpu"))
    if cfg.optimizer == "adamw":
        groups = optimizer_param_groups(model, cfg.weight_decay)
        return Optimizers({"optimizer": torch.optim.AdamW(groups, lr=cfg.lr, **adamw)}, cfg)
    muon_cls = muon_class(cfg)
    muon_groups, adamw_groups = muon_param_groups(model, cfg)
    muon_options: dict[str, Any] = dict(lr=cfg.muon_lr, momentum=cfg.muon_momentum, weight_decay=cfg.muon_weight_decay)
    if muon_cls is not BlockMuon:
        muon_options.update(nesterov=True, adjust_lr_fn="original")
    return Optimizers(
        {"optimizer": torch.optim.AdamW(adamw_groups, **adamw), "muon": muon_cls(muon_groups, **muon_options)}, cfg
    )


def check_resume_optimizer(checkpoint: Path, trainer_state: dict[str, Any], cfg: TrainConfig) -> None:
    """Refuse (reading only) to resume a checkpoint saved with another ``--optimizer`` or ``--muon-qkv``: its
    optimizer state (which parameters, which groups) would not fit this run's optimizers."""
    saved_config = trainer_state.get("config", {})
    names = ("optimizer", "muon_qkv") if cfg.optimizer == "muon" else ("optimizer",)
    for name in names:
        saved = saved_config.get(name, "adamw" if name == "optimizer" else None)  # older runs: AdamW, no Muon
        if saved != getattr(cfg, name):
            flag = option_name(name)
            raise GPT2Error(
                f"cannot resume from {checkpoint}: it was trained with {flag} {saved}, this run asks for "
                f"{flag} {getattr(cfg, name)}; use {flag} {saved} (or --recipe of that run), or a new --out directory"
            )


def newton_schulz_flops(model: nn.Module, cfg: TrainConfig) -> int:
    """FLOPs of Muon's Newton-Schulz iterations per optimizer step (0 for AdamW), on every rank.

    Per iteration on a wide m x n block (m <= n): X X^T (2 m^2 n), the quintic's Gram product (2 m^3) and the
    update (2 m^2 n). At 124M that is ~1.5 TFLOP per step, < 0.001% of the model's 6 N D FLOPs per 2^19-token
    step, so MFU counts model FLOPs only.
    """
    if cfg.optimizer != "muon":
        return 0
    total = 0
    for name, param in model.named_parameters():
        if is_hidden_matrix(name, param):
            blocks = 3 if cfg.muon_qkv == "split" and name.endswith("c_attn.weight") else 1
            m, n = sorted((param.shape[0] // blocks, param.shape[1]))
            total += blocks * NS_STEPS * (4 * m * m * n + 2 * m**3)
    return total
