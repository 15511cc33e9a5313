"""``TokenShardLoader``: (x, y) batches from memory-mapped token shards, per DDP rank, resumable.

A split's shards are read as one token stream (in manifest order, or a seeded permutation of
the shards per epoch with ``shuffle=True``). Each step consumes ``B*T*world_size`` tokens
starting at ``position``; rank ``r`` takes the window ``[position + r*B*T, position + (r+1)*B*T + 1)``
— ``x`` is its first ``B*T`` tokens, ``y`` the same shifted by one. Windows of different ranks
never overlap, the union over ranks is exactly what one rank with ``world_size=1`` and batch
``B*world_size`` would read, and windows may span shard boundaries, so nothing but the last
``< B*T*world_size`` tokens of an epoch is skipped. When the next step does not fit, the loader
starts the next epoch. The whole state is (epoch, position), identical on every rank, so
``state_dict()`` from rank 0 resumes every rank at exactly the next token.
"""

from __future__ import annotations

import bisect
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gpt2.config import GPT2_VOCAB_SIZE
from gpt2.data.manifest import read_manifest, split_shards
from gpt2.data.shards import open_shard, verify_shard
from gpt2.errors import GPT2Error

STATE_VERSION = 1


def _missing_split_hint(manifest: dict[str, Any], split: str) -> str:
    """How to get a train split when a dataset has none (all tokens went to val: a corpus smaller than
    the val size, prepared before ``gpt2 prepare`` split small corpora 90/10)."""
    if split != "train":
        return ""
    files = (manifest.get("options") or {}).get("files")
    inputs = "files " + " ".join(map(str, files[:3])) + (" ..." if len(files) > 3 else "") if files else "SOURCE ..."
    return (
        f": all {manifest.get('total_tokens', 0):,} tokens are in 'val'. Prepare it again into a new directory "
        f"without --val-tokens (a small corpus is then split 90/10), e.g. `gpt2 prepare {inputs} --out NEW_DIR`, "
        "and train with --data NEW_DIR"
    )


