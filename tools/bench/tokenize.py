"""``python -m tools.bench tokenize``: tokens/s of ``gpt2 prepare`` vs a single-process tiktoken loop, same documents.

Ours is the whole ``prepare_documents`` pipeline (threaded ``encode_to_numpy``, EOT insertion, shard
writing with fsync, manifest) with the default worker count (= CPU cores). The reference is the
inner loop of build-nanogpt's ``fineweb.py`` run in one process: ``encode_ordinary`` per document,
nothing written. Both see the same documents — the first part of the JSONL corpus named by ``$GPT2_WIKI_PATH``
(e.g. a Wikipedia sample, one ``{"text": ...}`` per line) when it is set, else the offline demo corpus — timed
alternately within each repeat. Full size is ~4 M characters (~1 M tokens): enough for steady rates, small
enough for ``python -m tools.bench all`` on 2 cores.
"""

from __future__ import annotations

import itertools
import shutil
import tempfile
from pathlib import Path

from gpt2.data.encode import default_workers
from gpt2.data.prepare import prepare_documents
from gpt2.data.sources import demo_documents, file_documents
from gpt2.store.files import file_from_env
from gpt2.tokenizer import get_tokenizer
from tools.bench.core import BenchResult, interleaved_median_seconds

WIKI_PATH_ENV = "GPT2_WIKI_PATH"  # a JSONL corpus to tokenize instead of the demo corpus (``make`` may set it)


def corpus_file() -> Path | None:
    """The file named by ``$GPT2_WIKI_PATH``; None when unset or empty; a GPT2Error when it is no file."""
    return file_from_env(WIKI_PATH_ENV, "name a JSONL corpus or unset it")


def bench_documents(max_chars: int) -> tuple[list[str], str]:
    """(documents totalling about ``max_chars`` characters, corpus name)."""
    path = corpus_file()
    source, name = (file_documents([path]), path.stem) if path is not None else (demo_documents(), "demo")
    docs, size = [], 0
    for text in source:
        docs.append(text)
        size += len(text)
        if size >= max_chars:
            break
    return docs, name


def run(device: str = "cpu", repeat: int = 3, quick: bool = False) -> list[BenchResult]:
    """Tokenization throughput (tok/s) of prepare vs the reference; ``device`` is unused (CPU work)."""
    docs, corpus = bench_documents(100_000 if quick else 4_000_000)
    encoding = get_tokenizer().encoding
    workers = default_workers()
    scratch = Path(tempfile.mkdtemp(prefix="gpt2-bench-tokenize-"))
    counter = itertools.count()
    tokens = {}

    def reference() -> None:
        tokens["reference"] = sum(len(encoding.encode_ordinary(text)) + 1 for text in docs)  # +1: the EOT

    def ours(n_workers: int) -> None:
        out = scratch / f"run{next(counter)}"
        manifest = prepare_documents(docs, out, shard_tokens=10_000_000, val_tokens=0, workers=n_workers)
        tokens["ours"] = manifest["total_tokens"]
        shutil.rmtree(out)

    try:
        times = interleaved_median_seconds(
            {"ours": lambda: ours(workers), "ours_1": lambda: ours(1), "reference": reference},
            repeat=repeat,
            warmup=0 if quick else 1,
        )
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    if tokens["ours"] != tokens["reference"]:
        raise RuntimeError(f"prepare wrote {tokens['ours']} tokens, the reference counted {tokens['reference']}")
    n = tokens["ours"]
    ours_rate, reference_rate = n / times["ours"], n / times["reference"]
    return [
        BenchResult(
            name=f"prepare tokens/s ({workers} workers)",
            ours=ours_rate,
            reference=reference_rate,
            unit="tok/s",
            ratio=ours_rate / reference_rate,
            reference_name="tiktoken encode_ordinary loop, 1 process (build-nanogpt fineweb.py inner loop)",
            extra={
                "corpus": corpus,
                "documents": len(docs),
                "tokens": n,
                "workers": workers,
                "ours_1_worker_tok_s": n / times["ours_1"],
            },
        )
    ]
