"""HellaSwag: load the items and measure a model's accuracy, comparable with lm-evaluation-harness.

Each item is a context and 4 candidate endings, one of them right (``label``). The model scores
each ending as the continuation ``" " + ending`` of the context (see ``gpt2.evaluate.scoring``)
and we report three ways of turning the scores into a choice:

``acc``             highest summed log-likelihood. Favours short endings (fewer tokens to pay for).
``acc_norm``        highest log-likelihood divided by the ending's length in characters
                    (lm-evaluation-harness's definition; the number papers and leaderboards quote).
``acc_norm_token``  lowest mean per-token loss, i.e. log-likelihood divided by the ending's number
                    of tokens (build-nanogpt's definition).

Input files are JSON lines in either form:

* the official raw file (``ctx_a``, ``ctx_b``, ``activity_label``, ``endings``, ``label``): it is
  preprocessed exactly like lm-eval's ``hellaswag`` task does;
* an already preprocessed file (``ctx``, ``endings``, ``label``), used as is.
"""

from __future__ import annotations

import os
import re
import shutil
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from gpt2.errors import GPT2Error
from gpt2.evaluate.scoring import ContinuationScore, encode_pair, score_requests
from gpt2.runtime.device import model_device
from gpt2.runtime.distributed import all_reduce_sum, rank_and_world_size
from gpt2.runtime.parallel import unwrap_model
from gpt2.store.files import atomic_output, file_from_env, parse_json_line
from gpt2.tokenizer import get_tokenizer

HELLASWAG_VAL_URL = "https://raw.githubusercontent.com/rowanz/hellaswag/master/data/hellaswag_val.jsonl"
# A local copy of hellaswag_val.jsonl for offline use by the demo and the benchmarks (``make`` sets it to the
# developer copy when one exists). ``gpt2 eval`` / ``gpt2 train`` take the path as an option instead.
HELLASWAG_PATH_ENV = "GPT2_HELLASWAG_PATH"
NUM_ENDINGS = 4
DEFAULT_BATCH_SIZE = 16  # items per forward pass (x4 rows)


@dataclass(frozen=True)
class HellaSwagItem:
    """One multiple-choice item; ``source`` is "file:line" for error messages."""

    ctx: str
    endings: tuple[str, ...]
    label: int
    source: str = ""


@dataclass(frozen=True)
class ItemScores:
    """The model's scores of the 4 endings of one item."""

    logprobs: tuple[float, ...]  # summed log-likelihood of each ending, nats
    num_tokens: tuple[int, ...]  # tokens of each continuation " " + ending
    num_chars: tuple[int, ...]  # characters of each ending (without the leading space), lm-eval's norm

    @property
    def pred(self) -> int:
        return _argmax(self.logprobs)

    @property
    def pred_norm(self) -> int:
        return _argmax([lp / n for lp, n in zip(self.logprobs, self.num_chars, strict=True)])

    @property
    def pred_norm_token(self) -> int:
        return _argmax([lp / n for lp, n in zip(self.logprobs, self.num_tokens, strict=True)])


def _argmax(values: Sequence[float]) -> int:
    """Index of the largest value, the first one on ties (like numpy.argmax, which lm-eval uses)."""
    return max(range(len(values)), key=lambda i: (values[i], -i))


# ----------------------------------------------------------------------------- preprocessing


def preprocess(text: str) -> str:
    """lm-evaluation-harness's HellaSwag text cleanup (WikiHow items carry ``[title]``-style markers)."""
    text = text.strip()
    text = text.replace(" [title]", ". ")
    text = re.sub(r"\[.*?\]", "", text)
    return text.replace("  ", " ")


def _check_str(record: dict, key: str, where: str) -> str:
    value = record.get(key)
    if not isinstance(value, str):
        raise GPT2Error(f"{where}: field {key!r} must be a string, got {type(value).__name__}")
    return value


def item_from_record(record: Any, where: str) -> HellaSwagItem:
    """Validate one parsed JSON line and turn it into an item (raw records are preprocessed)."""
    if not isinstance(record, dict):
        raise GPT2Error(f"{where}: expected a JSON object, got {type(record).__name__}")
    endings = record.get("endings")
    if not isinstance(endings, list) or not all(isinstance(e, str) for e in endings):
        raise GPT2Error(f"{where}: field 'endings' must be a list of {NUM_ENDINGS} strings")
    if len(endings) != NUM_ENDINGS:
        raise GPT2Error(f"{where}: expected {NUM_ENDINGS} endings, got {len(endings)}")
    label = record.get("label")
    if isinstance(label, str) and label.strip().isdigit():  # the HF datasets copy stores "0".."3"
        label = int(label)
    if not isinstance(label, int) or isinstance(label, bool):
        raise GPT2Error(f"{where}: field 'label' must be an integer 0-{NUM_ENDINGS - 1}, got {label!r}")
    if not 0 <= label < NUM_ENDINGS:
        raise GPT2Error(f"{where}: label {label} is out of range 0-{NUM_ENDINGS - 1}")
    if "ctx_a" in record or "activity_label" in record:
        # Official raw format: lm-eval's process_docs for the `hellaswag` task.
        ctx_a = _check_str(record, "ctx_a", where)
        ctx_b = _check_str(record, "ctx_b", where)
        activity = _check_str(record, "activity_label", where)
        ctx = preprocess(activity + ": " + ctx_a + " " + ctx_b.capitalize())
        endings = [preprocess(e) for e in endings]
    else:
        ctx = _check_str(record, "ctx", where)
    if not ctx.strip():
        raise GPT2Error(f"{where}: empty context")
    if not all(e.strip() for e in endings):
        raise GPT2Error(f"{where}: an ending is empty")
    return HellaSwagItem(ctx=ctx, endings=tuple(endings), label=label, source=where)


