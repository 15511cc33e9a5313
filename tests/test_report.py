"""gpt2 plot / gpt2 report on synthetic run directories (metrics.jsonl as in contract 4)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from gpt2.cli import main
from gpt2.errors import GPT2Error
from gpt2.report import read_run, render_report, write_plot, write_report
from gpt2.report.metrics import read_runs
from gpt2.report.units import human_count, human_duration

TINY = {"block_size": 128, "vocab_size": 50304, "n_layer": 2, "n_head": 2, "n_embd": 64}
TINY_PARAMS = 3_327_744  # 50304*64 (wte) + 128*64 (wpe) + 2 blocks + final LayerNorm


def make_run(
    run_dir: Path, steps: int = 60, tokens_per_step: int = 1024, decay: float = 20.0, hellaswag: bool = True
) -> Path:
    """A run dir whose numbers are known in closed form: loss = 3 + 8·exp(-step/decay)."""
    run_dir.mkdir(parents=True)
    rows = []
    for step in range(1, steps + 1):
        loss = 3 + 8 * math.exp(-step / decay)
        tokens = step * tokens_per_step
        rows.append(
            dict(type="train", step=step, loss=loss, lr=6e-4 * min(1.0, step / 10), grad_norm=1.0, tokens=tokens,
                 tok_per_s=1000.0 + step, mfu=0.02, dt_ms=1000.0, time=float(step))
        )  # fmt: skip
        if step % 20 == 0:
            rows.append(dict(type="eval", step=step, tokens=tokens, val_loss=loss + 0.1, val_tokens=16384))
            rows += [] if not hellaswag else [
                dict(type="eval", step=step, tokens=tokens, hellaswag_acc=0.25, hellaswag_n=40,
                     hellaswag_acc_norm=0.25 + step / 1000, hellaswag_acc_norm_token=0.24 + step / 1000)
            ]  # fmt: skip
            for i in range(2):  # num_samples = 2: two continuations of the same prompt
                rows.append(dict(type="sample", step=step, tokens=tokens, prompt="To be", text=f" or {i} {step}"))
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    # as gpt2.train writes it: the resolved TrainConfig (model shape nested) plus facts about the run
    run_info = dict(config=dict(model=TINY, lr=6e-4, steps=steps), model=TINY, device="cpu", world_size=1,
                    data="data/shakespeare", torch="2.13.0")  # fmt: skip
    (run_dir / "run.json").write_text(json.dumps(run_info))
    return run_dir


def test_plot_two_runs_is_a_valid_png(tmp_path):
    import matplotlib.image

    a = make_run(tmp_path / "a")
    b = make_run(tmp_path / "b", decay=10.0)
    out = tmp_path / "plots" / "both.png"
    assert main(["plot", str(a), str(b), "--out", str(out), "--log-x"]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    image = matplotlib.image.imread(out)
    height, width = image.shape[:2]
    assert 600 <= height <= 1200 and 1000 <= width <= 2000
    assert image[..., :3].std() > 0.05  # something was drawn, not a blank canvas
    assert not list(out.parent.glob(".*.tmp"))  # written atomically, no temp file left behind


def test_report_contains_the_run_numbers(tmp_path):
    run = make_run(tmp_path / "demo" / "run")
    out = write_report(run)
    assert out == run / "report.md"
    text = out.read_text()
    final_loss = 3 + 8 * math.exp(-60 / 20)
    assert f"| final train loss | {final_loss:.4f} (step 60) |" in text
    val = f"{final_loss + 0.1:.4f}"
    assert f"| final val loss | {val} (step 60; best {val}; GPT-2 124M (FineWeb-Edu val): 3.2924) |" in text
    assert "| final val tokens per evaluation (--eval-tokens) | 16384 (step 60) |" in text
    assert f"{TINY_PARAMS:,}" in text
    assert "61,440 (61.4K) in 60 steps" in text
    assert "| training wall time | 1m 00s |" in text
    chance = "chance (4 endings): 0.25"
    acc_norm = f"0.3100 (step 60; best 0.3100; GPT-2 124M (lm-eval): 0.3114; {chance})"
    assert f"| final HellaSwag acc_norm (lm-eval style) | {acc_norm} |" in text
    per_token = f"0.3000 (step 60; best 0.3000; GPT-2 124M (build-nanogpt): 0.294; {chance})"
    assert f"| final HellaSwag acc_norm per token (build-nanogpt style) | {per_token} |" in text
    assert "| final HellaSwag items | 40 (step 60) |" in text
    assert "1,031 tokens/s" in text  # median of 1002..1060 (the first step is warm-up, left out)
    assert "| MFU | 2.0% (median) |" in text
    assert "| `lr` | 0.0006 |" in text and "| `steps` | 60 |" in text and "| `torch` | 2.13.0 |" in text
    assert "| data | data/shakespeare |" in text
    assert "## Samples at step 60" in text and text.count("**Prompt:** To be") == 1
    assert "```text\nTo be or 0 60\n```" in text and "```text\nTo be or 1 60\n```" in text and " 40\n" not in text
    assert "# Training report: demo/run" in text  # "run" alone says nothing: the parent's name is added
    assert "![loss, learning rate, throughput and evaluations of demo/run](plot.png)" in text
    assert (run / "plot.png").stat().st_size > 10_000


def test_the_plot_has_a_panel_per_eval_metric_logged(tmp_path):
    import matplotlib.image

    from gpt2.report.plot import panel_layout

    offline = make_run(tmp_path / "offline", hellaswag=False)
    online = make_run(tmp_path / "online")
    assert panel_layout(read_runs([offline])) == [["loss", "loss"], ["lr", "tps"]]  # no empty accuracy panel
    # one run with evals is enough to show them; acc and the item count are in the report only
    hellaswag = [["loss", "loss"], ["lr", "tps"], ["hellaswag_acc_norm", "hellaswag_acc_norm_token"]]
    assert panel_layout(read_runs([offline, online])) == hellaswag
    out = write_plot(offline, tmp_path / "offline.png")
    image = matplotlib.image.imread(out)
    assert image.shape[0] > 600 and image[..., :3].std() > 0.05
    assert "HellaSwag" not in render_report(read_run(offline))


def test_report_elsewhere_links_plot_relatively_and_resume_duplicates_are_dropped(tmp_path, capsys):
    run = make_run(tmp_path / "run", steps=40)
    # A resume from step 30 re-logs steps 31..40 with a fresh clock: the newer rows win, wall time adds up.
    with (run / "metrics.jsonl").open("a") as f:
        for step in range(31, 41):
            f.write(
                json.dumps({"type": "train", "step": step, "loss": 2.5, "tokens": step * 1024, "time": step - 30.0})
            )
            f.write("\n")
        f.write('{"type": "train", "step": 41, "lo')  # a live trainer's half-written last line
    metrics = read_run(run)
    assert [r["step"] for r in metrics.train] == list(range(1, 41))
    assert metrics.train[-1]["loss"] == 2.5
    assert metrics.wall_time_s() == 40.0  # 1..30 s before the resume (rows 31..40 dropped) + 10 s after
    out = tmp_path / "docs" / "summary.md"
    assert main(["report", str(run), "--out", str(out)]) == 0
    assert "](../run/plot.png)" in out.read_text()
    assert capsys.readouterr().out.strip() == f"wrote {out}"


def test_render_report_without_run_json_or_evals(tmp_path):
    run_dir = tmp_path / "bare"
    run_dir.mkdir()
    (run_dir / "metrics.jsonl").write_text(json.dumps({"type": "train", "step": 1, "loss": 10.9, "tokens": 8}) + "\n")
    text = render_report(read_run(run_dir))
    assert "| final train loss | 10.9000 (step 1) |" in text
    assert "final val loss" not in text and "HellaSwag" not in text and "Samples" not in text


def test_report_shows_lm_eval_results_merged_per_task(tmp_path):
    from gpt2.evaluate.harness_tasks import save_results

    run = make_run(tmp_path / "run")
    first = {"results": {"hellaswag": {"acc,none": 0.3, "acc_stderr,none": 0.01, "acc_norm,none": 0.2}}}
    save_results(run / "lm_eval.json", str(run), {**first, "n-shot": {"hellaswag": 0}}, {"limit": 50})
    second = {"results": {"hellaswag": {"acc_norm,none": 0.32}, "wikitext": {"word_perplexity,none": 123.456}}}
    save_results(run / "lm_eval.json", str(run), second, {"limit": None})  # replaces hellaswag, adds wikitext
    text = render_report(read_run(run))
    assert "## lm-evaluation-harness" in text
    assert "| hellaswag | acc_norm | 0.3200 | — | 0.3114 | — | all |" in text
    assert "| wikitext | word_perplexity | 123.46 | — | — | — | all |" in text
    assert "| hellaswag | acc |" not in text  # the first evaluation's hellaswag entry was replaced whole


@pytest.mark.parametrize(
    "setup, argv, message",
    [
        (lambda d: d.mkdir(), ["plot", "{d}", "--out", "{d}/p.png"], "has no metrics.jsonl"),
        (lambda d: None, ["report", "{d}"], "run directory not found"),
        (lambda d: (d.mkdir(), (d / "metrics.jsonl").write_text("")), ["report", "{d}"], "is empty"),
        (
            lambda d: (d.mkdir(), (d / "metrics.jsonl").write_text('{"type": "train", "step": 1}\nnot json\n')),
            ["plot", "{d}", "--out", "{d}/p.png"],
            "metrics.jsonl:2: malformed JSON",
        ),
        (
            lambda d: (d.mkdir(), (d / "metrics.jsonl").write_text('{"step": 1}\n')),
            ["report", "{d}"],
            'metrics.jsonl:1: expected a JSON object with "type"',
        ),
        (lambda d: make_run(d), ["plot", "{d}", "--out", "{d}/p.jpg"], "ending in .png"),
        (lambda d: make_run(d), ["report", "{d}", "--out", "{d}/r.txt"], "ending in .md"),
    ],
)
def test_bad_inputs_exit_1_with_one_error_line(tmp_path, capsys, setup, argv, message):
    run_dir = tmp_path / "run"
    setup(run_dir)
    assert main([a.format(d=run_dir) for a in argv]) == 1
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], captured.err


def test_write_plot_rejects_no_runs(tmp_path):
    with pytest.raises(GPT2Error, match="at least one run"):
        write_plot([], tmp_path / "p.png")


def test_units():
    assert human_count(61_440) == "61.4K" and human_count(124_475_904) == "124M" and human_count(12) == "12"
    assert human_duration(59.6) == "1m 00s" and human_duration(3725) == "1h 02m 05s" and human_duration(4) == "4s"
