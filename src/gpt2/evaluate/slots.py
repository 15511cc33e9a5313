"""In-loop evaluation slots: what ``gpt2 train`` evaluates every N steps, and how reports show the metrics.

A slot is (name, every, run): at every ``every(config)``-th step and the last (0 = never) the trainer calls
``run(model, context)`` on every rank, model in eval mode, and gets named metrics (``{"hellaswag_acc_norm":
0.29, "hellaswag_n": 200}``). Metrics go by name, unchanged, to metrics.jsonl (and the trackers), the console,
meta.json, the app, ``gpt2 report`` (a row each) and ``gpt2 plot`` (a panel each); a :class:`Metric` only
adds presentation. A new evaluation (CORE, ...) = its TrainConfig options + one :class:`Slot` in
:data:`SLOTS`; trainer, console, checkpoint state and report stay as they are. A GPT2Error (missing data)
switches a slot off with one warning. Light: a slot imports its evaluation (torch) when it first runs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from gpt2.evaluate.harness_tasks import GPT2_124M_PUBLISHED, GPT2_CORE

GPT2_124M_VAL_LOSS = 3.2924  # OpenAI GPT-2 124M on FineWeb-Edu val, as reported by build-nanogpt / llm.c
GPT2_124M_HELLASWAG_PER_TOKEN = 0.294  # acc_norm per completion token (build-nanogpt's hellaswag.py)
CHANCE = (0.25, "chance (4 endings)")


@dataclass(frozen=True)
class Metric:
    """How reports show the metric ``key`` (a field of the eval rows); unknown keys are shown by their name."""

    key: str
    label: str
    higher_is_better: bool | None = None  # the report's "best" (None: no best)
    references: tuple[tuple[float, str], ...] = ()  # (value, what): lines in the plot, numbers in the report
    plot: bool = True  # False: a count or detail, in the report's table only


@dataclass
class SlotContext:
    """What a slot gets besides the model: the run's TrainConfig, device, autocast dtype and a per-run cache."""

    config: Any  # gpt2.train.config.TrainConfig (gpt2.evaluate sits below gpt2.train)
    device: Any  # torch.device
    dtype: Any  # autocast torch.dtype, or None
    cache: dict[str, Any] = field(default_factory=dict)  # e.g. the HellaSwag items, loaded at the first call


@dataclass(frozen=True)
class Slot:
    name: str  # in messages ("in-loop hellaswag disabled: ...")
    every: Callable[[Any], int]  # TrainConfig -> interval in steps, 0 = off
    run: Callable[[Any, SlotContext], dict[str, Any]]  # (model, context) -> metrics; the same on every rank
    metrics: tuple[Metric, ...] = ()


def val_loss(model: Any, ctx: SlotContext) -> dict[str, Any]:
    from gpt2.evaluate.loss import evaluate_loss

    cfg = ctx.config
    result = evaluate_loss(
        model,
        cfg.data,
        split="val",
        max_tokens=cfg.eval_tokens,
        batch_size=cfg.micro_batch,
        seq_len=cfg.seq_len,
        device=str(ctx.device),
        dtype=ctx.dtype,
    )
    return {"val_loss": result["loss"], "val_bpb": result["bpb"], "val_tokens": result["tokens"]}


def _hellaswag(model: Any, ctx: SlotContext) -> dict[str, Any]:
    from gpt2.evaluate.hellaswag import hellaswag_accuracy, load_hellaswag

    cfg = ctx.config
    if "hellaswag" not in ctx.cache:
        ctx.cache["hellaswag"] = load_hellaswag(cfg.hellaswag_path, limit=cfg.hellaswag_limit)
    result = hellaswag_accuracy(model, ctx.cache["hellaswag"], device=str(ctx.device), dtype=ctx.dtype)
    return {f"hellaswag_{key}": value for key, value in result.items()}  # acc, acc_norm, acc_norm_token, n


def _core(model: Any, ctx: SlotContext) -> dict[str, Any]:
    from gpt2.evaluate import core

    cfg = ctx.config
    if "core" not in ctx.cache:  # read (or download) the bundle once per run
        ctx.cache["core"] = core.load_bundle(core.resolve_bundle(cfg.core_bundle), cfg.core_max_per_task)
    return {"core": core.evaluate_core(model, ctx.cache["core"], device=ctx.device, dtype=ctx.dtype)["core"]}


def _gpt2_family(scores: dict[str, float]) -> tuple[tuple[float, str], ...]:
    return tuple((value, f"GPT-2 {size}") for size, value in scores.items())


def _lm_eval(metric: str) -> tuple[float, str]:
    return GPT2_124M_PUBLISHED[("hellaswag", metric)], "GPT-2 124M (lm-eval)"


SLOTS: list[Slot] = [
    Slot(
        "val loss",
        lambda cfg: cfg.eval_every,
        val_loss,
        (
            Metric("val_loss", "val loss", False, ((GPT2_124M_VAL_LOSS, "GPT-2 124M (FineWeb-Edu val)"),)),
            Metric("val_bpb", "val bits per byte", False),
            Metric("val_tokens", "val tokens per evaluation (--eval-tokens)", plot=False),
        ),
    ),
    Slot(
        "hellaswag",
        lambda cfg: cfg.hellaswag_interval,
        _hellaswag,
        (
            Metric("hellaswag_acc_norm", "HellaSwag acc_norm (lm-eval style)", True, (_lm_eval("acc_norm"), CHANCE)),
            Metric(
                "hellaswag_acc_norm_token",
                "HellaSwag acc_norm per token (build-nanogpt style)",
                True,
                ((GPT2_124M_HELLASWAG_PER_TOKEN, "GPT-2 124M (build-nanogpt)"), CHANCE),
            ),
            Metric("hellaswag_acc", "HellaSwag acc", True, (_lm_eval("acc"), CHANCE), plot=False),
            Metric("hellaswag_n", "HellaSwag items", plot=False),
        ),
    ),
    Slot(
        "core",
        lambda cfg: cfg.core_every,
        _core,
        (
            Metric(
                "core",
                "CORE (--core-max-per-task examples a task)",
                True,
                tuple((v, f"GPT-2 {k}") for k, v in GPT2_CORE.items()),
            ),
        ),
    ),
]


def metric(key: str) -> Metric:
    """The presentation of eval-row field ``key``: a slot's :class:`Metric`, else plainly by its name."""
    for slot in SLOTS:
        for known in slot.metrics:
            if known.key == key:
                return known
    return Metric(key, key)
