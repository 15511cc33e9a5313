"""``python -m tools.bench eval``: HellaSwag items/s of our batched scorer against one item at a time.

Compared in the same run, on the same model, items and precision:

* **ours**: :func:`gpt2.evaluate.hellaswag.hellaswag_accuracy` — many items (4 rows each) per
  forward pass, rows sorted by length, output layer and softmax only at the scored positions;
* **one item at a time** (build-nanogpt's ``hellaswag.py``): one forward pass per
  item on its 4 rows, full logits, cross-entropy at every position, then masked to the ending;
* **lm-evaluation-harness** (only when ``lm_eval`` is importable): its ``HFLM.loglikelihood`` on
  the same (context, " " + ending) requests, with our weights exported to Hugging Face format;
  and whole ``lm_eval.simple_evaluate`` runs of the items as a local task, our ``gpt2-scratch``
  backend against lm-eval's ``hf`` backend (:func:`harness_case`, the first size only).

Items: the HellaSwag validation file when one is at hand (``$GPT2_HELLASWAG_PATH``, else the download
cache), otherwise synthetic items of similar length. Sizes: quick = tiny model, 4 items; CPU = ``mini``
(16 items) and 124M (4 items: the one-at-a-time reference scores under one item a second there, and
``python -m tools.bench all`` must stay short); CUDA = 124M, 512 items, bf16 autocast on both sides.
"""

from __future__ import annotations

import random
import tempfile
import unittest.mock
from pathlib import Path

import torch
from torch.nn import functional as F

from gpt2.config import GPTConfig
from gpt2.evaluate.hellaswag import (
    HellaSwagItem,
    default_cache_dir,
    hellaswag_accuracy,
    hellaswag_path_from_env,
    load_hellaswag,
)
from gpt2.evaluate.scoring import encode_pair
from gpt2.model import GPT
from gpt2.runtime.device import autocast
from gpt2.tokenizer import get_tokenizer
from tools.bench.core import BenchResult, interleaved_median_seconds
from tools.bench.train import autocast_dtype

ONE_AT_A_TIME_NAME = "one item per forward pass (build-nanogpt's hellaswag.py)"
LM_EVAL_NAME = "lm-evaluation-harness HFLM.loglikelihood"


def _hellaswag_file() -> Path | None:
    """``$GPT2_HELLASWAG_PATH`` (an error if it names no file), else the downloaded official file, else None."""
    cached = default_cache_dir() / "hellaswag" / "hellaswag_val.jsonl"
    return hellaswag_path_from_env() or (cached if cached.is_file() else None)


def _synthetic_items(n: int) -> list[HellaSwagItem]:
    """Deterministic stand-ins with HellaSwag's shape: ~40-token contexts, 4 endings of ~20 tokens."""
    rng = random.Random(0)
    words = [
        "the",
        "a",
        "man",
        "woman",
        "dog",
        "ball",
        "park",
        "river",
        "walks",
        "runs",
        "throws",
        "sits",
        "looks",
        "slowly",
        "then",
        "and",
    ]

    def sentence(k: int) -> str:
        return " ".join(rng.choice(words) for _ in range(k)).capitalize() + "."

    items = []
    for i in range(n):
        endings = tuple(sentence(rng.randint(8, 30)) for _ in range(4))
        items.append(HellaSwagItem(f"Activity {i}: {sentence(18)} {sentence(14)}", endings, 0))
    return items


def bench_items(n: int) -> tuple[list[HellaSwagItem], str]:
    path = _hellaswag_file()
    if path is None:
        return _synthetic_items(n), "synthetic items"
    return load_hellaswag(path, limit=n), str(path)


