"""Training reports: ``gpt2 plot`` (PNG figure of one or more runs) and ``gpt2 report`` (Markdown summary).

Both read what the trainer wrote (metrics.jsonl, run.json, checkpoints); the trainer itself draws no plots.
"""

from gpt2.report.markdown import add_report_arguments, render_report, run_report, write_report
from gpt2.report.metrics import RunMetrics, read_run, read_runs
from gpt2.report.plot import add_plot_arguments, run_plot, write_plot

__all__ = [
    "RunMetrics",
    "add_plot_arguments",
    "add_report_arguments",
    "read_run",
    "read_runs",
    "render_report",
    "run_plot",
    "run_report",
    "write_plot",
    "write_report",
]
