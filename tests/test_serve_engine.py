"""The batched decoding engine: requests decoded together give the same tokens as decoded alone (greedy, and
seeded sampling), share decode steps, leave the batch independently, and slide at the context window."""

import threading
from queue import Queue

import pytest
import torch

from gpt2 import GPT, GPTConfig
from gpt2.generate import generate_token_ids
from gpt2.generate.decode import Batch, Request
from gpt2.generate.sampling import SamplingOptions
from gpt2.serve.engine import Engine, Finished, Step

# Prompt lengths 1..90 tokens; 90 is cut to 64 for 80 new tokens, and 64 + 80 > 128 makes that row slide.
PROMPTS = [[5], list(range(10, 40)), [7, 8], list(range(100, 190)), list(range(300, 317))]


@pytest.fixture(scope="module")
def model() -> GPT:
    torch.manual_seed(0)
    return GPT(GPTConfig.named("tiny")).eval()


@pytest.fixture()
def engine(model):
    engine = Engine(model)
    yield engine
    engine.close()


def _collect(engine: Engine, prompts, options_list) -> list[tuple[list[list[int]], Finished]]:
    """Submit every request at once (so they share steps), then read each one's tokens and its end."""
    queues = [Queue() for _ in prompts]
    for prompt, options, queue in zip(prompts, options_list, queues, strict=True):
        engine.submit(prompt, options, queue.put, on_notice=lambda message: None)
    results = []
    for queue in queues:
        steps = []
        while not isinstance(event := queue.get(timeout=120), Finished):
            steps.append(event.token_ids)
        results.append((steps, event))
    return results


def _alone(model, prompt, options) -> list[list[int]]:
    return list(generate_token_ids(model, prompt, options, stop_at_eot=False, on_notice=lambda m: None))


def test_batched_greedy_equals_unbatched_for_mixed_prompt_lengths(model, engine):
    lengths = [80, 12, 40, 80, 25]  # requests end at different steps; the others carry on
    options = [SamplingOptions(max_new_tokens=n, temperature=0.0) for n in lengths]
    batched = _collect(engine, PROMPTS, options)
    for prompt, opts, (steps, end) in zip(PROMPTS, options, batched, strict=True):
        assert steps == _alone(model, prompt, opts)  # also equal to gpt2.generate's decode loop
        assert end.reason == "length" and len(steps) == opts.max_new_tokens
    # they really were decoded together: far fewer forward steps than one request after the other
    assert engine.steps < sum(lengths) - 100
    # and each alone through the engine (no neighbours) gives the same tokens again
    for prompt, opts, (steps, _) in zip(PROMPTS, options, batched, strict=True):
        assert [s.token_ids for s in engine.stream(prompt, opts, on_notice=lambda m: None)] == steps


def test_seeded_sampling_is_the_same_whatever_else_is_in_the_batch(model, engine):
    sampled = SamplingOptions(max_new_tokens=30, temperature=1.0, top_k=50, top_p=0.9, num_samples=3, seed=7)
    neighbours = [SamplingOptions(max_new_tokens=n, temperature=0.8, seed=None) for n in (5, 50, 20)]
    alone = _collect(engine, [PROMPTS[1]], [sampled])[0][0]
    crowded = _collect(
        engine, [PROMPTS[0], PROMPTS[1], PROMPTS[2], PROMPTS[4]], [neighbours[0], sampled, *neighbours[1:]]
    )
    assert crowded[1][0] == alone
    assert alone == _alone(model, PROMPTS[1], sampled)  # the same draws as `gpt2 sample --seed 7 -n 3`
    assert len({tuple(row) for row in zip(*alone, strict=True)}) == 3  # three different samples


def test_a_finished_request_leaves_while_a_long_one_continues(engine):
    order: list[str] = []
    done = threading.Event()

    def sink(name):
        def put(event):
            if isinstance(event, Finished):
                order.append(name)
                if len(order) == 2:
                    done.set()

        return put

    engine.submit(PROMPTS[1], SamplingOptions(max_new_tokens=100, temperature=0.0), sink("long"))
    engine.submit(PROMPTS[2], SamplingOptions(max_new_tokens=3, temperature=0.0), sink("short"))
    assert done.wait(120)
    assert order == ["short", "long"]


def test_cancel_and_logprobs(engine):
    steps = engine.stream(PROMPTS[1], SamplingOptions(max_new_tokens=100, temperature=0.0), logprobs=3)
    first = next(steps)
    assert isinstance(first, Step) and len(first.top[0]) == 3
    token, best = first.top[0][0]
    assert token == first.token_ids[0] and best == pytest.approx(first.logprobs[0]) and best < 0  # greedy = argmax
    steps.close()  # cancels: the engine drops the rows and is free for the next request
    assert len(list(engine.stream(PROMPTS[0], SamplingOptions(max_new_tokens=4, temperature=0.0)))) == 4


class BreaksAtPosition7(GPT):
    """A decode step that feeds a row at position 7 fails: the forward pass raises after it has written the
    cache ("raise"), or that row's logits are NaN ("nan", what a 1e-38 temperature used to cause)."""

    mode = "raise"

    def forward(self, idx, targets=None, kv_cache=None, logits_at=None, fused_loss=False):
        at = None if kv_cache is None else kv_cache.lengths.clone()
        logits, loss = super().forward(idx, targets, kv_cache, logits_at)
        if at is not None and idx.shape[1] == 1 and bool((at == 7).any()):
            if self.mode == "raise":
                raise RuntimeError("a row at position 7 broke the step")
            logits[at == 7] = float("nan")
        return logits, loss


@pytest.mark.parametrize("mode", ["raise", "nan"])
def test_a_failing_row_ends_its_own_request_and_the_other_completes(mode):
    torch.manual_seed(0)
    model = BreaksAtPosition7(GPTConfig.named("tiny")).eval()
    model.mode = mode
    good, bad = list(range(10, 30)), list(range(40, 47))  # 20 tokens: never at position 7; 7 tokens: at once
    events: dict[str, list] = {"good": [], "bad": []}
    batch = Batch(model)
    greedy = SamplingOptions(max_new_tokens=30, temperature=0.0)
    batch.join(Request(good, greedy, events["good"].append, stop_ids=()))
    batch.join(Request(bad, SamplingOptions(max_new_tokens=30, seed=1, num_samples=2), events["bad"].append))
    while batch.requests:
        batch.step()
    *bad_steps, bad_end = events["bad"]
    assert len(bad_steps) == 1 and bad_end.reason == "error"  # its first token came from the prefill
    assert ("broke the step" if mode == "raise" else "NaN/inf") in bad_end.message
    *good_steps, good_end = events["good"]
    assert good_end.reason == "length"
    assert [step.token_ids for step in good_steps] == _alone(model, good, greedy)  # as if it had been alone
