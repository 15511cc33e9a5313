"""Shared pieces of the training tests: a small prepared dataset and tiny-run command lines."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time
from itertools import islice
from pathlib import Path

from gpt2.data import prepare_documents
from gpt2.store.rundir import read_metrics
from gpt2.train.config import TrainConfig
from gpt2.train.init import resolve_config

REPO = Path(__file__).resolve().parents[1]
WIKI = REPO.parent / "shared" / "data" / "wiki" / "enwiki_sample.jsonl"
GPT2_TRAIN = [sys.executable, "-m", "gpt2", "train"]  # the `gpt2 train` command of this interpreter

# A tiny model on short sequences: 2 layers x 64 channels, 128 tokens per optimizer step
# (micro-batch 2 x 32 tokens x 2 accumulation steps, so accumulation is always exercised).
TINY_RUN = ["--size", "tiny", "--seq-len", "32", "--micro-batch", "2", "--batch-tokens", "128"]
QUIET = ["--eval-every", "0", "--hellaswag-every", "0", "--sample-every", "0", "--device", "cpu", "--seed", "7"]


def synthetic_texts(count: int, seed: int = 0) -> list[str]:
    """Deterministic pseudo-English documents (for machines without ../shared/data)."""
    rng = random.Random(seed)
    words = ["the", "a", "of", "model", "data", "train", "loss", "token", "step", "river", "city", "music"]
    return [" ".join(rng.choice(words) for _ in range(rng.randint(80, 200))) + "." for _ in range(count)]


def wiki_texts(count: int) -> list[str] | None:
    """The first ``count`` articles of the Wikipedia sample, or None when ../shared/data is absent."""
    if not WIKI.is_file():
        return None
    with WIKI.open(encoding="utf-8") as f:
        return [json.loads(line)["text"] for line in islice(f, count)]


def prepared_dataset(base: Path, wiki_only: bool = False) -> Path | None:
    """A small dataset under ``base`` (built once per session): a Wikipedia slice when available,
    else synthetic text (None with ``wiki_only`` when the slice is unavailable)."""
    texts = wiki_texts(80)
    if texts is None and wiki_only:
        return None
    out = base / ("wiki-slice" if texts is not None else "synthetic")
    if not (out / "manifest.json").is_file():
        prepare_documents(texts or synthetic_texts(200), out, shard_tokens=10_000, val_tokens=4_000)
    return out


def tiny_config(data: Path, out: Path, **overrides) -> TrainConfig:
    """The TrainConfig of TINY_RUN + QUIET (6 steps, lr 3e-3, no saves in between), with ``overrides``
    (``init_from=SRC`` fine-tunes: the shape comes from SRC, which has to be tiny's)."""
    options = dict(
        size="tiny", data=str(data), out=str(out), steps=6, batch_tokens=128, micro_batch=2, seq_len=32,
        lr=3e-3, warmup_steps=2, eval_every=0, hellaswag_every=0, sample_every=0, save_every=0, seed=7,
    )  # fmt: skip
    return resolve_config({**options, **overrides}, "cpu")[0]


def train_losses(run_dir: Path) -> list[float]:
    return [row["loss"] for row in read_metrics(run_dir) if row["type"] == "train"]


def subprocess_env() -> dict[str, str]:
    # One thread per process: 2 cores are shared, and identical thread counts keep runs bitwise comparable.
    return {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def wait_for(predicate, procs: list[subprocess.Popen], timeout: float = 150.0) -> bool:
    """Poll ``predicate`` until true (True), or until ``timeout`` s pass or one of ``procs`` exits (False)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline or any(p.poll() is not None for p in procs):
            return False
        time.sleep(0.02)
    return True


def start_train(args: list[str], log: Path) -> subprocess.Popen:
    """``gpt2 train ARGS`` in a subprocess, output to ``log``."""
    handle = log.open("w")
    return subprocess.Popen([*GPT2_TRAIN, *args], stdout=handle, stderr=subprocess.STDOUT, env=subprocess_env())


def run_train(args: list[str], timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([*GPT2_TRAIN, *args], capture_output=True, text=True, env=subprocess_env(), timeout=timeout)
