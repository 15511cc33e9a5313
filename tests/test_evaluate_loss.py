"""Validation loss: deterministic, equal to a direct computation, on prepared shards and raw text files."""

import json
import math

import numpy as np
import pytest
import torch

from evaluate_helpers import hf_tokenizer, tiny_model, uniform_model, write_jsonl
from gpt2 import GPT2Error
from gpt2.data import prepare_documents
from gpt2.evaluate.loss import evaluate_loss, evaluate_text_loss, text_file_tokens
from gpt2.tokenizer import EOT_ID, get_tokenizer

DOCS = [f"Document {i}: the quick brown fox number {i} jumps over {i * 7} lazy dogs. " * 6 for i in range(30)]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("prepared") / "data"
    prepare_documents(DOCS, path, shard_tokens=4000, val_tokens=600)
    return path


def _direct_loss(model, batches):
    with torch.no_grad():
        losses = [model(x, y)[1].item() for x, y in batches]
    return sum(losses) / len(losses)


def _val_windows(data_dir, seq_len, indices):
    """Windows ``indices`` of ``seq_len`` predicted tokens of the val stream, as (x, y) pairs, read from the
    shard files themselves (an independent reader: numpy over the uint16 tokens after the 256-int32 header)."""
    stream = np.concatenate([np.fromfile(f, dtype=np.uint16, offset=1024) for f in sorted(data_dir.glob("*val*.bin"))])
    stream = torch.from_numpy(stream.astype(np.int64))
    return len(stream), [
        (stream[None, i * seq_len : (i + 1) * seq_len], stream[None, i * seq_len + 1 : (i + 1) * seq_len + 1])
        for i in indices
    ]


def test_evaluate_loss_is_deterministic_and_equals_direct_computation(data_dir):
    model = tiny_model(seed=2)
    first = evaluate_loss(model, data_dir, batch_size=2, seq_len=32)
    second = evaluate_loss(model, data_dir, batch_size=2, seq_len=32)
    assert first == second
    n, _ = _val_windows(data_dir, 32, [])
    windows = (n - 1) // 32  # the whole split, each token once, whatever the batch size
    assert n == 600 and first["tokens"] == windows * 32 == 18 * 32
    assert first["loss"] == pytest.approx(_direct_loss(model, _val_windows(data_dir, 32, range(windows))[1]), abs=1e-5)
    assert first["perplexity"] == pytest.approx(math.exp(first["loss"]))
    assert evaluate_loss(model, data_dir, batch_size=5, seq_len=32)["loss"] == pytest.approx(first["loss"], abs=1e-6)


def test_max_tokens_rounds_down_to_whole_windows_spread_over_the_split(data_dir):
    model = tiny_model(seed=2)
    result = evaluate_loss(model, data_dir, max_tokens=200, batch_size=2, seq_len=32)
    assert result["tokens"] == 192  # 6 windows of 32 of the split's 18: the middle one of each 3, not the first 6
    expected = _direct_loss(model, _val_windows(data_dir, 32, [1, 4, 7, 10, 13, 16])[1])
    assert result["loss"] == pytest.approx(expected, abs=1e-5)
    assert evaluate_loss(model, data_dir, max_tokens=10, batch_size=2, seq_len=32)["tokens"] == 32  # >= one window


def test_uniform_model_has_loss_ln_vocab(data_dir):
    # the training objective: cross-entropy over the model's full (padded, 50304) output layer
    result = evaluate_loss(uniform_model(), data_dir, max_tokens=256, batch_size=2, seq_len=64)
    assert result["loss"] == pytest.approx(math.log(50304), abs=1e-4)


def test_loss_errors(data_dir):
    model = tiny_model()
    with pytest.raises(GPT2Error, match="seq_len 4096 exceeds"):
        evaluate_loss(model, data_dir, seq_len=4096)
    with pytest.raises(GPT2Error, match="positive"):
        evaluate_loss(model, data_dir, max_tokens=0)
    with pytest.raises(GPT2Error):
        evaluate_loss(model, data_dir / "missing")


