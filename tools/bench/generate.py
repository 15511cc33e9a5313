"""``python -m tools.bench generate``: decoding speed (new tokens/s) of our KV-cache generation.

Compared in the same run, on the same weights and prompt, greedy, exactly ``new_tokens`` tokens
(end-of-text does not stop any side):

* **HF**: ``transformers.GPT2LMHeadModel.generate`` with its KV cache, on our weights exported
  through :mod:`gpt2.interop` (so both compute the same function; the token ids are compared too);
* **no cache**: our model recomputing the whole sequence for every new token (build-nanogpt's method).

Size: GPT-2 124M (random weights, the real 50,257-token vocabulary) on CPU and CUDA, named in every row;
quick mode a tiny model and a few tokens. CPU: 32 prompt + 128 new tokens; CUDA: 32 + 256. Batch 1 and 8
(8 samples of one prompt, as ``gpt2 sample -n 8`` does). Both sides prefill **one** copy of the prompt and
give each of the B rows a copy of its KV cache (ours in ``generate_token_ids``; HF through its
``DynamicCache.batch_repeat_interleave``), so a batch-8 ratio compares decoding, not 8 prefills against one.
Ours and HF are timed in alternation, the order rotating from round to round. The no-cache baseline on
CPU decodes only the first ``NO_CACHE_NEW_TOKENS_CPU`` tokens (its cost is quadratic in length: a whole
run of 124M at batch 8 would take minutes), and ours is then re-timed over the same tokens for that ratio,
which therefore understates the cache's gain at the full length. The entries' extras say so.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from gpt2.config import GPT2_VOCAB_SIZE, GPTConfig
from gpt2.generate import generate_token_ids
from gpt2.generate.sampling import SamplingOptions
from gpt2.model import GPT
from gpt2.tokenizer import get_tokenizer
from tools.bench.core import BenchResult, interleaved_median_seconds, median_seconds

HF_NAME = "transformers GPT2LMHeadModel.generate (KV cache)"
NO_CACHE_NAME = "ours without KV cache (full recompute per token)"
PROMPT = (
    "The history of natural language processing generally started in the 1950s, although work can be "
    "found from earlier periods. In 1950, Alan Turing published an article titled"
)
NO_CACHE_NEW_TOKENS_CPU = 64


def bench_setup(device: torch.device, quick: bool) -> tuple[str, GPTConfig, int, int, tuple[int, ...]]:
    """(size name, config, prompt tokens, new tokens, batch sizes) for this device."""
    if quick:
        return (
            "tiny",
            GPTConfig(block_size=64, vocab_size=GPT2_VOCAB_SIZE, n_layer=2, n_head=2, n_embd=64),
            16,
            24,
            (1, 2),
        )
    return "124M", GPTConfig(vocab_size=GPT2_VOCAB_SIZE), 32, 256 if device.type == "cuda" else 128, (1, 8)


def hf_twin(model: GPT):
    """An HF ``GPT2LMHeadModel`` with exactly ``model``'s weights (through the interop export tensors)."""
    from transformers import GPT2Config, GPT2LMHeadModel
    from transformers.utils import logging as hf_logging

    from gpt2.interop.hf import hf_config_dict, hf_state_dict

    hf_logging.set_verbosity_error()
    hf = GPT2LMHeadModel(GPT2Config(**hf_config_dict(model.config)))
    missing, unexpected = hf.load_state_dict(hf_state_dict(model), strict=False)
    if unexpected or any(not k.endswith((".attn.bias", ".attn.masked_bias", "lm_head.weight")) for k in missing):
        raise RuntimeError(f"HF twin does not match: missing {missing[:3]}, unexpected {unexpected[:3]}")
    hf.tie_weights()
    return hf.eval()


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def decoders(
    model: GPT, hf, prompt_ids: list[int], new_tokens: int, batch: int, device: torch.device
) -> dict[str, Callable[[], list[list[int]]]]:
    """One callable per implementation; each decodes ``new_tokens`` greedy tokens for ``batch`` copies of the
    prompt and returns the token ids of the first sample."""
    options = SamplingOptions(max_new_tokens=new_tokens, temperature=0, num_samples=batch)

    def ours(use_cache: bool = True) -> list[int]:
        steps = generate_token_ids(model, prompt_ids, options, device=device, stop_at_eot=False, use_cache=use_cache)
        ids = [step[0] for step in steps]
        _synchronize(device)
        return ids

    def reference() -> list[int]:
        idx = torch.tensor([prompt_ids] * batch, device=device)
        with torch.inference_mode():
            # Prefill one copy of the prompt, as ours does, and give each row a copy of the cache; generate()
            # then feeds the prompt's last token (the one not in the cache) in all rows at once.
            cache = hf(idx[:1, :-1], use_cache=True).past_key_values
            cache.batch_repeat_interleave(batch)
            out = hf.generate(
                idx,
                cache=cache,  # (transformers < 5.24: past_key_values=)
                attention_mask=torch.ones_like(idx),
                max_new_tokens=new_tokens,
                min_new_tokens=new_tokens,
                do_sample=False,
                pad_token_id=get_tokenizer().eot_id,
            )
        _synchronize(device)
        return out[0, len(prompt_ids) :].tolist()

    return {"ours": ours, "hf": reference, "no_cache": lambda: ours(use_cache=False)}


