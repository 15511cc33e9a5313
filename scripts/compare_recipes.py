"""Summaries for scripts/compare_recipes.sh: the best lr of a sweep, and the Muon-vs-AdamW table.

python scripts/compare_recipes.py best OUT_DIR PREFIX   # lr suffix of the PREFIX<lr> run with the lowest val loss
python scripts/compare_recipes.py summary OUT_DIR       # Markdown: every run, then the token-efficiency numbers
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

from gpt2.store.rundir import read_metrics


def _runs(out: Path) -> dict[str, list[dict]]:
    return {d.name: read_metrics(d) for d in sorted(out.iterdir()) if (d / "metrics.jsonl").is_file()}


def _evals(rows: list[dict]) -> list[tuple[int, float]]:
    return [(r["tokens"], r["val_loss"]) for r in rows if r["type"] == "eval" and "val_loss" in r]


def _final_val(rows: list[dict]) -> float:
    return _evals(rows)[-1][1]


def _sweep(runs: dict[str, list[dict]], prefix: str) -> dict[str, list[dict]]:
    """The lr-sweep runs: ``PREFIX<lr>`` (not the split / shorter ones)."""
    return {name: rows for name, rows in runs.items() if name.startswith(prefix)}


def best(out: Path, prefix: str) -> str:
    sweep = _sweep(_runs(out), prefix)
    name = min(sweep, key=lambda n: _final_val(sweep[n]))
    return name.removeprefix(prefix)


def tokens_to_reach(rows: list[dict], target: float) -> float | None:
    """First token count where the val curve reaches ``target`` (linear between evaluations), None if never."""
    points = [(0, float("inf")), *_evals(rows)]
    for (t0, v0), (t1, v1) in zip(points, points[1:], strict=False):
        if v1 <= target:
            return t1 if v0 == float("inf") else t0 + (v0 - target) / (v0 - v1) * (t1 - t0)
    return None


def summary(out: Path) -> str:
    runs = _runs(out)
    lines = ["| run | optimizer | --lr | --muon-lr | c_attn | tokens | final val loss | step wall ms (median) "
             "| CPU s |", "|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for name, rows in runs.items():
        config = json.loads((out / name / "run.json").read_text())["config"]
        train = [r for r in rows if r["type"] == "train"]
        cpu = (out / f"{name}.cpu").read_text().split() if (out / f"{name}.cpu").is_file() else None
        muon = config["optimizer"] == "muon"
        lines.append(
            f"| {name} | {config['optimizer']} | {config['lr']:g} | {config['muon_lr'] if muon else ''} | "
            f"{config['muon_qkv'] if muon else ''} | {train[-1]['tokens']:,} | {_final_val(rows):.4f} | "
            f"{statistics.median(r['dt_ms'] for r in train[1:]):.0f} | "
            f"{float(cpu[0]) + float(cpu[1]) if cpu else float('nan'):.0f} |"
        )
    adamw_name = "adamw_lr" + best(out, "adamw_lr")
    muon_name = "muon_lr" + best(out, "muon_lr")
    target = _final_val(runs[adamw_name])
    budget = [r for r in runs[adamw_name] if r["type"] == "train"][-1]["tokens"]
    reach = tokens_to_reach(runs[muon_name], target)
    lines += ["", f"AdamW's best ({adamw_name}) final val loss {target:.4f} after {budget:,} tokens."]
    if reach is not None:
        lines.append(f"{muon_name} reaches it after {reach:,.0f} tokens = {reach / budget:.2f}x (mid-schedule).")
    for name, rows in runs.items():
        if "steps_" in name:
            tokens = [r for r in rows if r["type"] == "train"][-1]["tokens"]
            verdict = "reaches" if _final_val(rows) <= target else "misses"
            lines.append(
                f"{name}: {tokens / budget:.2f}x the tokens, final val {_final_val(rows):.4f} -> {verdict} it."
            )
    return "\n".join(lines)


def overhead(out: Path, repeats: int = 15) -> str:
    """Median ms of one training step (forward, backward, clip, update) of the benchmark shape, AdamW vs Muon.

    The two alternate step by step, so both see the same machine load; the optimizer update alone is timed too.
    """
    import time

    import torch

    from gpt2 import GPT, GPTConfig
    from gpt2.train.config import TrainConfig
    from gpt2.train.optim import build_optimizers

    shape = GPTConfig.from_dict(json.loads((out / "shape.json").read_text())["model"])
    torch.manual_seed(0)
    x = torch.randint(0, shape.vocab_size, (8, 128))
    models, optims = {}, {}
    for name in ("adamw", "muon"):
        torch.manual_seed(0)
        models[name] = GPT(shape)
        cfg = TrainConfig(model=shape, size=None, optimizer=name, lr=4e-3, seq_len=128)
        optims[name] = build_optimizers(models[name], cfg, torch.device("cpu"))
    times: dict[str, list[float]] = {f"{n} {part}": [] for n in models for part in ("step", "update")}
    for i in range(repeats + 2):
        for name, model in models.items():
            t0 = time.perf_counter()
            model(x, x)[1].backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            t1 = time.perf_counter()
            for optimizer in optims[name]:
                optimizer.step()
            optims[name].zero_grad()
            t2 = time.perf_counter()
            if i >= 2:  # warm-up
                times[f"{name} step"].append(1000 * (t2 - t0))
                times[f"{name} update"].append(1000 * (t2 - t1))
    med = {k: statistics.median(v) for k, v in times.items()}
    return (
        f"1,024-token training step, median of {repeats} interleaved: AdamW {med['adamw step']:.0f} ms "
        f"(update {med['adamw update']:.1f} ms), Muon {med['muon step']:.0f} ms (update {med['muon update']:.1f} ms): "
        f"Muon +{100 * (med['muon step'] / med['adamw step'] - 1):.1f}% per step"
    )


if __name__ == "__main__":
    command, out = sys.argv[1], Path(sys.argv[2])
    if command == "best":
        print(best(out, sys.argv[3]))
    else:
        print(summary(out) if command == "summary" else overhead(out))
