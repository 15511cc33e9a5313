"""`python -m tools.bench serve`, quick: batching beats one-at-a-time, every entry is a real figure or says why not."""

import pytest
import torch

import gpt2
from gpt2 import GPT, GPTConfig, save_model
from gpt2.cli import main
from gpt2.evaluate.loss import evaluate_loss
from tools.bench import serve


@pytest.fixture(scope="module")
def quality_inputs(tmp_path_factory):
    """A tiny checkpoint and a prepared dataset with a val split (random weights: only the plumbing is tested)."""
    root = tmp_path_factory.mktemp("bench_serve")
    torch.manual_seed(0)
    model = save_model(root / "tiny", GPT(GPTConfig.named("tiny")))
    (root / "corpus.txt").write_text("The quick brown fox jumps over the lazy dog. " * 2000)
    data = root / "data"
    assert (
        main(["prepare", "files", str(root / "corpus.txt"), "--out", str(data), "--val-tokens", "4096", "--quiet"]) == 0
    )
    return str(model), str(data)


def test_serve_suite_quick(monkeypatch, tmp_path):
    monkeypatch.setenv("GPT2_BENCH_SERVE_MODEL", str(tmp_path / "no-model"))
    results = {r.name: r for r in serve.run(repeat=1, quick=True)}
    batching = next(r for name, r in results.items() if name.startswith("serve 4 concurrent"))
    assert (
        batching.ours > 0
        and batching.reference > 0
        and batching.ratio == pytest.approx(batching.ours / batching.reference)
    )
    # no speed threshold here: timings on a shared machine are noise; `python -m tools.bench serve` judges the ratio
    assert batching.extra["tokens"] == 4 * 8
    for name in ("int8", "bf16"):
        speed = results[f"generate {name} vs fp32 (tiny, batch 1)"]
        assert speed.ours > 0 and speed.ratio == pytest.approx(speed.ours / speed.reference)
    assert not any(name.startswith("val loss") for name in results)
    assert "no trained model" in results["generate int8 vs fp32 (tiny, batch 1)"].extra["quality_note"]


def test_quality_cost_is_the_loss_change_on_held_out_data(monkeypatch, quality_inputs):
    model, data = quality_inputs
    monkeypatch.setenv("GPT2_BENCH_SERVE_MODEL", model)
    monkeypatch.setenv("GPT2_BENCH_SERVE_DATA", data)
    fp32 = evaluate_loss(gpt2.load(model), data, split="val", max_tokens=2048)["loss"]
    for result in serve.bench_quality(quick=True):
        assert result.reference == pytest.approx(fp32, abs=1e-6)
        assert result.extra["delta"] == pytest.approx(result.ours - fp32) and result.extra["delta"] != 0
        assert abs(result.extra["delta"]) < 0.1


def test_serve_suite_refuses_cuda():
    with pytest.raises(ValueError, match="CPU serving"):
        serve.run(device="cuda", repeat=1, quick=True)
