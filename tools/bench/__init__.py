"""Benchmarks: our speed against reference implementations, measured side by side in one process."""
