"""HellaSwag: lm-eval preprocessing, file formats, bad input, download, and the three accuracies."""

import json
import math

import pytest
import torch

from evaluate_helpers import ITEMS, SHARED_HELLASWAG, tiny_model, write_jsonl
from gpt2 import GPT2Error
from gpt2.evaluate import hellaswag
from gpt2.evaluate.hellaswag import (
    HellaSwagItem,
    ItemScores,
    download_hellaswag,
    hellaswag_accuracy,
    load_hellaswag,
    preprocess,
    score_items,
)
from gpt2.tokenizer import get_tokenizer

THE = 262  # token id of " the"


def test_preprocess_is_lm_eval_cleanup():
    assert preprocess("Garden: [header] How to sow grass [title] Choose a time. [step] Plant  it. ") == (
        "Garden: How to sow grass. Choose a time. Plant it."
    )
    # exactly lm-eval's order of operations: strip first, so a leading marker leaves a leading space
    assert preprocess("[substeps] Water daily.") == " Water daily."
    assert preprocess("no markers here") == "no markers here"


def test_raw_record_is_preprocessed_like_lm_eval(tmp_path):
    raw = {
        "ind": 7,
        "activity_label": "Roof shingle removal",
        "ctx_a": "A man is sitting on a roof.",
        "ctx_b": "he",
        "ctx": "A man is sitting on a roof. he",
        "endings": ["is using wrap [title] to wrap skis.", "rips tiles off.", "holds a cube.", "starts pulling."],
        "label": 3,
        "split": "val",
    }
    (item,) = load_hellaswag(write_jsonl(tmp_path / "raw.jsonl", [raw]))
    assert item.ctx == "Roof shingle removal: A man is sitting on a roof. He"  # ctx_b.capitalize()
    assert item.endings[0] == "is using wrap. to wrap skis."
    assert item.label == 3
    assert item.source.endswith("raw.jsonl:1")


def test_raw_official_records_give_the_shared_files_items(tmp_path):
    """Rebuild two official raw records by hand from the shared (already preprocessed) file."""
    if not SHARED_HELLASWAG.is_file():
        pytest.skip(f"../shared/data not present ({SHARED_HELLASWAG} missing)")
    shared = {}
    with open(SHARED_HELLASWAG) as f:
        for line in f:
            record = json.loads(line)
            if record["ind"] in (0, 3276):
                shared[record["ind"]] = record
    raw = [
        {  # ActivityNet: lm-eval capitalises ctx_b, the shared file keeps the raw lowercase "he"
            "activity_label": "Roof shingle removal",
            "ctx_a": "A man is sitting on a roof.",
            "ctx_b": "he",
            "endings": shared[0]["endings"],
            "label": shared[0]["label"],
        },
        {  # WikiHow: [header] / [title] / [step] markers and an empty ctx_b
            "activity_label": "Home and Garden",
            "ctx_a": "[header] How to sow grass seed [title] Choose the right time of year. [step] "
            + shared[3276]["ctx"].split("Choose the right time of year. ")[1],
            "ctx_b": "",
            "endings": shared[3276]["endings"],
            "label": shared[3276]["label"],
        },
    ]
    ours = load_hellaswag(write_jsonl(tmp_path / "raw.jsonl", raw))
    assert ours[0].ctx == shared[0]["ctx"][: -len("he")] + "He"
    assert ours[1].ctx == shared[3276]["ctx"]
    for item, ind in zip(ours, (0, 3276), strict=True):
        assert list(item.endings) == shared[ind]["endings"]
        assert item.label == shared[ind]["label"]


def test_preprocessed_file_and_limit(tmp_path):
    path = write_jsonl(tmp_path / "val.jsonl", ITEMS + [""])  # a trailing blank line is fine
    items = load_hellaswag(path)
    assert [i.ctx for i in items] == [r["ctx"] for r in ITEMS]
    assert [i.label for i in items] == [0, 1, 2]
    assert len(load_hellaswag(path, limit=2)) == 2
    if SHARED_HELLASWAG.is_file():
        assert len(load_hellaswag(SHARED_HELLASWAG, limit=5)) == 5


GOOD = json.dumps(ITEMS[0])


