"""The generate benchmark's own pieces (the quick run of the whole suite is in test_bench.py)."""

import pytest
import torch

from gpt2.model import GPT
from tools.bench.generate import bench_setup, decoders, hf_twin

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_setups_fit_the_window_and_the_real_vocab():
    for device, quick in ((torch.device("cpu"), False), (torch.device("cpu"), True), (torch.device("cuda"), False)):
        size, config, prompt, new, batches = bench_setup(device, quick)
        assert prompt + new <= config.block_size and config.vocab_size == 50257
        assert batches == ((1, 2) if quick else (1, 8))
        if not quick:  # the size people run (issue 30: the CPU rows timed `mini` and named no size)
            assert size == "124M" and (config.n_layer, config.n_embd, config.block_size) == (12, 768, 1024)
    assert bench_setup(torch.device("cpu"), False)[3] == 128


def test_hf_twin_computes_the_same_function_and_decoders_agree():
    config = bench_setup(torch.device("cpu"), True)[1]
    torch.manual_seed(0)
    model = GPT(config).eval()
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:
                p.normal_(0.0, 0.3)  # far-apart logits: greedy choices do not hinge on float rounding
    hf = hf_twin(model)
    idx = torch.randint(0, 50257, (2, 20), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(hf(idx).logits, model(idx)[0], rtol=1e-4, atol=1e-4)
    # batch 3: HF prefills one copy of the prompt and repeats its cache, as ours does; every row still decodes right
    fns = decoders(model, hf, idx[0].tolist(), 12, 3, torch.device("cpu"))
    ours = fns["ours"]()
    assert len(ours) == 12 and ours == fns["hf"]() == fns["no_cache"]()
    expected = hf.generate(idx[:1], attention_mask=torch.ones_like(idx[:1]), max_new_tokens=12, do_sample=False)
    assert ours == expected[0, 20:].tolist()  # HF's plain generate (prefill of its own) agrees


def test_cpu_no_cache_ratio_times_both_sides_over_the_same_short_length(monkeypatch):
    """The full CPU path (no-cache over fewer tokens), on a tiny model; every row names the size."""
    from tools.bench import generate as bench_generate

    tiny = bench_setup(torch.device("cpu"), True)[1]
    monkeypatch.setattr(bench_generate, "bench_setup", lambda device, quick: ("tiny", tiny, 8, 12, (1, 2)))
    monkeypatch.setattr(bench_generate, "NO_CACHE_NEW_TOKENS_CPU", 4)
    results = bench_generate.run("cpu", repeat=2, quick=False)
    assert [r.name for r in results] == [
        "generate tiny B=1 vs HF",
        "generate tiny B=1 vs no cache",
        "generate tiny B=2 vs HF",
        "generate tiny B=2 vs no cache",
    ]
    for vs_hf, vs_no_cache in (results[:2], results[2:]):
        assert vs_no_cache.extra["no_cache_new_tokens"] == 4 and vs_hf.extra["new_tokens"] == 12
        assert vs_hf.extra["repeat"] == 2 and vs_hf.extra["size"] == "tiny"  # batch 8 no longer gets fewer repeats
        assert "first 4 new tokens" in vs_no_cache.extra["note"]
        assert all(x > 0 for x in (vs_hf.ours, vs_hf.reference, vs_no_cache.ours, vs_no_cache.reference))
        assert vs_no_cache.ratio == pytest.approx(vs_no_cache.ours / vs_no_cache.reference)
