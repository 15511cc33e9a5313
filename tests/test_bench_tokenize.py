"""`gpt2 bench tokenize`: both sides count the same tokens on the same documents (no timing assertions)."""

import math

import pytest

from gpt2.bench import tokenize


def test_quick_run_compares_like_with_like():
    (result,) = tokenize.run(repeat=1, quick=True)
    docs, corpus = tokenize.bench_documents(100_000)
    assert result.extra["corpus"] == corpus and result.extra["documents"] == len(docs)
    assert result.extra["tokens"] > len(docs)  # at least one token per document besides its EOT
    assert result.unit == "tok/s" and "encode_ordinary" in result.reference_name
    assert result.ratio == pytest.approx(result.ours / result.reference)
    assert all(math.isfinite(v) and v > 0 for v in (result.ours, result.reference, result.extra["ours_1_worker_tok_s"]))
