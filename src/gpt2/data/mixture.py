"""``MixtureLoader``: training batches drawn from several prepared datasets in fixed proportions (``--mix``).

    gpt2 train --data edu_fineweb10B --mix data/mytext:0.1      # 90% FineWeb-Edu, 10% mytext (by sequence)

Each row (sequence of T tokens) of the global batch goes to the dataset furthest below its share so far —
the largest ``weight * rows_drawn - rows_taken``, ties to the first listed; weights are exact fractions
("0.1" is 1/10), so the choice is exact integer arithmetic. After n rows every dataset has taken within one
row of ``weight * n``: the proportions hold at every step, deterministically, with nothing to seed.

Each dataset is its own token stream read by a :class:`TokenShardLoader` (its epochs, ``shuffle``, shard
checks), one row at a time. Rows are numbered over all ranks as the plain loader numbers its windows: rank r
keeps rows ``[r*B, (r+1)*B)`` of each micro-step and steps past the others, so the union over ranks is one
process's batch of ``B*world_size``. The state — rows drawn, rows each dataset took, each stream's position —
is the same on every rank and resumes every dataset at exactly its next token.
"""

from __future__ import annotations

import math
from fractions import Fraction
from pathlib import Path
from typing import Any

import torch

from gpt2.data.loader import TokenShardLoader
from gpt2.errors import GPT2Error

STATE_VERSION = 1


def parse_mix(data: str | Path, mix: str) -> list[tuple[str, Fraction]]:
    """``--data`` and ``--mix DIR:WEIGHT[,DIR:WEIGHT...]`` → [(dataset dir, weight)]; ``data`` gets the rest."""
    entries = []
    for item in mix.split(","):
        path, _, weight = item.strip().rpartition(":")
        try:
            fraction = Fraction(weight.strip())
        except ValueError:
            fraction = Fraction(-1)
        if not path or not 0 < fraction < 1:
            raise GPT2Error(f"--mix {item.strip()!r} is not DIR:WEIGHT with a weight in (0, 1), e.g. data/mine:0.1")
        entries.append((path, fraction))
    rest = 1 - sum(weight for _, weight in entries)
    if rest <= 0:
        raise GPT2Error(f"--mix weights add up to {float(1 - rest):g}; they must stay below 1 to leave --data a share")
    return [(str(data), Fraction(rest)), *entries]


class MixtureLoader:
    """Batches ``(x, y)`` of shape (B, T) from the train splits of ``sources`` = [(dir, weight)] (weights sum
    to 1); the other arguments as :class:`TokenShardLoader`'s."""

    def __init__(
        self,
        sources: list[tuple[str, Fraction]],
        batch_size: int,
        seq_len: int,
        rank: int = 0,
        world_size: int = 1,
        seed: int = 0,
        shuffle: bool = False,
    ):
        if sum(weight for _, weight in sources) != 1:
            raise GPT2Error("mixture weights must add up to 1")
        self.sources = sources
        self.batch_size, self.seq_len, self.rank, self.world_size = batch_size, seq_len, rank, world_size
        self.loaders = [TokenShardLoader(d, "train", 1, seq_len, 0, 1, seed, shuffle) for d, _ in sources]
        self._scale = math.lcm(*(weight.denominator for _, weight in sources))
        self._shares = [int(weight * self._scale) for _, weight in sources]  # integers summing to _scale
        self.drawn = 0  # rows handed out (over all ranks)
        self.taken = [0] * len(sources)  # rows each dataset gave

    def _next_source(self) -> int:
        self.drawn += 1
        deficits = [
            share * self.drawn - taken * self._scale for share, taken in zip(self._shares, self.taken, strict=True)
        ]
        k = deficits.index(max(deficits))
        self.taken[k] += 1
        return k

    def next_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The next (x, y) pair of int64 tensors of shape (B, T) for this rank."""
        mine = range(self.rank * self.batch_size, (self.rank + 1) * self.batch_size)
        xs, ys = [], []
        for row in range(self.batch_size * self.world_size):
            loader = self.loaders[self._next_source()]
            if row in mine:
                x, y = loader.next_batch()
                xs.append(x)
                ys.append(y)
            else:
                loader.skip_batch()
        return torch.cat(xs), torch.cat(ys)

    def state_dict(self) -> dict[str, Any]:
        """JSON-serialisable position; the same on every rank."""
        return {
            "version": STATE_VERSION,
            "mix": [[str(d), str(weight)] for d, weight in self.sources],
            "drawn": self.drawn,
            "taken": list(self.taken),
            "loaders": [loader.state_dict() for loader in self.loaders],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Resume at exactly the next row of every dataset; the mixture (datasets, weights) must be the same."""
        mix = [[str(d), str(weight)] for d, weight in self.sources]
        saved = state.get("mix") or [[state.get("split", "?"), "1"]]
        if state.get("version") != STATE_VERSION or [w for _, w in saved] != [w for _, w in mix]:
            raise GPT2Error(
                f"cannot resume the data loader: the checkpoint was trained on the mixture {saved}, not {mix} "
                "(give the run's own --data and --mix)"
            )  # which dataset is which is checked by each stream's own state
        for loader, saved in zip(self.loaders, state["loaders"], strict=True):
            loader.load_state_dict(saved)
        self.drawn, self.taken = int(state["drawn"]), [int(n) for n in state["taken"]]
