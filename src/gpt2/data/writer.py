"""``ShardWriter``: a stream of tokenized documents → val/train shards + a resumable manifest.

The token stream is cut into shards of exactly ``shard_tokens`` tokens (the last shard of each
split may be shorter); a document may straddle two shards. The validation split is the first
``val_tokens`` tokens of the stream (as in build-nanogpt, where shard 0 is val), so sizes are exact
and predictable; at most one document is split between val and train, as in build-nanogpt.

A corpus too small for that split never yields a dataset without train tokens: nothing is written until
the stream is known to be big enough (more than ``val_tokens``; with ``val_fraction``, 2 x ``val_tokens``).
A smaller corpus gets a val split of ``val_fraction`` of its tokens (nanoGPT's prepare.py: 10%), or,
without ``val_fraction`` (an explicit val size), is an error. Holding back costs up to 2 x ``val_tokens``
tokens of memory (2 bytes each) before the first shard, and a run interrupted before it starts over.

After every shard the manifest is rewritten with ``complete: false`` and a *cursor* — the source
index of the document holding the first unwritten token and that token's offset inside the
document — so an interrupted prepare restarts right there (``resume_point``) without redoing
finished shards. Every file is written temp + fsync + rename, on a writer thread (hashing and fsync
release the GIL), so encoding never waits for a shard to reach the disk; :meth:`ShardWriter.close` waits
for the shard in flight.
"""

from __future__ import annotations

from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from gpt2.data.manifest import open_dataset, write_manifest
from gpt2.data.shards import MAX_SHARD_TOKENS, write_shard
from gpt2.errors import GPT2Error


