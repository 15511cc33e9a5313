"""Tokenizer throughput: `gpt2 prepare` on N workers vs build-nanogpt's fineweb.py method vs one tiktoken process.

    PYTHONPATH=src python scripts/bench_tokenize_workers.py ../shared/data/wiki/enwiki_sample.jsonl \
        --chars 8e6 --workers 1 2 --repeat 5

All methods tokenize the same documents (the first ``--chars`` characters of a JSONL corpus, loaded into memory
once) into ``[EOT] + encode_ordinary(text)`` per document, and are timed in turn within each repeat (medians):

* ``one``: a single process looping ``encode_ordinary`` (the inner loop of fineweb.py, nothing else);
* ``pool-N``: fineweb.py's method: ``multiprocessing.Pool(N).imap(tokenize, docs, chunksize=16)`` with its
  ``tokenize`` (list -> np.array -> uint16) and its shard buffer filled in the main process (pool started
  outside the timing, nothing written: both in the reference's favour);
* ``prepare-N``: ``gpt2.data.prepare_documents(docs, ..., workers=N)``: the whole pipeline, 500k-token shards
  written with fsync and SHA-256, manifest;
* ``files-N``: ``gpt2 prepare files`` on the same documents as a JSONL file (adds reading + JSON parsing).

Also prints CPU seconds (this process + children) per method and the load average before and after, since
the development machine is shared. Token counts of all methods must agree.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import resource
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from gpt2.data.prepare import prepare_documents
from gpt2.data.sources import file_documents
from gpt2.tokenizer import get_tokenizer

# Shards of 500k tokens: several per run, so writing + hashing (a fixed cost per token, ~16 ns) weighs in the
# timing as much as with 100M-token shards on a real corpus.
SHARD_TOKENS = 500_000
enc = get_tokenizer().encoding  # tiktoken's GPT-2 Encoding, built offline (= tiktoken.get_encoding("gpt2"))
EOT = enc._special_tokens["<|endoftext|>"]


def tokenize(doc: str) -> np.ndarray:  # build-nanogpt fineweb.py, verbatim apart from the argument
    tokens = [EOT]
    tokens.extend(enc.encode_ordinary(doc))
    tokens_np = np.array(tokens)
    assert (0 <= tokens_np).all() and (tokens_np < 2**16).all(), "token dictionary too large for uint16"  # noqa: SIM300
    return tokens_np.astype(np.uint16)


def cpu_seconds(pids: list[int]) -> float:
    """CPU seconds of this process (all threads) and of the live processes ``pids`` (the pool workers)."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    ticks = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        ticks += int(fields[11]) + int(fields[12])  # utime + stime
    return own.ru_utime + own.ru_stime + ticks / os.sysconf("SC_CLK_TCK")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("corpus", type=Path, help="JSONL file, one {'text': ...} per line")
    parser.add_argument("--chars", type=float, default=8e6, help="characters of documents to tokenize")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()

    docs, size = [], 0
    with args.corpus.open(encoding="utf-8") as f:
        for line in f:
            docs.append(json.loads(line)["text"])
            size += len(docs[-1])
            if size >= args.chars:
                break
    scratch = Path(tempfile.mkdtemp(prefix="bench-tokenize-"))
    jsonl = scratch / "docs.jsonl"
    jsonl.write_text("".join(json.dumps({"text": d}) + "\n" for d in docs), encoding="utf-8")
    counts: dict[str, int] = {}
    pools = {n: mp.get_context("fork").Pool(n) for n in args.workers}

    def one() -> int:
        return sum(len(enc.encode_ordinary(d)) + 1 for d in docs)

    def pool(n: int) -> int:
        shard, count = np.empty(10**8, dtype=np.uint16), 0  # fineweb.py's shard buffer (100M tokens)
        for tokens in pools[n].imap(tokenize, docs, chunksize=16):
            shard[count : count + len(tokens)] = tokens
            count += len(tokens)
        return count

    def ours(n: int, texts) -> int:
        out = scratch / "out"
        manifest = prepare_documents(texts(), out, shard_tokens=SHARD_TOKENS, val_tokens=0, workers=n)
        shutil.rmtree(out)
        return manifest["total_tokens"]

    methods = {"one": one}
    for n in args.workers:
        methods[f"pool-{n}"] = lambda n=n: pool(n)
        methods[f"prepare-{n}"] = lambda n=n: ours(n, lambda: docs)
        methods[f"files-{n}"] = lambda n=n: ours(n, lambda: file_documents([jsonl]))
    load_before = os.getloadavg()
    times: dict[str, list[float]] = {name: [] for name in methods}
    cpu: dict[str, list[float]] = {name: [] for name in methods}
    main_cpu: dict[str, list[float]] = {name: [] for name in methods}  # the serial part: the main thread's CPU
    workers = [w.pid for p in pools.values() for w in p._pool]
    try:
        for name, fn in methods.items():  # warm-up: page cache, tokenizer, pool workers' imports
            counts[name] = fn()
        for _ in range(args.repeat):
            for name, fn in methods.items():
                c0, m0, t0 = cpu_seconds(workers), time.thread_time(), time.perf_counter()
                counts[name] = fn()
                times[name].append(time.perf_counter() - t0)
                main_cpu[name].append(time.thread_time() - m0)
                cpu[name].append(cpu_seconds(workers) - c0)
    finally:
        for p in pools.values():
            p.terminate()
        shutil.rmtree(scratch, ignore_errors=True)
    load_after = os.getloadavg()
    if len(set(counts.values())) != 1:
        raise SystemExit(f"token counts differ: {counts}")
    tokens = counts["one"]
    base = statistics.median(times["one"])
    print(f"{len(docs):,} documents, {size / 1e6:.1f}M chars, {tokens:,} tokens; {os.cpu_count()} CPUs")
    print(f"load average before {load_before[0]:.1f}, after {load_after[0]:.1f} (1 min)")
    print("cpu s: all threads and pool workers; main s: the main thread alone (the part that cannot run in parallel)")
    print(f"{'method':<12} {'median s':>9} {'Mtok/s':>8} {'vs one':>7} {'cpu s':>7} {'main s':>7}  all runs (s)")
    for name in methods:
        t = statistics.median(times[name])
        runs = " ".join(f"{x:.2f}" for x in times[name])
        total, main_part = statistics.median(cpu[name]), statistics.median(main_cpu[name])
        print(f"{name:<12} {t:9.2f} {tokens / t / 1e6:8.2f} {base / t:6.2f}x {total:7.2f} {main_part:7.2f}  {runs}")


if __name__ == "__main__":
    main()
