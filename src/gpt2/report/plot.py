"""A 2×2 figure of training runs — loss, learning rate, HellaSwag and throughput against tokens.

Runs without any HellaSwag evaluation get three panels (the loss across the top) instead of an empty one.

matplotlib is imported inside the functions (Agg backend, no display needed) so that ``gpt2 --help`` and the
trainer stay light; the trainer can call :func:`write_plot` at every eval.
"""

from __future__ import annotations

import math
from pathlib import Path

from gpt2.errors import GPT2Error
from gpt2.report.metrics import RunMetrics, read_runs
from gpt2.report.units import human_count
from gpt2.store.files import atomic_output

# OpenAI GPT-2 124M reference numbers. Both are measured on/with FineWeb-Edu-era evaluations, so they only mean
# something for runs trained on FineWeb-Edu (not for the Shakespeare demo or other corpora).
GPT2_124M_VAL_LOSS = 3.2924  # FineWeb-Edu val, as reported by build-nanogpt / llm.c
GPT2_124M_HELLASWAG_BUILD_NANOGPT = 0.294  # acc_norm, mean loss per completion token (build-nanogpt's hellaswag.py)
GPT2_124M_HELLASWAG_LM_EVAL = 0.311  # acc_norm, loss normalised by completion bytes (EleutherAI lm-eval-harness)
HELLASWAG_CHANCE = 0.25  # four endings

SMOOTH_MIN_POINTS = 50  # below this many train steps the raw loss is shown without a smoothed line


def smoothed(values: list[float], window_fraction: float = 0.02) -> list[float]:
    """Exponential moving average with a bias correction (like TensorBoard's), span ≈ 2% of the points."""
    span = max(2.0, window_fraction * len(values))
    alpha = 2.0 / (span + 1.0)
    out, avg, weight = [], 0.0, 0.0
    for v in values:
        avg = (1 - alpha) * avg + alpha * v
        weight = (1 - alpha) * weight + alpha
        out.append(avg / weight)
    return out


def _finite(xs: list[float], ys: list[float]) -> tuple[list[float], list[float]]:
    # A NaN/inf loss (a diverged step) would blank matplotlib's autoscale; leave those points out.
    pairs = [(x, y) for x, y in zip(xs, ys, strict=True) if math.isfinite(y)]
    return [p[0] for p in pairs], [p[1] for p in pairs]


def _plot_loss(ax, runs: list[RunMetrics], colors: list) -> None:
    for run, color in zip(runs, colors, strict=True):
        xs, ys = _finite(*run.series("train", "loss"))
        if xs:
            if len(xs) >= SMOOTH_MIN_POINTS:
                ax.plot(xs, ys, color=color, alpha=0.25, linewidth=0.8)
                ax.plot(xs, smoothed(ys), color=color, linewidth=1.5, label=f"{run.name} train")
            else:
                ax.plot(xs, ys, color=color, linewidth=1.2, label=f"{run.name} train")
        vx, vy = _finite(*run.series("evals", "val_loss"))
        if vx:
            ax.plot(vx, vy, color=color, linestyle="--", marker="o", markersize=4, label=f"{run.name} val")
    ax.axhline(
        GPT2_124M_VAL_LOSS,
        color="tab:red",
        linestyle=":",
        linewidth=1.2,
        label=f"OpenAI GPT-2 124M val {GPT2_124M_VAL_LOSS} (FineWeb-Edu)",
    )
    ax.set_title("loss (train smoothed, val dashed)")
    ax.set_ylabel("cross-entropy (nats/token)")


def _plot_lr(ax, runs: list[RunMetrics], colors: list) -> None:
    for run, color in zip(runs, colors, strict=True):
        xs, ys = run.series("train", "lr")
        if xs:
            ax.plot(xs, ys, color=color, linewidth=1.2, label=run.name)
    ax.set_title("learning rate")
    ax.ticklabel_format(axis="y", style="sci", scilimits=(-3, 3))


