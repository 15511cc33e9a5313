import math

import pytest

from gpt2.train.schedule import learning_rate


def test_seed_schedule_values():
    lr = lambda step: learning_rate(step, 6e-4, warmup_steps=715, total_steps=19073, min_lr_ratio=0.1)  # noqa: E731
    assert lr(0) == pytest.approx(6e-4 / 715)  # the first step already learns
    assert lr(357) == pytest.approx(6e-4 * 358 / 715)
    assert lr(714) == pytest.approx(6e-4)  # warmup ends at the peak
    assert lr(715) == pytest.approx(6e-4)
    middle = 715 + (19073 - 715) // 2
    assert lr(middle) == pytest.approx(6e-5 + 0.5 * (1 + math.cos(math.pi * (middle - 715) / 18358)) * 5.4e-4)
    assert lr(middle) == pytest.approx(3.3e-4, rel=1e-3)  # half-way down the cosine: (max + min) / 2
    assert lr(19073) == pytest.approx(6e-5) and lr(30000) == pytest.approx(6e-5)  # the floor
    values = [lr(s) for s in range(715, 19073, 97)]
    assert all(a >= b for a, b in zip(values, values[1:], strict=False))  # monotone decay


def test_no_warmup_and_constant_schedule():
    assert learning_rate(0, 1e-3, 0, 10) == pytest.approx(1e-3)
    assert [learning_rate(s, 1e-3, 2, 10, min_lr_ratio=1.0) for s in (2, 5, 9, 20)] == pytest.approx([1e-3] * 4)
