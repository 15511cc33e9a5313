import pytest
import torch

from gpt2 import GPT, GPTConfig, get_tokenizer, save_model
from gpt2.cli import main
from gpt2.generate import TextAssembler, fit_prompt, generate, generate_token_ids, stream, stream_samples
from gpt2.generate.sampling import SamplingOptions

PROMPTS = ["Hello, my name is", "The quick brown fox", "x"]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def sharp_model(seed: int = 0, **config) -> GPT:
    """A tiny random model with large weights: its logits are far apart, so greedy choices are not
    decided by float rounding (cached and recomputed attention differ in the last bits)."""
    torch.manual_seed(seed)
    model = GPT(GPTConfig(**{**GPTConfig.named("tiny").to_dict(), **config}))
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:
                p.normal_(0.0, 0.3)
    return model.eval()


@pytest.fixture(scope="module")
def model() -> GPT:
    return sharp_model(block_size=48)


def greedy_reference(model: GPT, ids: list[int], steps: int) -> list[int]:
    """Greedy decoding the seed's way: the whole window through the model for every token, no cache.
    Slides like generate(): when the window overflows, keep its last 3/4."""
    block, keep = model.config.block_size, int(model.config.block_size * 0.75)
    tokens, start = list(ids), 0
    with torch.no_grad():
        for _ in range(steps):
            logits, _ = model(torch.tensor([tokens[start:]]), logits_at=-1)
            tokens.append(int(logits[0, -1, :50257].argmax()))
            if len(tokens) - start > block:
                start = len(tokens) - keep
    return tokens[len(ids) :]


@pytest.mark.parametrize("prompt", PROMPTS)
def test_greedy_with_cache_equals_recompute(model, prompt):
    ids = get_tokenizer().encode(prompt)
    options = SamplingOptions(max_new_tokens=30, temperature=0, num_samples=2)
    cached = list(generate_token_ids(model, ids, options, stop_at_eot=False))
    expected = greedy_reference(model, ids, 30)
    assert [step[0] for step in cached] == expected
    assert [step[1] for step in cached] == expected  # every sample of the batch


def test_greedy_past_the_window_slides_like_recompute(model):
    ids = get_tokenizer().encode("A long story begins here and")
    steps = 60  # prompt + 60 > 48 + 12: the window slides twice
    options = SamplingOptions(max_new_tokens=steps, temperature=0)
    cached = [step[0] for step in generate_token_ids(model, ids, options, stop_at_eot=False)]
    assert cached == greedy_reference(model, ids, steps)
    no_cache = [step[0] for step in generate_token_ids(model, ids, options, stop_at_eot=False, use_cache=False)]
    assert no_cache == cached


def test_greedy_matches_transformers(tmp_path):
    transformers = pytest.importorskip("transformers")
    import gpt2

    config = transformers.GPT2Config(
        vocab_size=50257, n_positions=64, n_embd=32, n_layer=2, n_head=2, initializer_range=0.3
    )
    torch.manual_seed(0)
    hf = transformers.GPT2LMHeadModel(config).eval()
    hf.save_pretrained(tmp_path)
    ours = gpt2.load(str(tmp_path))
    for prompt in PROMPTS[:2]:
        ids = get_tokenizer().encode(prompt)
        with torch.no_grad():
            out = hf.generate(
                torch.tensor([ids]), max_new_tokens=16, do_sample=False, pad_token_id=50256, attention_mask=None
            )
        expected = out[0, len(ids) :].tolist()
        got = [step[0] for step in generate_token_ids(ours, ids, SamplingOptions(max_new_tokens=16, temperature=0))]
        assert got == expected[: len(got)]
        assert len(got) == 16 or got[-1] == 50256


def test_seed_reproducible_and_global_rng_untouched(model):
    rng_before = torch.get_rng_state()
    kwargs = dict(max_new_tokens=12, temperature=1.0, top_k=50, top_p=0.95, num_samples=3)
    first = generate(model, "Once upon a time", seed=123, **kwargs)
    again = generate(model, "Once upon a time", seed=123, **kwargs)
    other = generate(model, "Once upon a time", seed=124, **kwargs)
    unseeded = generate(model, "Once upon a time", **kwargs)
    assert torch.equal(torch.get_rng_state(), rng_before)
    assert first == again
    assert first != other
    assert len(set(first)) == 3  # the samples of one batch differ from each other
    assert len(unseeded) == 3 and all(unseeded)


def test_top_k_one_equals_greedy(model):
    greedy = generate(model, "The meaning of life", max_new_tokens=25, temperature=0)
    top1 = generate(model, "The meaning of life", max_new_tokens=25, temperature=0.8, top_k=1, seed=5)
    assert top1 == greedy


def test_stream_joins_to_generate_and_decode(model):
    kwargs = dict(max_new_tokens=30, temperature=1.0, seed=7)
    pieces = list(stream(model, "Stream me", **kwargs))
    assert "".join(pieces) == generate(model, "Stream me", **kwargs)[0]
    ids = [s[0] for s in generate_token_ids(model, get_tokenizer().encode("Stream me"), SamplingOptions(**kwargs))]
    assert "".join(pieces) == get_tokenizer().decode([i for i in ids if i != 50256])
    per_step = list(stream_samples(model, "Stream me", num_samples=2, **kwargs))
    assert all(len(step) == 2 for step in per_step)


