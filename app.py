"""Seed-compatible entry point: ``python app.py`` serves the web app, like ``gpt2 serve``.

    python app.py                       # serves runs/demo/run (made by `make demo`) if it exists
    python app.py --model models/gpt2   # any checkpoint, run dir, Hugging Face dir or hub name
    python app.py --port 8000 --host 127.0.0.1

Without a model the page explains how to get one. All the work is done by ``gpt2.serve``.
"""

import sys
from pathlib import Path

from gpt2.cli import main

DEMO_RUN = Path(__file__).resolve().parent / "runs" / "demo" / "run"

if __name__ == "__main__":
    argv = sys.argv[1:]
    if "--model" not in argv and not any(a.startswith("--model=") for a in argv) and DEMO_RUN.is_dir():
        argv = ["--model", str(DEMO_RUN), *argv]
    sys.exit(main(["serve", *argv]))
