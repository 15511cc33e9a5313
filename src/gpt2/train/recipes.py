"""Named recipes, each a function that returns a complete TrainConfig, and the one place a run's config is resolved.

What a run uses is decided here, in one order (:func:`build_config`): the recipe (``--recipe NAME``, or
``--size NAME``; fine-tuned by :func:`fine_tune` with ``--init-from``) < a ``--config`` file < the flags.
``gpt2 train --print-config ...`` prints the result. The 124M recipe is the TrainConfig field defaults (the
seed's); the bigger GPT-2 sizes take the GPT-3 paper's (table 2.1) learning rates and batches; ``tiny`` and
``mini`` train in minutes on a CPU; ``NAME-muon`` is any of them with the Muon optimizer (:func:`muon`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from functools import partial
from typing import Any

from gpt2.config import SIZE_ALIASES, GPTConfig
from gpt2.errors import GPT2Error
from gpt2.train.config import OPTION_NAMES, SHAPE_FIELDS, TrainConfig, check_option_value, option_name

# GPT-3 paper (table 2.1): peak lr and tokens per step of each GPT-2 size
GPT2_SIZES = {"124M": (6e-4, 2**19), "350M": (3e-4, 2**19), "774M": (2.5e-4, 2**19), "1558M": (2e-4, 2**20)}


def gpt2(size: str) -> TrainConfig:
    """GPT-2 ``size`` (124M ... 1558M): the seed's recipe with that size's lr and batch (10B tokens at 124M)."""
    lr, batch_tokens = GPT2_SIZES[size]
    return TrainConfig(model=GPTConfig.named(size), lr=lr, batch_tokens=batch_tokens)


def mini() -> TrainConfig:
    """6 layers x 384 channels, context 256: 2,000 steps of 16K tokens (33M tokens), minutes to hours on a CPU."""
    shape = GPTConfig.named("mini")
    return TrainConfig(
        model=shape, seq_len=256, lr=1e-3, batch_tokens=2**14, steps=2000, warmup_steps=100, eval_every=100
    )


def tiny() -> TrainConfig:
    """2 layers x 64 channels, context 128 (the demo's shape): 200 steps of 4K tokens, a minute on a CPU."""
    shape = GPTConfig.named("tiny")
    return TrainConfig(model=shape, seq_len=128, lr=3e-3, batch_tokens=2**12, steps=200, warmup_steps=20, eval_every=50)


def muon(base: TrainConfig) -> TrainConfig:
    """``base`` with Muon on the hidden matrices + AdamW on the rest (``--lr``), warmup-stable-decay, as modded-nanogpt.

    The lr stays at its peak and decays linearly to 0 over the last 40% of steps; no weight decay (modded-nanogpt's
    124M records use none at this scale). ``muon_lr`` is torch.optim.Muon's with its "original" (Keller Jordan's)
    shape adjustment; it and the split q/k/v were picked by the measurements in docs/training.md ("Muon vs AdamW").
    """
    return dataclasses.replace(
        base, optimizer="muon", muon_lr=0.02, muon_momentum=0.95, muon_weight_decay=0.0, muon_qkv="split",
        weight_decay=0.0, schedule="wsd", decay_frac=0.4, min_lr_ratio=0.0,
    )  # fmt: skip


BASE_RECIPES: dict[str, Callable[[], TrainConfig]] = {
    **{size: partial(gpt2, size) for size in GPT2_SIZES},
    "mini": mini,
    "tiny": tiny,
}
RECIPES: dict[str, Callable[[], TrainConfig]] = {
    **BASE_RECIPES,
    **{f"{name}-muon": partial(lambda make: muon(make()), make) for name, make in BASE_RECIPES.items()},
}

# --micro-batch auto: at most this many sequences per forward/backward, by registry size (GPU, CPU). On a GPU what
# fits in 80 GB; on a CPU a big micro-batch only costs memory (the total batch, --batch-tokens, stays the same).
MICRO_BATCH = {"124M": (64, 8), "350M": (32, 4), "774M": (16, 2), "1558M": (8, 1), "mini": (16, 16), "tiny": (16, 16)}


def fine_tune(base: TrainConfig, source: GPTConfig, device_type: str) -> TrainConfig:
    """``base`` turned into a short fine-tuning run of weights of shape ``source`` (``--init-from``) on ``device_type``.

    GPT-2 sizes need a learning rate ~10x below pre-training's (3e-5..1e-4; much higher and the first steps wipe out
    what the model knew); the small CPU sizes, far from converged, keep their recipe's (measured best for tiny in
    docs/training.md, "Fine-tuning on a CPU"). A short warmup (the optimizer moments are fresh, the weights are not)
    and a short run; HellaSwag off (it downloads, and is slow at 124M+). 500 steps of 65,536 tokens on a GPU (33M
    tokens, several epochs of a typical "my text" corpus); on a CPU such a step takes minutes, so steps of 2,048
    tokens, and validation on 65,536 tokens (not ~5M: it would take longer than the 50 steps between evaluations).
    """
    lr = 6e-5 if base.model.registry_name() in GPT2_SIZES else base.lr
    batch_tokens, eval_tokens = (2**16, base.eval_tokens) if device_type == "cuda" else (2**11, 2**16)
    return dataclasses.replace(
        base, model=source, lr=lr, warmup_steps=20, steps=500, batch_tokens=batch_tokens, eval_every=50,
        eval_tokens=eval_tokens, save_every=100, hellaswag_every=0,
    )  # fmt: skip


def recipe_name(recipe: str | None, size: str | None, source: GPTConfig | None) -> str:
    """The recipe a run starts from: ``--recipe NAME``, or ``--size SIZE`` (which may add the older ``--recipe
    gpt2`` or ``--recipe muon``); else the size of the ``--init-from`` weights (``source``), else 124M."""
    for flag, value in (("--recipe", recipe), ("--size", size)):
        if value is not None and not isinstance(value, str):
            raise GPT2Error(f"{flag} must be a string, got {value!r}")
    if size is not None:
        GPTConfig.named(size)  # an unknown size is an error
        size = SIZE_ALIASES.get(size, size)
    if recipe in (None, "gpt2", "muon"):
        name = size or (source.registry_name() if source else None) or "124M"
        return name + ("-muon" if recipe == "muon" else "")
    if recipe not in RECIPES:
        raise GPT2Error(f"--recipe {recipe}: unknown recipe; known: {', '.join(RECIPES)} (or gpt2 / muon with --size)")
    if size is not None and recipe.removesuffix("-muon") != size:
        raise GPT2Error(f"--size {size} and --recipe {recipe} name different models: give one of them")
    return recipe


def build_config(options: dict[str, Any], device_type: str = "cpu", init_model: GPTConfig | None = None) -> TrainConfig:
    """The TrainConfig of a run: the recipe < the explicit ``options`` (a ``--config`` file's values under the flags',
    as :func:`gpt2.train.cli.options_from_args` merges them); a ``None`` option is not given.

    ``recipe`` / ``size`` name the recipe (:func:`recipe_name`); a ``model`` dict of GPTConfig fields changes its
    shape. With ``init_from`` the recipe is fine-tuned (:func:`fine_tune`) on ``device_type`` for ``init_model``,
    the config of those weights (:func:`gpt2.train.init.resolve_config` reads it), whose shape the run takes
    (:func:`fine_tune_shape`). The recipe's ``seq_len`` shrinks to the model's context unless given.
    """
    options = {k: v for k, v in options.items() if v is not None}
    recipe, size = options.pop("recipe", None), options.pop("size", None)
    name = recipe_name(recipe, size, init_model)
    spelled = f"--size {size}" if size else None if recipe in (None, "gpt2", "muon") else f"--recipe {recipe}"
    fields = options.pop("model", None) or {}
    unknown = sorted(set(options) - set(OPTION_NAMES))
    if unknown:
        raise GPT2Error(f"unknown training option(s): {', '.join(unknown)}")
    options = {key: check_option_value(key, value) for key, value in options.items()}
    dropout = options.get("dropout", fields.get("dropout", 0.0))
    if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0 <= dropout < 1:
        raise GPT2Error(f"{option_name('dropout')} must be in [0, 1), got {dropout!r}")
    options["dropout"] = float(dropout)
    config = RECIPES[name]()
    if options.get("init_from"):
        if init_model is None:
            raise GPT2Error(f"{option_name('init_from')}: the config of the weights is needed to build the run")
        shape = fine_tune_shape(init_model, options["init_from"], spelled, config.model, fields, options.get("seq_len"))
        config = fine_tune(config, shape, device_type)
    else:
        config = dataclasses.replace(config, model=GPTConfig.from_dict({**config.model.to_dict(), **fields}))
    model = dataclasses.replace(config.model, dropout=options["dropout"])
    values = {"seq_len": min(config.seq_len, model.block_size), **options}  # recipe < --config file < flags
    return dataclasses.replace(config, model=model, size=model.registry_name(), recipe=name, **values)


def fine_tune_shape(
    source: GPTConfig,
    spec: str,
    spelled: str | None,
    named: GPTConfig,
    model_fields: dict[str, Any],
    seq_len: int | None,
) -> GPTConfig:
    """The model config of a run fine-tuning weights of config ``source`` (from ``--init-from spec``).

    The shape is the weights': an explicitly ``spelled`` recipe's model (``named``, its layers) or a ``--config``
    shape that differs is an error. Only the context may shrink, to a smaller ``block_size`` or ``--seq-len`` (the
    position embeddings are cropped, as nanoGPT's ``crop_block_size``); the vocabulary stays the source's.
    """
    explicit = {k: getattr(named, k) for k in ("n_layer", "n_head", "n_embd")} if spelled else {}
    explicit.update({k: v for k, v in model_fields.items() if k in SHAPE_FIELDS})
    block_size = explicit.pop("block_size", source.block_size)
    conflicts = [
        f"{k}={v} (the weights have {getattr(source, k)})" for k, v in explicit.items() if v != getattr(source, k)
    ]
    if conflicts:
        raise GPT2Error(
            f"{option_name('init_from')} {spec}: {spelled or 'the --config model shape'} asks for "
            f"{', '.join(conflicts)}; the shape comes from the weights, leave --size (and the --config shape) out"
        )
    if block_size > source.block_size:
        raise GPT2Error(
            f"{option_name('init_from')} {spec}: block_size {block_size} is larger than the weights' context window "
            f"({source.block_size} positions); it can only shrink"
        )
    # a shorter --seq-len crops too, so the saved model's context is what it was fine-tuned at
    return dataclasses.replace(source, block_size=min(block_size, seq_len or block_size))


def resolve_micro_batch(config: TrainConfig, device_type: str, world_size: int) -> TrainConfig:
    """``config`` with ``--micro-batch auto`` (None) decided for the device the run got: the most sequences that
    divide each rank's share of the batch, up to the size's cap (:data:`MICRO_BATCH`; 124M's for a custom shape)."""
    if config.micro_batch is not None:
        return config
    gpu, cpu = MICRO_BATCH.get(config.model.registry_name() or "124M", MICRO_BATCH["124M"])
    per_rank = max(1, config.batch_tokens // (config.seq_len * world_size))
    cap = gpu if device_type == "cuda" else cpu
    return dataclasses.replace(config, micro_batch=max(b for b in range(1, cap + 1) if per_rank % b == 0))
