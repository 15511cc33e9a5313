"""The figure of training runs against tokens: loss (train and val), learning rate, throughput, and one panel per
in-loop evaluation metric the runs logged (a benchmark's accuracy, ...), with its reference lines.

Which eval metrics get a panel, their titles and reference lines come from :mod:`gpt2.evaluate.slots`; a
metric no slot describes gets a panel under its own name.

matplotlib is imported inside the functions (Agg backend, no display needed) so that ``gpt2 --help`` and the
trainer stay light; the trainer can call :func:`write_plot` at every eval.
"""

from __future__ import annotations

import math
from pathlib import Path

from gpt2.errors import GPT2Error
from gpt2.evaluate.slots import metric
from gpt2.report.metrics import RunMetrics, read_runs
from gpt2.report.units import human_count
from gpt2.store.files import atomic_output

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
    _references(ax, "val_loss")
    ax.set_title("loss (train smoothed, val dashed)")
    ax.set_ylabel("cross-entropy (nats/token)")


def _references(ax, key: str) -> None:
    """The reference lines of eval metric ``key`` (gpt2.evaluate.slots); red, one line style each."""
    for (value, what), style in zip(metric(key).references, (":", "--", "-."), strict=False):
        ax.axhline(value, color="tab:red", linestyle=style, linewidth=1.2, label=f"{what} {value}")


def _plot_series(ax, runs: list[RunMetrics], colors: list, rows: str, key: str, title: str, **style) -> None:
    """A line per run of field ``key`` of its ``rows`` ("train" or "evals"), and the field's reference lines."""
    for run, color in zip(runs, colors, strict=True):
        xs, ys = _finite(*run.series(rows, key))
        if xs:
            ax.plot(xs, ys, color=color, label=run.name, **style)
    _references(ax, key)
    ax.set_title(title)


def _minor_log_label(x: float, _pos: int) -> str:
    leading = f"{x:e}"[0]
    return human_count(x) if leading in "25" else ""


def plotted_metrics(runs: list[RunMetrics]) -> list[str]:
    """The eval metrics that get a panel of their own: all but val_loss (on the loss panel) and the report-only."""
    keys = {key: None for run in runs for key in run.eval_keys() if key != "val_loss" and metric(key).plot}
    return [key for key in keys if any(run.series("evals", key)[0] for run in runs)]


def panel_layout(runs: list[RunMetrics]) -> list[list[str]]:
    """The figure's grid of panel names, two columns: loss, lr, tps (throughput), then one per eval metric.

    With an odd number of panels besides the loss, the loss curve takes the whole top row (no empty cell).
    """
    names = ["lr", "tps", *plotted_metrics(runs)]
    cells = ["loss", "loss", *names] if len(names) % 2 == 0 else ["loss", *names]
    return [cells[i : i + 2] for i in range(0, len(cells), 2)]


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
    # One shared tokens axis: an evaluation logged only at the end still lines up with the loss curve.
    fig, axes = plt.subplot_mosaic(
        layout,  # type: ignore[arg-type]  # a list[list[str]] is a mosaic; the stub's HashableList is invariant
        figsize=(13, 2 + 3.25 * len(layout)),
        sharex=True,
        constrained_layout=True,
    )
    _plot_loss(axes["loss"], runs, colors)
    _plot_series(axes["lr"], runs, colors, "train", "lr", "learning rate", linewidth=1.2)
    axes["lr"].ticklabel_format(axis="y", style="sci", scilimits=(-3, 3))
    _plot_series(axes["tps"], runs, colors, "train", "tok_per_s", "throughput (tokens/s, all ranks)", linewidth=1)
    axes["tps"].set_ylim(bottom=0)
    for key in plotted_metrics(runs):
        _plot_series(axes[key], runs, colors, "evals", key, metric(key).label, marker="o", markersize=5)
    if log_x:
        axes["loss"].set_xscale("log")  # shared: applies to every panel
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
    notes = "red lines: OpenAI GPT-2 124M and chance — the loss is only comparable for FineWeb-Edu runs"
    fig.suptitle(f"{names}\n{notes}", fontsize=11)
    try:
        with atomic_output(out) as tmp:
            fig.savefig(tmp, dpi=100, format="png")
    finally:
        plt.close(fig)
    return out
