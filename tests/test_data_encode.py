"""Document encoding: EOT before every document, exact GPT-2 ids, order independent of worker count."""

import numpy as np

from gpt2.data.encode import encode_document, encode_documents
from gpt2.tokenizer import EOT_ID, get_tokenizer

TEXTS = [
    "Hello world",
    "",
    "Ünïcødé — 日本語 text, emoji 🙂 and <|endoftext|> written literally",
    "lone surrogate \ud800 inside",
    "a" * 5000,
    "The quick brown fox jumps over the lazy dog. " * 40,
]


def test_every_document_starts_with_eot_and_matches_encode_ordinary():
    encoding = get_tokenizer().encoding
    for text in TEXTS:
        tokens = encode_document(text)
        assert tokens.dtype == np.uint16 and tokens[0] == EOT_ID
        assert tokens[1:].tolist() == encoding.encode_ordinary(text)
    # the literal special-token string is text, not an EOT
    assert (encode_document(TEXTS[2])[1:] != EOT_ID).all()
    assert encode_document("Hello world").tolist() == [50256, 15496, 995]


def test_order_and_output_identical_for_any_worker_count():
    items = list(enumerate(TEXTS * 30))
    runs = {workers: list(encode_documents(items, workers=workers, chunk_chars=100)) for workers in (1, 2, 3)}
    reference = runs[1]
    assert [index for index, _ in reference] == list(range(len(items)))
    for workers in (2, 3):
        assert [i for i, _ in runs[workers]] == [i for i, _ in reference]
        assert all(np.array_equal(a, b) for (_, a), (_, b) in zip(runs[workers], reference, strict=True))
