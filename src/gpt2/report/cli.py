"""``gpt2 plot`` and ``gpt2 report``. Light at import: the report modules (and matplotlib) load only in ``run_*``."""

from __future__ import annotations

import argparse


def add_plot_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="training run directories (with metrics.jsonl)")
    parser.add_argument("--out", required=True, metavar="FILE.png", help="where to write the PNG figure")
    parser.add_argument("--log-x", action="store_true", help="logarithmic tokens axis")


def run_plot(args: argparse.Namespace) -> int:
    from gpt2.report.plot import write_plot

    out = write_plot(args.run_dirs, args.out, log_x=args.log_x)
    print(f"wrote {out}")
    return 0


def add_report_arguments(parser: argparse.ArgumentParser) -> None:
    from gpt2.store.rundir import RunDir

    names = RunDir("RUN_DIR")
    parser.add_argument("run_dir", metavar="RUN_DIR", help="a training run directory (with metrics.jsonl)")
    parser.add_argument("--out", metavar="FILE.md", help=f"Markdown file to write (default: {names.report})")
    parser.add_argument("--no-plot", action="store_true", help=f"do not (re)draw {names.plot}")


def run_report(args: argparse.Namespace) -> int:
    from gpt2.report.markdown import write_report

    out = write_report(args.run_dir, args.out, plot=not args.no_plot)
    print(f"wrote {out}")
    return 0
