"""Per-size training defaults: the options whose good value depends on the model size, one typed object per size.

Beside the model registry (:data:`gpt2.config.CONFIGS`) and keyed like it. The GPT-2 sizes take the GPT-3
paper's (table 2.1) learning rates and batch sizes; ``tiny`` / ``mini`` get settings that train in minutes on
a CPU. Every option not set here takes its ``TrainConfig`` default, which is the 124M recipe.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class SizeDefaults:
    """The training options that depend on the model size. Token counts are tokens, steps optimizer steps.

    ``None`` means "the TrainConfig default". ``micro_batch_cpu`` replaces ``micro_batch`` when no CUDA GPU
    is used: on a CPU a big micro-batch only costs memory, the total batch (``batch_tokens``) stays the same.
    """

    lr: float
    batch_tokens: int
    micro_batch: int
    micro_batch_cpu: int
    steps: int | None = None
    warmup_steps: int | None = None
    eval_every: int | None = None

    def options(self, device_type: str) -> dict[str, Any]:
        """The TrainConfig values for a run on ``device_type`` (``cuda``, ``mps``, ``cpu``); unset ones left out."""
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "micro_batch_cpu"}
        if device_type != "cuda":
            values["micro_batch"] = self.micro_batch_cpu
        return {name: value for name, value in values.items() if value is not None}


# Keys are the names in gpt2.config.CONFIGS (a test checks they match).
SIZE_DEFAULTS: dict[str, SizeDefaults] = {
    "124M": SizeDefaults(lr=6e-4, batch_tokens=2**19, micro_batch=64, micro_batch_cpu=8),
    "350M": SizeDefaults(lr=3e-4, batch_tokens=2**19, micro_batch=32, micro_batch_cpu=4),
    "774M": SizeDefaults(lr=2.5e-4, batch_tokens=2**19, micro_batch=16, micro_batch_cpu=2),
    "1558M": SizeDefaults(lr=2e-4, batch_tokens=2**20, micro_batch=8, micro_batch_cpu=1),
    "mini": SizeDefaults(
        lr=1e-3, batch_tokens=2**14, micro_batch=16, micro_batch_cpu=16, steps=2000, warmup_steps=100, eval_every=100
    ),
    "tiny": SizeDefaults(
        lr=3e-3, batch_tokens=2**12, micro_batch=16, micro_batch_cpu=16, steps=200, warmup_steps=20, eval_every=50
    ),
}

# TrainConfig fields that some size sets (the CLI help and the docs say "per --size" for these).
SIZE_DEPENDENT_OPTIONS = tuple(f.name for f in dataclasses.fields(SizeDefaults) if f.name != "micro_batch_cpu")


@dataclass(frozen=True)
class FineTuneDefaults:
    """Training defaults for fine-tuning pretrained weights (``gpt2 train --init-from SRC``).

    Applied over the size defaults (which still pick the micro-batch that fits), under explicit options.
    Pretrained weights need a learning rate ~10x below pre-training's (3e-5..1e-4 for GPT-2; much higher
    and the first steps wipe out what the model knew), only a short warmup (the optimizer moments are
    fresh, the weights are not) and a short run: a cosine over ``steps`` x ``batch_tokens`` = 33M tokens,
    several epochs of a typical "my text" corpus. HellaSwag is off (downloads, and slow at 124M+).
    """

    lr: float = 6e-5
    warmup_steps: int = 20
    min_lr_ratio: float = 0.1
    steps: int = 500
    batch_tokens: int = 2**16
    eval_every: int = 50
    save_every: int = 100
    hellaswag_every: int = 0

    def options(self) -> dict[str, Any]:
        """The TrainConfig values of the recipe, by field name."""
        return dataclasses.asdict(self)


FINE_TUNE_DEFAULTS = FineTuneDefaults()
FINE_TUNE_OPTIONS = tuple(f.name for f in dataclasses.fields(FineTuneDefaults))


@dataclass(frozen=True)
class Recipe:
    """A named training recipe (``--recipe NAME``): the optimizer and its hyper-parameters, as one object.

    Each field is a ``TrainConfig`` option; ``None`` leaves that option to the per-size default / its
    ``TrainConfig`` default. Precedence: explicit flag or ``--config`` value > recipe > per-size default >
    ``TrainConfig`` default. Learning rates are peak values (the schedule scales each group's own peak).
    """

    description: str
    optimizer: str | None = None
    lr: float | None = None  # AdamW groups (with --optimizer muon: embeddings, biases, LayerNorm gains)
    muon_lr: float | None = None  # Muon group (the hidden 2-D matrices), before Muon's shape adjustment
    muon_momentum: float | None = None
    muon_weight_decay: float | None = None
    muon_qkv: str | None = None  # c_attn's q, k, v orthogonalised as one matrix (fused) or three (split)
    weight_decay: float | None = None  # AdamW groups
    warmup_steps: int | None = None
    schedule: str | None = None
    decay_frac: float | None = None
    min_lr_ratio: float | None = None

    def options(self) -> dict[str, Any]:
        """The TrainConfig values this recipe sets (unset ones left out)."""
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "description"}
        return {name: value for name, value in values.items() if value is not None}


RECIPES: dict[str, Recipe] = {
    # The seed's (build-nanogpt / GPT-3 paper) recipe: AdamW everywhere, warmup then cosine decay to 10%.
    "gpt2": Recipe("AdamW, warmup + cosine decay to 10% (the seed's recipe; per-size lr)"),
    # Muon on the hidden matrices + AdamW on the rest, warmup-stable-decay as modded-nanogpt: the lr stays at its
    # peak and decays linearly to 0 over the last 40% of steps. No weight decay (modded-nanogpt's 124M records use
    # none at this scale). muon_lr is the lr of torch.optim.Muon with its "original" (Keller Jordan's) shape
    # adjustment; it and the split q/k/v were picked by the measurements in docs/training.md ("Muon vs AdamW").
    "muon": Recipe(
        "Muon (hidden matrices) + AdamW (embeddings, biases, LayerNorm), warmup-stable-decay",
        optimizer="muon",
        muon_lr=0.02,
        muon_momentum=0.95,
        muon_weight_decay=0.0,
        muon_qkv="split",
        weight_decay=0.0,
        schedule="wsd",
        decay_frac=0.4,
        min_lr_ratio=0.0,
    ),
}
