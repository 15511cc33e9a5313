"""Training reports: ``gpt2 plot`` (PNG figure of one or more runs) and ``gpt2 report`` (Markdown summary).

``gpt2.report.metrics``   read metrics.jsonl / run.json of a run directory
``gpt2.report.plot``      the figure: loss, lr, throughput, a panel per eval metric (matplotlib, when drawing)
``gpt2.report.markdown``  the Markdown summary
``gpt2.report.cli``       the ``gpt2 plot`` / ``gpt2 report`` commands

Names resolve on first use (lazy), so importing the package costs nothing.

Both read what the trainer wrote (metrics.jsonl, run.json, checkpoints); the trainer itself draws no plots.
"""

from gpt2._lazy import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(
    __name__,
    {
        "gpt2.report.markdown": ("render_report", "write_report"),
        "gpt2.report.metrics": ("RunMetrics", "read_run", "read_runs"),
        "gpt2.report.plot": ("write_plot",),
    },
)
