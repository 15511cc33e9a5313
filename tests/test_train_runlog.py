import json

import pytest

from gpt2 import GPT2Error
from gpt2.train.runlog import check_run_dir, format_step_line, read_metrics, truncate_metrics


def test_truncate_drops_rows_after_the_checkpoint_and_a_torn_line(tmp_path):
    rows = [{"type": "train", "step": s, "loss": 1.0 / s} for s in range(1, 6)]
    text = "".join(json.dumps(r) + "\n" for r in rows) + '{"type": "train", "st'  # killed mid-write
    (tmp_path / "metrics.jsonl").write_text(text)
    assert len(read_metrics(tmp_path / "metrics.jsonl")) == 5
    assert truncate_metrics(tmp_path, 3) == 2
    assert read_metrics(tmp_path / "metrics.jsonl") == rows[:3]


def test_run_dir_checks(tmp_path):
    check_run_dir(tmp_path / "new" / "run", checkpoint_bytes=1000, keep_last=3)
    assert (tmp_path / "new" / "run").is_dir() and list((tmp_path / "new" / "run").iterdir()) == []
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(GPT2Error, match="cannot create or write the run directory"):
        check_run_dir(blocker / "run", checkpoint_bytes=1000, keep_last=3)
    with pytest.raises(GPT2Error, match=r"GB free, but 3 kept checkpoint\(s\) plus the one being written need"):
        check_run_dir(tmp_path, checkpoint_bytes=10**18, keep_last=3)  # a disk that is (effectively) full


def test_console_line():
    row = {"step": 7, "loss": 3.25, "lr": 6e-4, "grad_norm": 0.5, "dt_ms": 120.0, "tok_per_s": 4.4e6, "mfu": 0.5}
    assert format_step_line(row, 100) == (
        "step   7/100 | loss 3.250000 | lr 6.0000e-04 | norm 0.5000 | dt 120.0 ms | 4,400,000 tok/s | mfu 50.0%"
    )