@pytest.mark.parametrize(
    "lines, message",
    [
        ([GOOD, '{"ctx": "x", "endings": ['], ":2: malformed JSON"),
        ([GOOD, GOOD, json.dumps({**ITEMS[0], "label": 4})], ":3: label 4 is out of range 0-3"),
        ([json.dumps({**ITEMS[0], "label": -1})], ":1: label -1 is out of range"),
        ([json.dumps({k: v for k, v in ITEMS[0].items() if k != "label"})], ":1: field 'label' must be an integer"),
        ([json.dumps({**ITEMS[0], "endings": ["a", "b", "c"]})], ":1: expected 4 endings, got 3"),
        ([json.dumps({**ITEMS[0], "endings": "abcd"})], ":1: field 'endings' must be a list"),
        ([json.dumps({"endings": ITEMS[0]["endings"], "label": 0})], ":1: field 'ctx' must be a string"),
        ([json.dumps({**ITEMS[0], "activity_label": "x"})], ":1: field 'ctx_a' must be a string"),
        (["[1, 2]"], ":1: expected a JSON object"),
        ([], "no HellaSwag items"),
        (["", "  "], "no HellaSwag items"),
    ],
)
def test_bad_input_names_file_and_line(tmp_path, lines, message):
    path = write_jsonl(tmp_path / "bad.jsonl", lines) if lines else tmp_path / "bad.jsonl"
    if not lines:
        path.write_text("")
    with pytest.raises(GPT2Error) as info:
        load_hellaswag(path)
    assert str(path) in str(info.value)
    assert message in str(info.value)


def test_missing_file_and_bad_limit(tmp_path):
    with pytest.raises(GPT2Error, match="not found"):
        load_hellaswag(tmp_path / "nope.jsonl")
    with pytest.raises(GPT2Error, match="positive"):
        load_hellaswag(tmp_path / "nope.jsonl", limit=0)


def test_download_caches_the_file_once(tmp_path):
    source = write_jsonl(tmp_path / "hellaswag_val.jsonl", ITEMS)
    cached = download_hellaswag(tmp_path / "cache", url=source.as_uri())
    assert cached == tmp_path / "cache" / "hellaswag" / "hellaswag_val.jsonl"
    assert cached.read_text() == source.read_text()
    source.unlink()  # a second call must not touch the network (or the source) again
    assert download_hellaswag(tmp_path / "cache", url=source.as_uri()) == cached


def test_unreachable_download_suggests_data_and_leaves_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv("GPT2_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(hellaswag, "HELLASWAG_VAL_URL", "http://127.0.0.1:9/hellaswag_val.jsonl")
    with pytest.raises(GPT2Error, match="--data FILE"):
        load_hellaswag()  # the default: download the official file
    assert not any(p.is_file() for p in (tmp_path / "cache").rglob("*"))


# ------------------------------------------------------------------ the three accuracies


def peaked_model(favourite: int, logit: float):
    """Every next-token distribution is the same: ``favourite`` has logit ``logit``, all others 0.

    All weights are zero except the final LayerNorm bias (so every position's output is e_0) and
    the tied embedding row of ``favourite`` (so its logit is ``logit``).
    """
    model = tiny_model()
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
        model.transformer.ln_f.bias[0] = 1.0
        model.transformer.wte.weight[favourite, 0] = logit
    return model


# With p = e^logit the favourite costs F = ln p - ln(p + 50256) nats and any other token U = -ln(p + 50256).
# "ok." (2 tokens) has the best sum, "internationalization." the best sum per character, and
# "the the the." (three favourites) the best mean per token: each metric picks a different ending.
ENDINGS = ["ok.", "internationalization.", "the the the.", "went home."]


def test_each_metric_picks_its_own_known_answer():
    tok = get_tokenizer()
    assert [tok.encode(" " + e) for e in ENDINGS][2] == [THE, THE, THE, tok.encode(".")[0]]
    assert [len(tok.encode(" " + e)) for e in ENDINGS] == [2, 3, 4, 3]
    p = 100.0
    favourite, other = math.log(p) - math.log(p + 50256), -math.log(p + 50256)
    labels = [0, 0, 0, 1, 1, 2]  # acc gets 3 right, acc_norm 2, acc_norm_token 1
    items = [HellaSwagItem("A man walks into a room. He", tuple(ENDINGS), label) for label in labels]
    model = peaked_model(THE, math.log(p))

    (scores, *_) = score_items(model, items)
    expected = [2 * other, 3 * other, 3 * favourite + other, 3 * other]
    # float32 softmax over 50257 logits: sums of 50k terms round at the 1e-5 relative level
    assert scores.logprobs == pytest.approx(expected, abs=1e-3)
    assert (scores.pred, scores.pred_norm, scores.pred_norm_token) == (0, 1, 2)
    result = hellaswag_accuracy(model, items, batch_size=4)
    assert result == {"acc": 3 / 6, "acc_norm": 2 / 6, "acc_norm_token": 1 / 6, "n": 6}


def test_item_scores_ties_go_to_the_first_ending_like_numpy_argmax():
    tied = ItemScores(logprobs=(-4.0, -4.0, -6.0, -8.0), num_tokens=(2, 2, 3, 4), num_chars=(8, 8, 12, 16))
    assert (tied.pred, tied.pred_norm, tied.pred_norm_token) == (0, 0, 0)
    # per character: -6/30 = -0.2 is best; per token: -8/40 = -0.2 is best
    scores = ItemScores(logprobs=(-4.0, -5.0, -6.0, -8.0), num_tokens=(2, 5, 13, 40), num_chars=(8, 10, 30, 16))
    assert (scores.pred, scores.pred_norm, scores.pred_norm_token) == (0, 2, 3)