class ShardWriter:
    """Write tokenized documents to ``out_dir`` as llm.c shards; see the module docstring.

    Args:
        out_dir: dataset directory (created if missing).
        source: human-readable source description stored in the manifest.
        shard_tokens: tokens per shard.
        val_tokens: minimum size of the validation split (0 = no validation split).
        prefix: shard file name prefix, e.g. ``edufineweb`` → ``edufineweb_val_000000.bin``.
        max_tokens: stop after exactly this many tokens (None = the whole source).
        options: everything that determines the output; a re-run resumes only if they are equal.
        val_fraction: the val split of a corpus smaller than 2 x ``val_tokens``, as a fraction of its tokens
            (None: ``val_tokens`` exactly, and a corpus of at most ``val_tokens`` tokens is an error).
    """

    def __init__(
        self,
        out_dir: str | Path,
        *,
        source: str,
        shard_tokens: int,
        val_tokens: int,
        prefix: str = "data",
        max_tokens: int | None = None,
        options: dict[str, Any] | None = None,
        val_fraction: float | None = None,
    ):
        if not 1 <= shard_tokens <= MAX_SHARD_TOKENS:
            raise GPT2Error(
                f"--shard-tokens must be in [1, {MAX_SHARD_TOKENS}] (an int32 header field), got {shard_tokens}"
            )
        if val_tokens < 0 or (max_tokens is not None and max_tokens < 1):
            raise GPT2Error("--val-tokens must be >= 0 and --max-tokens >= 1")
        self.out_dir = Path(out_dir)
        self.shard_tokens, self.val_tokens, self.prefix, self.max_tokens = shard_tokens, val_tokens, prefix, max_tokens
        self.options = dict(options or {})
        self.options.update(shard_tokens=shard_tokens, val_tokens=val_tokens, prefix=prefix, max_tokens=max_tokens)
        self.manifest = open_dataset(self.out_dir, source, self.options)
        progress = self.manifest["progress"]
        self.split: str = progress.get("split", "val" if val_tokens > 0 else "train")
        self.documents: int = progress.get("documents", 0)
        self._cursor: tuple[int, int] = (progress.get("next_document", 0), progress.get("next_token", 0))
        self._written = {"val": 0, "train": 0}
        for shard in self.manifest["shards"]:
            self._written[shard["split"]] += shard["tokens"]
        # Pieces (document index, offset of piece inside the document, tokens) not yet in a shard.
        self._pieces: deque[tuple[int, int, np.ndarray]] = deque()
        self._buffered = 0
        self.val_fraction = val_fraction
        self.requested_val_tokens = val_tokens
        # Whether the val split's size is settled; until then nothing is written (see the module docstring).
        self._val_settled = self.split == "train" or self._written["val"] > 0
        self._shards = len(self.manifest["shards"])  # shards handed to the writer thread (the next one's index)
        # Shards are written (and hashed) on a thread of their own while encoding goes on: the main thread only
        # cuts the token stream. One shard is in flight at most (bounded memory, in order).
        self._io = ThreadPoolExecutor(1, thread_name_prefix="shard-writer")
        self._pending: Future | None = None

    @property
    def complete(self) -> bool:
        """True when the dataset in ``out_dir`` is finished (nothing left to do)."""
        return bool(self.manifest["complete"])

    @property
    def resume_point(self) -> tuple[int, int]:
        """(source index of the first document to feed, tokens of it already written)."""
        return self._cursor

    @property
    def total_tokens(self) -> int:
        """Tokens written to shards or buffered so far."""
        return self._written["val"] + self._written["train"] + self._buffered

    @property
    def done(self) -> bool:
        """True once ``max_tokens`` is reached; further documents are ignored."""
        return self.max_tokens is not None and self.total_tokens >= self.max_tokens

    # -- writing -----------------------------------------------------------------------------------
    def add_document(self, index: int, tokens: np.ndarray) -> None:
        """Append document ``index`` (its tokens, EOT first). Indices must increase; on a resumed run
        the first document fed must be ``resume_point[0]`` and its already-written prefix is dropped."""
        if self.done or self.complete:
            return
        start_doc, start_offset = self._cursor
        if index < start_doc:
            raise ValueError(f"document {index} was already written (resume at {start_doc})")
        offset = start_offset if index == start_doc else 0
        tokens = tokens[offset:]
        if self.max_tokens is not None:
            tokens = tokens[: self.max_tokens - self.total_tokens]
        if offset == 0:  # a continued document was counted before the interruption
            self.documents += 1
        self._pieces.append((index, offset, tokens))
        self._buffered += len(tokens)
        while self._buffered >= (limit := self._shard_limit()):
            self._flush(limit, next_document=index + 1)

    def _shard_limit(self) -> int:
        """Size of the next shard: ``shard_tokens``, or less to end the val split at exactly ``val_tokens``
        (more than the buffer while the val size is not settled: nothing to write yet)."""
        if self.split == "val":
            if not self._val_settled:
                enough = 2 * self.val_tokens if self.val_fraction is not None else self.val_tokens + 1
                if self._buffered < enough:
                    return self._buffered + 1
                self._val_settled = True
            return min(self.shard_tokens, self.val_tokens - self._written["val"])
        return self.shard_tokens

    def _settle_small_corpus(self) -> None:
        """At the end of a stream too small to be sure of: shrink the val split or refuse (module docstring)."""
        total = self._buffered
        if self.val_fraction is not None and total < 2 * self.val_tokens:
            self.val_tokens = int(total * self.val_fraction)
        elif self.val_tokens >= total:
            raise GPT2Error(
                f"--val-tokens {self.val_tokens:,} is not smaller than the corpus ({total:,} tokens), so nothing would "
                f"be left to train on; give a smaller --val-tokens (e.g. {total // 10:,}) or leave it out for a 90/10 "
                "split"
            )
        self._val_settled = True
        if self.val_tokens == 0:  # a corpus of a few tokens: no val split at all
            self.split = "train"

    def _flush(self, count: int, next_document: int) -> None:
        """Hand the first ``count`` buffered tokens to the writer thread as the next shard of the current split."""
        if count == 0:
            return
        parts, taken = [], 0
        while taken < count:
            index, offset, tokens = self._pieces[0]
            take = min(count - taken, len(tokens))
            parts.append(tokens[:take])
            if take == len(tokens):
                self._pieces.popleft()
            else:
                self._pieces[0] = (index, offset + take, tokens[take:])
            taken += take
        shard = {"file": f"{self.prefix}_{self.split}_{self._shards:06d}.bin", "split": self.split, "tokens": count}
        self._shards += 1
        self._buffered -= count
        self._written[self.split] += count
        if self.split == "val" and self._written["val"] >= self.val_tokens:
            self.split = "train"
        if self._pieces:  # the first unwritten token is inside a buffered piece
            next_document, next_token = self._pieces[0][0], self._pieces[0][1]
        else:
            next_token = 0
        self._cursor = (next_document, next_token)
        progress = {
            "next_document": next_document,
            "next_token": next_token,
            "split": self.split,
            # documents whose first token is already in a shard; the buffered ones are counted again on resume
            "documents": self.documents - sum(1 for _, offset, _ in self._pieces if offset == 0),
        }
        self.wait()  # one shard in flight at most; a failed write is raised here
        self._pending = self._io.submit(self._write, parts, shard, progress)

    def _write(self, parts: list[np.ndarray], shard: dict[str, Any], progress: dict[str, Any]) -> None:
        """On the writer thread: the shard file (hashed as it is written), then the manifest that lists it."""
        self.out_dir.mkdir(parents=True, exist_ok=True)
        shard["sha256"] = write_shard(self.out_dir / shard["file"], np.concatenate(parts))
        self.manifest["shards"].append(shard)
        total = sum(s["tokens"] for s in self.manifest["shards"])
        self.manifest.update(progress=progress, total_tokens=total, documents=progress["documents"])
        write_manifest(self.out_dir, self.manifest)

    def close(self) -> None:
        """Let the shard in flight reach the disk (an error of it is raised by :meth:`wait`) and stop the thread."""
        self._io.shutdown(wait=True)

    def wait(self) -> None:
        """Until the shard being written (if any) and its manifest are on disk; raises the write's error."""
        if self._pending is not None:
            pending, self._pending = self._pending, None
            pending.result()

    def finish(self) -> dict[str, Any]:
        """Write the remaining tokens and mark the dataset complete; returns the manifest."""
        if self.complete:
            return self.manifest
        if self.total_tokens == 0:
            raise GPT2Error(f"empty corpus: {self.manifest['source']} has no documents with text")
        if not self._val_settled:  # all of it is still buffered: write it in the split it turned out to get
            self._settle_small_corpus()
            while self._buffered >= (limit := self._shard_limit()):
                self._flush(limit, next_document=self._cursor[0])
        self._flush(self._buffered, next_document=self._cursor[0])
        self.wait()
        self.manifest.update(documents=self.documents, total_tokens=self.total_tokens, complete=True, progress={})
        write_manifest(self.out_dir, self.manifest)
        return self.manifest
