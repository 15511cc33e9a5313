"""The chunked output layer + cross-entropy (gpt2.fused_loss) against the plain loss: values, gradients, memory."""

from __future__ import annotations

import math

import pytest
import torch
from torch.nn import functional as F

from gpt2 import GPT, GPTConfig
from gpt2.fused_loss import IGNORE_INDEX, fused_linear_cross_entropy
from gpt2.train.cli import options_from_args
from gpt2.train.config import TrainConfig
from tools.bench.memory import peak_memory_bytes


def plain_loss(x: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy((x @ weight.t()).float(), targets, ignore_index=IGNORE_INDEX)


def loss_and_grads(fn, x: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, scale: float = 1.0):
    x, weight = x.detach().clone().requires_grad_(), weight.detach().clone().requires_grad_()
    loss = fn(x, weight, targets)
    (loss * scale).backward()  # a scaled upstream gradient, as gradient accumulation gives (loss / grad_accum)
    return loss.detach(), x.grad, weight.grad


@pytest.fixture(scope="module")
def problem():
    """N=300 rows (not a multiple of the chunk sizes below), C=16, V=1000, with some ignored targets."""
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(300, 16, generator=generator)
    weight = torch.randn(1000, 16, generator=generator) * 0.5
    targets = torch.randint(0, 1000, (300,), generator=generator)
    targets[::7] = IGNORE_INDEX
    return x, weight, targets


@pytest.mark.parametrize("chunk_rows", [1, 64, 256, 300, 1024])
def test_matches_plain_loss_and_gradients(problem, chunk_rows):
    x, weight, targets = problem
    want = loss_and_grads(plain_loss, x, weight, targets, scale=0.25)
    got = loss_and_grads(lambda a, b, t: fused_linear_cross_entropy(a, b, t, chunk_rows), x, weight, targets, 0.25)
    assert got[0].dtype == torch.float32 and got[0].shape == ()
    assert math.log(1000) < got[0].item() < 20  # a real loss, not a degenerate value
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-6)


def test_without_grad_it_is_the_plain_loss_and_all_ignored_is_nan(problem):
    x, weight, targets = problem
    with torch.no_grad():
        torch.testing.assert_close(fused_linear_cross_entropy(x, weight, targets, 128), plain_loss(x, weight, targets))
        ignored = torch.full_like(targets, IGNORE_INDEX)
        assert math.isnan(fused_linear_cross_entropy(x, weight, ignored).item())
        assert math.isnan(plain_loss(x, weight, ignored).item())


def test_bf16_autocast_stays_close(problem):
    x, weight, targets = problem
    want = loss_and_grads(plain_loss, x, weight, targets)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = loss_and_grads(fused_linear_cross_entropy, x, weight, targets)
    assert got[1].dtype == x.dtype and got[2].dtype == weight.dtype  # gradients come back in the inputs' dtype
    torch.testing.assert_close(got[0], want[0], rtol=2e-2, atol=2e-2)
    torch.testing.assert_close(got[2], want[2], rtol=5e-2, atol=5e-3)


def test_never_holds_the_full_logits():
    # N x V fp32 logits = 2048 x 4096 x 4 = 32 MiB; the fused loss holds one 128-row chunk (2 MiB) at a time.
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(2048, 8, generator=generator, requires_grad=True)
    weight = torch.randn(4096, 8, generator=generator, requires_grad=True)
    targets = torch.randint(0, 4096, (2048,), generator=generator)
    logits_bytes = 2048 * 4096 * 4
    plain = peak_memory_bytes(lambda: plain_loss(x, weight, targets).backward(), "cpu")
    fused = peak_memory_bytes(lambda: fused_linear_cross_entropy(x, weight, targets, 128).backward(), "cpu")
    assert plain >= logits_bytes
    assert fused < logits_bytes / 4


def test_gpt_forward_fused_loss_matches_plain():
    torch.manual_seed(0)
    model = GPT(GPTConfig(block_size=16, n_layer=1, n_head=2, n_embd=16))
    idx = torch.randint(0, 50257, (2, 16))
    targets = torch.randint(0, 50257, (2, 16))
    losses, grads = [], []
    for fused in (False, True):
        model.zero_grad(set_to_none=True)
        logits, loss = model(idx, targets, fused_loss=fused)
        assert (logits is None) == fused  # the fused path never builds the logits
        loss.backward()
        losses.append(loss.detach())
        grads.append([p.grad.clone() for p in model.parameters()])
    torch.testing.assert_close(losses[1], losses[0], rtol=1e-5, atol=1e-6)
    for fused_grad, plain_grad in zip(grads[1], grads[0], strict=True):
        torch.testing.assert_close(fused_grad, plain_grad, rtol=1e-4, atol=1e-6)


def test_train_option_defaults_off_and_the_flag_turns_it_on():
    from gpt2.cli import build_parser

    assert TrainConfig().fused_loss is False  # the seed recipe keeps the plain loss, bit for bit
    args = build_parser("train").parse_args(["train", "--fused-loss"])
    assert options_from_args(args)["fused_loss"] is True