class TokenShardLoader:
    """Batches of token ids from a prepared dataset directory (see ``gpt2 prepare``).

    Args:
        data_dir: directory with ``manifest.json`` (or build-nanogpt/llm.c shards named ``*_train_*`` / ``*_val_*``).
        split: ``"train"`` or ``"val"``.
        batch_size: B, sequences per batch on this rank.
        seq_len: T, tokens per sequence.
        rank, world_size: this process's DDP rank and the number of ranks.
        seed, shuffle: with ``shuffle=True`` the shard order of epoch ``e`` is a permutation drawn
            from ``(seed, e)``; without it shards are read in manifest order every epoch.

    ``next_batch()`` returns ``(x, y)``: int64 CPU tensors of shape (B, T) with ``y[:, t] = x[:, t+1]``
    (the token after ``x``'s last one for the final column). A fresh loader (e.g. for validation)
    always yields the same sequence of batches. Each shard is verified the first time anything reads from
    it (:func:`gpt2.data.shards.verify_shard`: manifest SHA-256 and token ids < 50257).
    """

    def __init__(
        self,
        data_dir: str | Path,
        split: str = "train",
        batch_size: int = 8,
        seq_len: int = 1024,
        rank: int = 0,
        world_size: int = 1,
        seed: int = 0,
        shuffle: bool = False,
    ):
        if batch_size < 1 or seq_len < 1:
            raise GPT2Error(f"batch_size and seq_len must be >= 1, got {batch_size} and {seq_len}")
        if world_size < 1 or not 0 <= rank < world_size:
            raise GPT2Error(f"rank {rank} is not in [0, world_size={world_size})")
        self.data_dir = Path(data_dir)
        self.split = split
        self.batch_size, self.seq_len = batch_size, seq_len
        self.rank, self.world_size = rank, world_size
        self.seed, self.shuffle = seed, shuffle
        self.vocab_size = GPT2_VOCAB_SIZE  # GPT-2 token ids; a larger id can only be corruption
        manifest = read_manifest(self.data_dir)
        entries = split_shards(manifest, split)
        if not entries:
            raise GPT2Error(f"{self.data_dir} has no {split!r} shards" + _missing_split_hint(manifest, split))
        self.shard_files = [entry["file"] for entry in entries]
        self._sha256 = [entry["sha256"] for entry in entries]
        self._verified: set[int] = set()  # shards checked by verify_shard (on first read, see read)
        self._shards = []
        for entry in entries:
            tokens = open_shard(self.data_dir / entry["file"])
            if len(tokens) != entry["tokens"]:
                raise GPT2Error(
                    f"{self.data_dir / entry['file']}: holds {len(tokens)} tokens but {self.data_dir}/manifest.json "
                    f"says {entry['tokens']}; the dataset is corrupt, re-run `gpt2 prepare`"
                )
            self._shards.append(tokens)
        self.tokens_per_epoch = sum(len(tokens) for tokens in self._shards)
        self.tokens_per_step = batch_size * seq_len * world_size
        if self.tokens_per_epoch < self.tokens_per_step + 1:
            raise GPT2Error(
                f"the {split!r} split of {self.data_dir} has {self.tokens_per_epoch} tokens, fewer than one step needs "
                f"(batch_size*seq_len*world_size + 1 = {self.tokens_per_step + 1}); use a smaller batch or more data"
            )
        self.epoch = 0
        self.position = 0  # stream offset (tokens) of the next step, the same on every rank
        self._set_epoch(0)

    @property
    def steps_per_epoch(self) -> int:
        """Number of ``next_batch()`` calls before the loader wraps to the next epoch."""
        return (self.tokens_per_epoch - 1) // self.tokens_per_step

    def _set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        order = np.arange(len(self._shards))
        if self.shuffle:
            order = np.random.default_rng([self.seed, epoch]).permutation(len(self._shards))
        self._order = [int(i) for i in order]
        lengths = [len(self._shards[i]) for i in self._order]
        self._starts = np.concatenate([[0], np.cumsum(lengths)]).tolist()  # stream offset of each shard

    def read(self, start: int, length: int) -> np.ndarray:
        """Tokens ``[start, start+length)`` of this epoch's stream as int64 (may span several shards)."""
        out = np.empty(length, dtype=np.int64)
        i = bisect.bisect_right(self._starts, start) - 1
        filled = 0
        while filled < length:
            self._verify(self._order[i])
            shard = self._shards[self._order[i]]
            offset = start + filled - self._starts[i]
            take = min(length - filled, len(shard) - offset)
            out[filled : filled + take] = shard[offset : offset + take]
            filled += take
            i += 1
        return out

    def _verify(self, index: int) -> None:
        """Check shard ``index`` (checksum, token range) the first time it is read: a corrupt shard is an error
        naming it, never a silent wrong result or an IndexError deep in the model."""
        if index not in self._verified:
            verify_shard(
                self.data_dir / self.shard_files[index], self._shards[index], self._sha256[index], self.vocab_size
            )
            self._verified.add(index)

    def skip_batch(self) -> int:
        """Step past the next batch without reading it (starting the next epoch if it does not fit); returns
        the stream offset where the step starts."""
        if self.position + self.tokens_per_step + 1 > self.tokens_per_epoch:
            self._set_epoch(self.epoch + 1)
            self.position = 0
        self.position += self.tokens_per_step
        return self.position - self.tokens_per_step

    def next_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The next (x, y) pair of int64 tensors of shape (B, T) for this rank."""
        window = self.batch_size * self.seq_len
        buf = torch.from_numpy(self.read(self.skip_batch() + self.rank * window, window + 1))
        x = buf[:-1].view(self.batch_size, self.seq_len)
        y = buf[1:].view(self.batch_size, self.seq_len)
        return x, y

    def reset(self) -> None:
        """Go back to the first batch of epoch 0."""
        self._set_epoch(0)
        self.position = 0

    def state_dict(self) -> dict[str, Any]:
        """JSON-serialisable position; the same on every rank, so rank 0's copy resumes all ranks."""
        return {
            "version": STATE_VERSION,
            "split": self.split,
            "epoch": self.epoch,
            "position": self.position,
            "seed": self.seed,
            "shuffle": self.shuffle,
            "tokens_per_epoch": self.tokens_per_epoch,
            "shard_files": list(self.shard_files),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Resume at exactly the next token of the run that saved ``state``.

        The batch size, sequence length and world size may differ from the saving run (the position is
        a token offset); the dataset, split, seed and shuffle flag must match.
        """
        mismatches = [
            key
            for key, ours in (
                ("split", self.split),
                ("seed", self.seed),
                ("shuffle", self.shuffle),
                ("tokens_per_epoch", self.tokens_per_epoch),
                ("shard_files", list(self.shard_files)),
            )
            if state.get(key) != ours
        ]
        if state.get("version") != STATE_VERSION or mismatches:
            raise GPT2Error(
                f"cannot resume the data loader on {self.data_dir}: the saved state differs in "
                f"{', '.join(mismatches) or 'version'} (was the dataset re-prepared or the seed changed?)"
            )
        position = int(state["position"])
        if not 0 <= position <= self.tokens_per_epoch:
            raise GPT2Error(f"loader state position {position} is outside the {self.tokens_per_epoch}-token epoch")
        self._set_epoch(int(state["epoch"]))
        self.position = position
