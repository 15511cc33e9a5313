"""`python -m tools.bench tokenize`: both sides count the same tokens on the same documents (no timing assertions)."""

import json
import math

import pytest

from gpt2 import GPT2Error
from tools.bench import tokenize


def test_quick_run_compares_like_with_like():
    (result,) = tokenize.run(repeat=1, quick=True)
    docs, corpus = tokenize.bench_documents(100_000)
    assert result.extra["corpus"] == corpus and result.extra["documents"] == len(docs)
    assert result.extra["tokens"] > len(docs)  # at least one token per document besides its EOT
    assert result.unit == "tok/s" and "encode_ordinary" in result.reference_name
    assert result.ratio == pytest.approx(result.ours / result.reference)
    assert all(math.isfinite(v) and v > 0 for v in (result.ours, result.reference, result.extra["ours_1_worker_tok_s"]))


def test_corpus_comes_from_gpt2_wiki_path(tmp_path, monkeypatch):
    corpus = tmp_path / "wiki.jsonl"
    corpus.write_text("".join(json.dumps({"text": f"Article {i}. " * 50}) + "\n" for i in range(20)))
    monkeypatch.setenv("GPT2_WIKI_PATH", str(corpus))
    docs, name = tokenize.bench_documents(1_000)
    assert name == "wiki" and docs[0].startswith("Article 0. ") and 1_000 <= sum(map(len, docs)) < 1_000 + 700
    monkeypatch.setenv("GPT2_WIKI_PATH", str(tmp_path / "missing.jsonl"))
    with pytest.raises(GPT2Error, match=r"\$GPT2_WIKI_PATH is '.*missing.jsonl', which is not a file"):
        tokenize.bench_documents(1_000)
    monkeypatch.setenv("GPT2_WIKI_PATH", "")
    assert tokenize.bench_documents(1_000)[1] == "demo"