@torch.no_grad()
def one_item_at_a_time_accuracy(model: GPT, items: list[HellaSwagItem], device: torch.device, dtype) -> float:
    """build-nanogpt's evaluation loop: 4 rows of one item per forward, full-sequence cross-entropy.

    Returns acc_norm_token (its metric), so the suite can check both sides chose the same endings.
    """
    tokenizer = get_tokenizer()
    correct = 0
    for item in items:
        pairs = [encode_pair(tokenizer, item.ctx, " " + ending) for ending in item.endings]
        width = max(len(p.context) + len(p.continuation) for p in pairs)
        tokens = torch.zeros((4, width), dtype=torch.long)
        mask = torch.zeros((4, width), dtype=torch.long)
        for row, pair in enumerate(pairs):
            ids = pair.context + pair.continuation
            tokens[row, : len(ids)] = torch.tensor(ids)
            mask[row, len(pair.context) : len(ids)] = 1
        tokens, mask = tokens.to(device), mask.to(device)
        with autocast(device, dtype):
            logits, _ = model(tokens)
        losses = F.cross_entropy(
            logits[:, :-1, :].flatten(0, 1).float(), tokens[:, 1:].flatten(), reduction="none"
        ).view(4, -1)
        shift_mask = mask[:, 1:]
        avg_loss = (losses * shift_mask).sum(dim=1) / shift_mask.sum(dim=1)
        correct += int(avg_loss.argmin().item() == item.label)
    return correct / len(items)


def _lm_eval_scorer(model: GPT, items: list[HellaSwagItem], batch_size: int, workdir: Path):
    """A callable scoring every ending with lm-eval's HFLM, or None when lm_eval is not installed."""
    try:
        from lm_eval.api.instance import Instance
        from lm_eval.models.huggingface import HFLM
    except Exception:  # not installed, or installed without its optional dependencies
        return None
    import transformers

    from gpt2.interop import export_hf

    hf_dir = export_hf(model, workdir / "hf")
    hf_model = transformers.GPT2LMHeadModel.from_pretrained(hf_dir).eval()
    lm = HFLM(pretrained=hf_model, tokenizer=transformers.AutoTokenizer.from_pretrained(hf_dir), batch_size=batch_size)
    requests = [
        Instance(request_type="loglikelihood", doc={}, arguments=(item.ctx, " " + ending), idx=k)
        for item in items
        for k, ending in enumerate(item.endings)
    ]
    return lambda: lm.loglikelihood(requests, disable_tqdm=True)


def _cases(device: torch.device, quick: bool) -> list[tuple[str, int, int]]:
    """(config name, items, batch size in items)."""
    if quick:
        return [("tiny", 4, 2)]
    if device.type == "cuda":
        return [("124M", 512, 64)]
    return [("mini", 16, 16), ("124M", 4, 4)]


def _bench_case(size: str, n_items: int, batch: int, dev: torch.device, repeat: int, quick: bool) -> list[BenchResult]:
    dtype = autocast_dtype(dev)
    items, source = bench_items(n_items)
    torch.manual_seed(0)
    model = GPT(GPTConfig.named(size)).to(dev).eval()
    answers: dict[str, float] = {}

    def sync() -> None:
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)

    def ours() -> None:
        answers["ours"] = hellaswag_accuracy(model, items, batch_size=batch, device=dev, dtype=dtype)["acc_norm_token"]
        sync()

    def one_at_a_time() -> None:
        answers["reference"] = one_item_at_a_time_accuracy(model, items, dev, dtype)
        sync()

    times = interleaved_median_seconds({"ours": ours, "ref": one_at_a_time}, repeat=repeat, warmup=1)
    extra = {
        "items": n_items,
        "batch_items": batch,
        "data": source,
        "dtype": str(dtype or torch.float32),
        "same_answers": answers["ours"] == answers["reference"],  # acc_norm_token of both sides
    }
    ours_rate, ref_rate = n_items / times["ours"], n_items / times["ref"]
    name = f"hellaswag items/s {size}"
    results = [BenchResult(name, ours_rate, ref_rate, "items/s", ours_rate / ref_rate, ONE_AT_A_TIME_NAME, extra)]
    if dev.type == "cpu" and not quick:
        with tempfile.TemporaryDirectory() as tmp:
            lm_eval = _lm_eval_scorer(model, items, 4 * batch, Path(tmp))
            if lm_eval is not None:
                times = interleaved_median_seconds({"ours": ours, "lm_eval": lm_eval}, repeat=repeat, warmup=1)
                ours_rate, ref_rate = n_items / times["ours"], n_items / times["lm_eval"]
                extra = dict(extra, same_answers=None)
                results.append(
                    BenchResult(
                        f"{name} vs lm-eval", ours_rate, ref_rate, "items/s", ours_rate / ref_rate, LM_EVAL_NAME, extra
                    )  # fmt: skip
                )
    return results


