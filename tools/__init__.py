"""Tools around the ``gpt2`` package, not installed with it: benchmarks (``python -m tools.bench``), the GPU check
(``scripts/gpu-check.sh``) and the demo pipeline (``make demo``). Run them from the repository root.

They import ``gpt2``; nothing in ``src/gpt2`` imports them (tests/test_layering.py checks).
"""