def _plot_hellaswag(ax, runs: list[RunMetrics], colors: list) -> None:
    values: list[float] = []
    for run, color in zip(runs, colors, strict=True):
        for key, style, marker, what in (
            ("hellaswag_acc_norm", "-", "o", "acc_norm"),
            ("hellaswag_acc_norm_token", "--", "s", "acc_norm per token"),
        ):
            xs, ys = run.series("evals", key)
            if xs:
                ax.plot(xs, ys, color=color, linestyle=style, marker=marker, markersize=5, label=f"{run.name} {what}")
                values.extend(ys)
    ax.axhline(
        GPT2_124M_HELLASWAG_LM_EVAL,
        color="tab:red",
        linestyle="-",
        linewidth=1,
        label=f"GPT-2 124M {GPT2_124M_HELLASWAG_LM_EVAL} (lm-eval acc_norm)",
    )
    ax.axhline(
        GPT2_124M_HELLASWAG_BUILD_NANOGPT,
        color="tab:red",
        linestyle="--",
        linewidth=1,
        label=f"GPT-2 124M {GPT2_124M_HELLASWAG_BUILD_NANOGPT} (build-nanogpt, per token)",
    )
    ax.axhline(HELLASWAG_CHANCE, color="gray", linestyle=":", linewidth=1, label="chance 0.25")
    ax.set_title("HellaSwag accuracy")
    # Keep the reference lines and every point in view, with a margin so points on the edge stay visible.
    ax.set_ylim(min([0.2, *values]) - 0.02, max([0.35, *values]) + 0.02)


def _plot_throughput(ax, runs: list[RunMetrics], colors: list) -> None:
    for run, color in zip(runs, colors, strict=True):
        xs, ys = _finite(*run.series("train", "tok_per_s"))
        if xs:
            ax.plot(xs, ys, color=color, linewidth=1, label=run.name)
    ax.set_title("throughput (tokens/s, all ranks)")
    ax.set_ylim(bottom=0)


def _minor_log_label(x: float, _pos: int) -> str:
    leading = f"{x:e}"[0]
    return human_count(x) if leading in "25" else ""


def panel_layout(runs: list[RunMetrics]) -> list[list[str]]:
    """The figure's 2×2 grid of panel names (loss, lr, hs = HellaSwag, tps = throughput).

    Without any HellaSwag eval (e.g. an offline run that had no data) an empty accuracy panel would look like
    a failure: it is left out and the loss curve gets the whole top row instead.
    """
    if any(run.series("evals", "hellaswag_acc_norm")[0] for run in runs):
        return [["loss", "lr"], ["hs", "tps"]]
    return [["loss", "loss"], ["lr", "tps"]]


def write_plot(run_dirs: list[str | Path] | str | Path, out: str | Path, log_x: bool = False) -> Path:
    """Draw the training figure for one or several run directories into the PNG ``out``; returns its path.

    Written atomically (temp file + rename) so a viewer, or the web app, never sees a half-written image.
    """
    if isinstance(run_dirs, (str, Path)):
        run_dirs = [run_dirs]
    if not run_dirs:
        raise GPT2Error("gpt2 plot needs at least one run directory")
    out = Path(out)
    if out.suffix.lower() != ".png":
        raise GPT2Error(f"--out {out}: the plot is written as PNG, give a file name ending in .png")
    runs = read_runs(list(run_dirs))

    import matplotlib

    matplotlib.use("Agg")  # no display on servers and CI; must precede pyplot
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    colors = [plt.get_cmap("tab10")(i % 10) for i in range(len(runs))]
    layout = panel_layout(runs)
    has_hellaswag = "hs" in layout[1]
    # One shared tokens axis: a HellaSwag eval logged only at the end still lines up with the loss curve.
    fig, axes = plt.subplot_mosaic(layout, figsize=(13, 8.5), sharex=True, constrained_layout=True)
    _plot_loss(axes["loss"], runs, colors)
    _plot_lr(axes["lr"], runs, colors)
    if has_hellaswag:
        _plot_hellaswag(axes["hs"], runs, colors)
    if log_x:
        axes["loss"].set_xscale("log")  # shared: applies to every panel
    _plot_throughput(axes["tps"], runs, colors)
    token_ticks = matplotlib.ticker.FuncFormatter(lambda x, _pos: human_count(x))
    for ax in axes.values():
        ax.set_xlabel("tokens seen")
        ax.tick_params(labelbottom=True)  # sharex hides the top row's labels; keep them, the panels are far apart
        ax.xaxis.set_major_formatter(token_ticks)
        if ax.get_xscale() == "log":
            # Label a few minor ticks too, so a log axis spanning less than a decade still has readable labels.
            ax.xaxis.set_minor_formatter(matplotlib.ticker.FuncFormatter(_minor_log_label))
        ax.grid(True, alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8, loc="best")
    names = ", ".join(run.name for run in runs)
    notes = "red lines: OpenAI GPT-2 124M on FineWeb-Edu — only comparable for FineWeb-Edu runs"
    if not has_hellaswag:
        notes += "\nno HellaSwag panel: no HellaSwag evaluation was logged (`gpt2 eval hellaswag` scores it later)"
    fig.suptitle(f"{names}\n{notes}", fontsize=11)
    try:
        with atomic_output(out) as tmp:
            fig.savefig(tmp, dpi=100, format="png")
    finally:
        plt.close(fig)
    return out