# ----------------------------------------------------------------------------- files


def default_cache_dir() -> Path:
    """Where downloads are kept: $GPT2_CACHE_DIR, else $XDG_CACHE_HOME/gpt2-from-scratch, else ~/.cache/..."""
    if os.environ.get("GPT2_CACHE_DIR"):
        return Path(os.environ["GPT2_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "gpt2-from-scratch"


def hellaswag_path_from_env() -> Path | None:
    """The file named by ``$GPT2_HELLASWAG_PATH``; None when it is unset or empty; a GPT2Error if it is no file."""
    return file_from_env(HELLASWAG_PATH_ENV, "name a hellaswag_val.jsonl")


def download_hellaswag(cache_dir: str | Path | None = None, url: str | None = None) -> Path:
    """The official HellaSwag validation file (``url``, default HELLASWAG_VAL_URL), downloaded into
    ``cache_dir`` (default: :func:`default_cache_dir`) on first use.

    The download goes to a temporary file renamed into place when complete, so an interrupted
    download is never mistaken for the real file.
    """
    url = url or HELLASWAG_VAL_URL
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    target = cache_dir / "hellaswag" / Path(url).name
    if target.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        with atomic_output(target) as tmp, open(tmp, "wb") as out, urllib.request.urlopen(url, timeout=60) as response:
            shutil.copyfileobj(response, out)
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise GPT2Error(
            f"could not download HellaSwag from {url} ({exc}); "
            "pass a local copy: gpt2 eval hellaswag --data FILE, gpt2 train --hellaswag-path FILE"
        ) from None
    return target


def load_hellaswag(path: str | Path | None = None, limit: int | None = None) -> list[HellaSwagItem]:
    """Items of a HellaSwag JSONL file (default: the official validation set, downloaded once).

    ``limit`` keeps the first N items. Blank lines are skipped; any other bad line raises a
    GPT2Error naming the file and line.
    """
    if limit is not None and limit <= 0:
        raise GPT2Error(f"--limit must be a positive number of items, got {limit}")
    path = Path(path) if path is not None else download_hellaswag()
    if not path.is_file():
        raise GPT2Error(f"HellaSwag file not found: {path}")
    items: list[HellaSwagItem] = []
    with open(path, encoding="utf-8", errors="strict") as f:
        try:
            for line_no, line in enumerate(f, start=1):
                if limit is not None and len(items) >= limit:
                    break
                if not line.strip():
                    continue
                where = f"{path}:{line_no}"
                items.append(item_from_record(parse_json_line(line, where), where))
        except UnicodeDecodeError:
            raise GPT2Error(f"{path}: not UTF-8 text (near line {len(items) + 1})") from None
    if not items:
        raise GPT2Error(f"{path}: no HellaSwag items (the file is empty)")
    return items


# ----------------------------------------------------------------------------- scoring


def score_items(
    model: nn.Module,
    items: Sequence[HellaSwagItem],
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> list[ItemScores]:
    """Scores of every ending of every item, in this process only (no distributed sharding).

    ``batch_size`` items (``4 * batch_size`` rows) go through the model per forward pass.
    """
    tokenizer = get_tokenizer()
    requests, names = [], []
    for item in items:
        for ending in item.endings:
            requests.append(encode_pair(tokenizer, item.ctx, " " + ending))
            names.append(item.source or "HellaSwag item")
    scores: list[ContinuationScore] = score_requests(
        model, requests, batch_rows=NUM_ENDINGS * max(1, batch_size), device=device, dtype=dtype, names=names
    )
    out = []
    for k, item in enumerate(items):
        ending_scores = scores[k * NUM_ENDINGS : (k + 1) * NUM_ENDINGS]
        out.append(
            ItemScores(
                logprobs=tuple(s.logprob for s in ending_scores),
                num_tokens=tuple(s.num_tokens for s in ending_scores),
                num_chars=tuple(len(e) for e in item.endings),
            )
        )
    return out


def hellaswag_accuracy(
    model: nn.Module,
    items: Sequence[HellaSwagItem],
    batch_size: int = DEFAULT_BATCH_SIZE,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> dict[str, float | int]:
    """``{"acc", "acc_norm", "acc_norm_token", "n"}`` of ``model`` on ``items`` (see the module docstring).

    Under torch.distributed each rank scores the items ``rank, rank + world_size, ...`` and the
    correct counts are all-reduced, so every rank returns the same dict for the whole list.
    ``device`` is where the model is (default: where its weights are); ``dtype`` an autocast dtype.
    """
    if not items:
        raise GPT2Error("HellaSwag: no items to evaluate")
    rank, world_size = rank_and_world_size()
    mine = list(items[rank::world_size])
    # Every rank scores the same number of items (a rank one short repeats item 0 and does not count
    # it), so all ranks run the same forward passes: FSDP-sharded models need that to gather weights.
    padding = [items[0]] * (-(-len(items) // world_size) - len(mine))
    scored = score_items(model, mine + padding, batch_size=batch_size, device=device, dtype=dtype)[: len(mine)]
    correct = [0.0, 0.0, 0.0]
    for item, s in zip(mine, scored, strict=True):
        correct[0] += s.pred == item.label
        correct[1] += s.pred_norm == item.label
        correct[2] += s.pred_norm_token == item.label
    totals = all_reduce_sum([*correct, len(mine)], model_device(unwrap_model(model), device))
    acc, acc_norm, acc_norm_token, n = totals
    return {"acc": acc / n, "acc_norm": acc_norm / n, "acc_norm_token": acc_norm_token / n, "n": int(n)}
