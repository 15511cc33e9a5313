"""Developer tools outside the installed ``gpt2`` package (``python -m tools.NAME``)."""