def test_text_file_loss_equals_windows_of_the_token_stream(tmp_path):
    text = " ".join(DOCS[:3])
    path = tmp_path / "notes.txt"
    path.write_text(text)
    tokens = text_file_tokens(path)
    assert tokens[0] == EOT_ID and tokens[1:].tolist() == get_tokenizer().encode(text)
    model = tiny_model(seed=4)
    result = evaluate_text_loss(model, path, batch_size=3, seq_len=40)
    n_windows = (len(tokens) - 1) // 40
    assert result["tokens"] == n_windows * 40
    stream = torch.from_numpy(tokens)
    windows = [stream[w * 40 : (w + 1) * 40 + 1] for w in range(n_windows)]
    expected = _direct_loss(model, [(w[None, :-1], w[None, 1:]) for w in windows])
    assert result["loss"] == pytest.approx(expected, abs=1e-5)
    assert evaluate_text_loss(model, path, max_tokens=80, seq_len=40)["tokens"] == 80


def test_jsonl_text_and_bad_files(tmp_path):
    good = write_jsonl(tmp_path / "docs.jsonl", [{"text": d} for d in DOCS[:2]])
    assert evaluate_text_loss(tiny_model(), good, seq_len=64)["tokens"] > 0
    bad = write_jsonl(tmp_path / "bad.jsonl", [json.dumps({"text": "ok"}), "{not json"])
    with pytest.raises(GPT2Error, match=r"bad.jsonl:2"):
        evaluate_text_loss(tiny_model(), bad)
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    with pytest.raises(GPT2Error, match="empty"):
        evaluate_text_loss(tiny_model(), empty)
    with pytest.raises(GPT2Error, match="not found"):
        evaluate_text_loss(tiny_model(), tmp_path / "missing.txt")


HELD_OUT = [  # multi-byte text: tokens that hold part of a character count their own bytes
    "Café crème at the naïve Zoë's: 3 € a cup.",
    "日本語のテキスト, and an emoji 🙂 between words.",
    "Plain ASCII closes the held-out file.",
]


def test_bits_per_byte_equal_an_independent_computation(tmp_path):
    path = write_jsonl(tmp_path / "held_out.jsonl", [{"text": t} for t in HELD_OUT])
    hf = hf_tokenizer(tmp_path / "hf")
    stream = []
    for text in HELD_OUT:
        stream += [EOT_ID, *hf.encode(text)]  # transformers' BPE, not ours
    model = tiny_model(seed=3)
    result = evaluate_text_loss(model, path, seq_len=len(stream) - 1)  # one window: every target once
    with torch.no_grad():
        logits = model(torch.tensor([stream[:-1]]))[0][0].double()
    nats = -torch.log_softmax(logits, dim=-1)[torch.arange(len(stream) - 1), torch.tensor(stream[1:])]
    text_targets = torch.tensor(stream[1:]) != EOT_ID  # the two <|endoftext|> between documents: 0 bytes, left out
    n_bytes = sum(len(t.encode("utf-8")) for t in HELD_OUT)  # the targets are exactly the text, byte for byte
    assert result["tokens"] == len(stream) - 1
    assert result["bpb"] == pytest.approx(float(nats[text_targets].sum()) / (math.log(2) * n_bytes), abs=1e-6)
    assert result["loss"] == pytest.approx(float(nats.mean()), rel=1e-6)  # nats/token still counts every target
    assert result["bytes_per_token"] == pytest.approx(n_bytes / (len(stream) - 1))


def test_token_bytes_are_the_raw_byte_lengths(tmp_path):
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    byte_of = {char: byte for byte, char in bytes_to_unicode().items()}
    hf = hf_tokenizer(tmp_path / "hf")
    tokens = hf.convert_ids_to_tokens(list(range(EOT_ID)))  # byte-level strings: one character per byte
    assert get_tokenizer().token_bytes == [len(bytes(byte_of[c] for c in token)) for token in tokens] + [0]