HARNESS_NAME = "lm-evaluation-harness hf backend (simple_evaluate)"
_MC_TASK_YAML = """task: bench_hellaswag
dataset_path: json
dataset_kwargs: {{data_files: {{test: {data}}}}}
test_split: test
output_type: multiple_choice
doc_to_text: "{{{{ctx}}}}"
doc_to_choice: "{{{{endings}}}}"
doc_to_target: "{{{{label}}}}"
metric_list: [{{metric: acc_norm, aggregation: mean, higher_is_better: true}}]
"""


def harness_case(size: str, n_items: int, batch: int, dev: torch.device, repeat: int) -> BenchResult | None:
    """Whole ``lm_eval.simple_evaluate`` runs of a local HellaSwag-style task: our backend (``gpt2-scratch``)
    against lm-eval's own ``hf`` backend on the same weights (exported), ``4 * batch`` rows per forward
    on both sides. None when lm-eval is not installed."""
    try:
        import lm_eval
        from lm_eval.models.huggingface import HFLM
        from lm_eval.tasks import TaskManager

        from gpt2.evaluate.harness import GPT2ScratchLM
    except Exception:  # not installed, or installed without its optional dependencies
        return None
    import json

    import transformers

    from gpt2.interop import export_hf

    items, source = bench_items(n_items)
    torch.manual_seed(0)
    model = GPT(GPTConfig.named(size)).to(dev).eval()
    dtype = torch.bfloat16 if dev.type == "cuda" else None
    answers: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "items.jsonl"
        data.write_text(
            "".join(json.dumps({"ctx": i.ctx, "endings": i.endings, "label": i.label}) + "\n" for i in items)
        )
        (Path(tmp) / "bench_hellaswag.yaml").write_text(_MC_TASK_YAML.format(data=data))
        manager = TaskManager(include_path=tmp, include_defaults=False)  # indexing all its ~14k task files: 30 s+
        hf_dir = export_hf(model, Path(tmp) / "hf")
        hf_model = transformers.GPT2LMHeadModel.from_pretrained(hf_dir).to(dev).eval()
        backends = {
            "ours": GPT2ScratchLM(model=model, batch_size=4 * batch, device=dev, dtype=dtype),
            "hf": HFLM(  # autocast to the same dtype as ours (None on CPU: fp32)
                pretrained=hf_model,
                tokenizer=transformers.AutoTokenizer.from_pretrained(hf_dir),
                batch_size=4 * batch,
                mixed_precision_dtype=dtype,
            ),
        }

        def evaluate(name: str) -> None:
            # simple_evaluate ends with an environment report (`pip list` and more in subprocesses: 1-3 s a call,
            # the same on both sides, which would pull the ratio towards 1): evaluation is what is timed, not that.
            with unittest.mock.patch("lm_eval.evaluator.add_env_info"):
                result = lm_eval.simple_evaluate(
                    model=backends[name], tasks=["bench_hellaswag"], task_manager=manager, bootstrap_iters=0
                )
            answers[name] = result["results"]["bench_hellaswag"]["acc_norm,none"]

        times = interleaved_median_seconds(
            {"ours": lambda: evaluate("ours"), "hf": lambda: evaluate("hf")}, repeat=repeat, warmup=1
        )
    ours_rate, ref_rate = n_items / times["ours"], n_items / times["hf"]
    extra = {"items": n_items, "batch_items": batch, "data": source, "dtype": str(dtype or torch.float32)}
    extra["same_answers"] = answers["ours"] == answers["hf"]  # acc_norm of both backends
    name = f"lm-eval task items/s {size}"
    return BenchResult(name, ours_rate, ref_rate, "items/s", ours_rate / ref_rate, HARNESS_NAME, extra)


def run(device: str = "cpu", repeat: int = 3, quick: bool = False) -> list[BenchResult]:
    dev = torch.device(device)
    results = [result for case in _cases(dev, quick) for result in _bench_case(*case, dev, repeat, quick)]
    harness = harness_case(*_cases(dev, quick)[0], dev, repeat)
    return results + ([harness] if harness is not None else [])