def test_stop_string_cuts_before_it(model):
    full = generate(model, "Stop here", max_new_tokens=30, temperature=0)[0]
    stop = full[len(full) // 2 : len(full) // 2 + 3]
    expected = full[: full.find(stop)]
    assert generate(model, "Stop here", max_new_tokens=30, temperature=0, stop=[stop, "never appears"]) == [expected]
    pieces = list(stream(model, "Stop here", max_new_tokens=30, temperature=0, stop=[stop]))
    assert "".join(pieces) == expected


def test_text_assembler_holds_back_stop_prefix():
    tok = get_tokenizer()
    text = TextAssembler(tok, stop=["<end>"])
    assert text.feed_bytes(b"abc<e") == "abc"  # "<e" might start "<end>": held back
    assert text.feed_bytes(b"x") == "<ex"  # it did not
    assert text.feed_bytes(b"yz<en") == "yz"
    assert text.feed_bytes(b"d> tail") == "" and text.done


def test_utf8_never_split_across_pieces():
    tok = get_tokenizer()
    sample = "Emoji 😀🎉👩‍👩‍👧 and 日本語のテキスト, ünïcödé ✓ 🦄🦄"
    ids = tok.encode(sample)
    assert any("\ufffd" in tok.decode([i]) for i in ids), "the sample must contain tokens that split a character"
    text = TextAssembler(tok)
    pieces = [text.feed(i) for i in ids] + [text.finish()]
    assert "".join(pieces) == sample
    assert not any("\ufffd" in piece for piece in pieces)
    # raw bytes split at every possible place, including the middle of 4-byte characters
    data = sample.encode()
    for cut in range(1, len(data)):
        text = TextAssembler(tok)
        parts = [text.feed_bytes(data[:cut]), text.feed_bytes(data[cut:]), text.finish()]
        assert "".join(parts) == sample and not any("\ufffd" in p for p in parts)


def test_truncated_trailing_bytes_become_replacement_char():
    text = TextAssembler(get_tokenizer())
    assert text.feed_bytes("ok😀".encode()[:-1]) == "ok"
    assert text.finish() == "\ufffd"


class EndsImmediately(GPT):
    """A model that always prefers <|endoftext|> (to test stopping at EOT)."""

    def forward(self, idx, targets=None, kv_cache=None, logits_at=None):
        logits, loss = super().forward(idx, targets, kv_cache, logits_at)
        logits[..., 50256] += 1000.0
        return logits, loss


def test_stops_at_end_of_text():
    torch.manual_seed(0)
    model = EndsImmediately(GPTConfig.named("tiny")).eval()
    options = SamplingOptions(max_new_tokens=50, num_samples=2, seed=0)
    assert len(list(generate_token_ids(model, [1, 2], options))) == 1
    assert generate(model, "anything", max_new_tokens=50, num_samples=2, seed=0) == ["", ""]


def test_long_prompt_truncated_from_left_with_notice(model):
    notices = []
    ids = list(range(1000, 1100))  # 100 tokens > block_size 48
    kept = fit_prompt(ids, model.config.block_size, 16, notices.append)
    assert kept == ids[-32:] and "kept the last 32" in notices[0]
    assert fit_prompt([], 128, 16) == [50256]  # empty prompt: start a new document
    out = generate(model, "word " * 100, max_new_tokens=16, temperature=0, on_notice=notices.append)
    assert len(notices) == 2 and len(out[0]) > 0


def test_invalid_arguments_fail_at_the_call(model):
    with pytest.raises(Exception, match="temperature"):
        stream(model, "x", temperature=-1)
    with pytest.raises(Exception, match="one sample"):
        stream(model, "x", num_samples=2)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, model):
    return str(save_model(tmp_path_factory.mktemp("ckpt") / "tiny", model, {"step": 3}))


def test_cli_sample(checkpoint, capsys):
    argv = ["sample", "--model", checkpoint, "--prompt", "Hi", "-n", "2", "--max-new-tokens", "8", "--seed", "1"]
    assert main([*argv, "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert out.count("--- sample") == 2 and out.count("Hi") >= 2
    assert main(["sample", "--model", checkpoint, "--prompt", "Hi", "--stream", "--max-new-tokens", "5"]) == 0
    assert capsys.readouterr().out.startswith("Hi")


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--temperature", "11"], "temperature"),
        (["--temperature", "1e-300"], "temperature must be 0 (greedy) or at least 0.01"),
        (["--repetition-penalty", "1e-300"], "repetition_penalty"),
        (["--top-p", "0"], "top_p"),
        (["--max-new-tokens", "0"], "max_new_tokens"),
        (["-n", "2", "--stream"], "--stream"),
        (["--device", "cuda:7"] if not torch.cuda.is_available() else ["--seed", "-4"], "cuda|seed"),
    ],
)
def test_cli_bad_arguments_one_error_line(checkpoint, capsys, extra, message):
    assert main(["sample", "--model", checkpoint, "--prompt", "Hi", *extra]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ")
    assert any(word in err[0] for word in message.split("|"))


def test_cli_missing_model(capsys, tmp_path):
    assert main(["sample", "--model", str(tmp_path / "nope"), "--prompt", "Hi"]) == 1
    assert capsys.readouterr().err.startswith("error: ")
