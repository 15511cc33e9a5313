"""Shared by the tests/test_evaluate_*.py modules: tiny models, HellaSwag files and an independent scorer."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import torch

import gpt2
from gpt2 import GPT, GPTConfig

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
SHARED_HELLASWAG = SHARED_DATA / "hellaswag" / "hellaswag_val.jsonl"
LN_VOCAB = math.log(50257)  # a uniform distribution over GPT-2's tokens costs this per token

ITEMS = [
    {
        "ctx": "Making tea: A woman fills a kettle with water. She",
        "endings": ["puts it on the stove.", "eats the kettle.", "flies to the moon quickly.", "sings a song."],
        "label": 0,
    },
    {
        "ctx": "Roof shingle removal: A man is sitting on a roof. he",
        "endings": ["is using wrap to wrap a pair of skis.", "is ripping level tiles off.", "jumps.", "starts."],
        "label": 1,
    },
    {
        "ctx": "Home and Garden: How to sow grass seed. Choose the right time of year.",
        "endings": ["Fall is best.", "Spring works too, but water more.", "Never in winter.", "Ask a neighbour."],
        "label": 2,
    },
]


def write_jsonl(path: Path, records: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records))
    return path


def tiny_model(seed: int = 0, block_size: int = 128) -> GPT:
    torch.manual_seed(seed)
    config = GPTConfig(block_size=block_size, n_layer=2, n_head=2, n_embd=64)
    return GPT(config).eval()


def uniform_model() -> GPT:
    """A model whose every next-token distribution is uniform: all weights zero gives all logits 0."""
    model = tiny_model()
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
    return model


def save_hf_model(path: Path, n_positions: int = 128, seed: int = 0) -> Path:
    """A random tiny GPT-2 saved by transformers itself (the format of real HF checkpoints)."""
    import transformers

    torch.manual_seed(seed)
    config = transformers.GPT2Config(n_layer=2, n_head=2, n_embd=64, n_positions=n_positions)
    transformers.GPT2LMHeadModel(config).eval().save_pretrained(path)
    return path


def hf_tokenizer(directory: Path):
    """transformers' own GPT-2 BPE, loaded from the same offline files in HF's layout."""
    import transformers

    vocab_bpe, encoder_json = gpt2.tokenizer.bpe_files()
    directory.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(encoder_json, directory / "vocab.json")
    shutil.copyfile(vocab_bpe, directory / "merges.txt")
    return transformers.GPT2TokenizerFast.from_pretrained(str(directory))


@torch.no_grad()
def reference_loglikelihood(hf_model, tokenizer, context: str, continuation: str, max_length: int) -> float:
    """lm-evaluation-harness's HFLM.loglikelihood for one request, with transformers, one row at a time."""
    n_spaces = len(context) - len(context.rstrip())
    if n_spaces:
        context, continuation = context[:-n_spaces], context[-n_spaces:] + continuation
    whole = tokenizer.encode(context + continuation)
    context_enc = tokenizer.encode(context)
    continuation_enc = whole[len(context_enc) :]
    inp = (context_enc + continuation_enc)[-(max_length + 1) :][:-1]
    logprobs = torch.log_softmax(hf_model(torch.tensor([inp])).logits[0].double(), dim=-1)
    scored = logprobs[len(inp) - len(continuation_enc) :]
    return float(scored.gather(1, torch.tensor(continuation_enc)[:, None]).sum())