def run(device: str = "cpu", repeat: int = 3, quick: bool = False) -> list[BenchResult]:
    dev = torch.device(device)
    size, config, prompt_len, new_tokens, batches = bench_setup(dev, quick)
    torch.manual_seed(0)
    model = GPT(config).to(dev).eval()
    hf = hf_twin(model).to(dev)
    prompt_ids = (get_tokenizer().encode(PROMPT) * 4)[:prompt_len]
    shape = {"size": size, "n_layer": config.n_layer, "n_embd": config.n_embd, "block_size": config.block_size}
    no_cache_tokens = new_tokens if quick or dev.type == "cuda" else min(new_tokens, NO_CACHE_NEW_TOKENS_CPU)
    no_cache_note = (
        "both sides per new token over the same tokens"
        if no_cache_tokens == new_tokens
        else f"both sides timed over the first {no_cache_tokens} new tokens for this ratio (the no-cache cost is "
        f"quadratic in length), so it understates the cache's gain at {new_tokens} tokens; the HF ratio uses all"
    )
    results = []
    for batch in batches:
        fns = decoders(model, hf, prompt_ids, new_tokens, batch, dev)
        no_cache = fns.pop("no_cache")
        same_tokens = fns["ours"]() == fns["hf"]()  # also the warm-up of both
        seconds = interleaved_median_seconds(fns, repeat=repeat, warmup=0)
        # The no-cache side is slow (quadratic in length) and its run long enough to be steady: timed once,
        # after a warm-up of a few tokens; on CPU over fewer new tokens (see the module docstring).
        decoders(model, hf, prompt_ids, 4, batch, dev)["no_cache"]()
        rate = {name: batch * new_tokens / s for name, s in seconds.items()}
        if no_cache_tokens == new_tokens:
            rate["no_cache"] = batch * new_tokens / median_seconds(no_cache, repeat=1, warmup=0)
            ours_vs_no_cache = rate["ours"]
        else:  # equal lengths for this ratio: ours is timed again over the same few tokens
            short = decoders(model, hf, prompt_ids, no_cache_tokens, batch, dev)
            short_seconds = interleaved_median_seconds(
                {"ours": short["ours"], "no_cache": short["no_cache"]}, repeat=1, warmup=0
            )
            rate["no_cache"] = batch * no_cache_tokens / short_seconds["no_cache"]
            ours_vs_no_cache = batch * no_cache_tokens / short_seconds["ours"]
        extra = {"batch": batch, "prompt_tokens": prompt_len, "new_tokens": new_tokens, "repeat": repeat, **shape}
        label = f"generate {size} B={batch}"
        results.append(
            BenchResult(
                f"{label} vs HF",
                rate["ours"],
                rate["hf"],
                "new tokens/s",
                rate["ours"] / rate["hf"],
                HF_NAME,
                {**extra, "same_tokens_as_hf": same_tokens},
            )
        )
        results.append(
            BenchResult(
                f"{label} vs no cache",
                ours_vs_no_cache,
                rate["no_cache"],
                "new tokens/s",
                ours_vs_no_cache / rate["no_cache"],
                NO_CACHE_NAME,
                {**extra, "no_cache_new_tokens": no_cache_tokens, "note": no_cache_note},
            )
        )
    return results
