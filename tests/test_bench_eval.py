"""``python -m tools.bench eval``: the one-item-at-a-time reference must choose the same endings as our scorer."""

import pytest
import torch

from evaluate_helpers import ITEMS, tiny_model
from gpt2.evaluate.hellaswag import HellaSwagItem, hellaswag_accuracy
from tools.bench.eval import _synthetic_items, bench_items, harness_case, one_item_at_a_time_accuracy


def test_reference_and_ours_agree_on_acc_norm_token():
    model = tiny_model(seed=11)
    # every context once with each label: whatever the model picks, exactly 1 in 4 is right
    items = [HellaSwagItem(r["ctx"], tuple(r["endings"]), label) for r in ITEMS for label in range(4)]
    assert hellaswag_accuracy(model, items, batch_size=8)["acc_norm_token"] == 0.25
    assert one_item_at_a_time_accuracy(model, items, torch.device("cpu"), None) == 0.25
    synthetic = _synthetic_items(3)
    ours = hellaswag_accuracy(model, synthetic, batch_size=4)["acc_norm_token"]
    assert one_item_at_a_time_accuracy(model, synthetic, torch.device("cpu"), None) == ours


def test_bench_items_are_hellaswag_shaped():
    items, source = bench_items(3)
    assert len(items) == 3 and source
    assert all(len(item.endings) == 4 and 0 <= item.label < 4 for item in items)
    synthetic = _synthetic_items(5)
    assert synthetic == _synthetic_items(5)  # deterministic


@pytest.mark.slow  # two whole lm-eval runs per side (warmup + 1), ~10 s
def test_harness_row_quick_mode(one_torch_thread):
    """Both lm-eval backends run the same local task on the same weights and pick the same endings."""
    pytest.importorskip("lm_eval", reason="lm-evaluation-harness is not installed")
    result = harness_case("tiny", 4, 2, torch.device("cpu"), repeat=1)
    assert result is not None and result.unit == "items/s"
    assert result.ours > 0 and result.reference > 0 and result.ratio == result.ours / result.reference
    assert result.extra["same_answers"] is True and result.extra["items"] == 4
