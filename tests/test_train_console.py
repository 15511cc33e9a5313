from gpt2.train.console import format_eval_line, format_step_line


def test_console_line():
    row = {"step": 7, "loss": 3.25, "lr": 6e-4, "grad_norm": 0.5, "dt_ms": 120.0, "tok_per_s": 4.4e6, "mfu": 0.5}
    assert format_step_line(row, 100) == (
        "step   7/100 | loss 3.250000 | lr 6.0000e-04 | norm 0.5000 | dt 120.0 ms | 4,400,000 tok/s | mfu 50.0%"
    )
    skipped = {**row, "loss": None, "grad_norm": None, "mfu": None}
    assert format_step_line(skipped, 100) == (
        "step   7/100 | loss   skipped  | lr 6.0000e-04 | norm - | dt 120.0 ms | 4,400,000 tok/s"
    )


def test_eval_line():
    row = {"step": 5, "val_loss": 3.5, "hellaswag_acc_norm": 0.25, "hellaswag_n": 40}
    assert format_eval_line(row) == "eval step 5 | val_loss 3.5000 | hellaswag_acc_norm 0.2500 | hellaswag_n 40"
    assert format_eval_line({"step": 5, "val_loss": 3.5, "val_tokens": 16384}) == (
        "eval step 5 | val_loss 3.5000 | val_tokens 16384"  # how many tokens the figure covers (issue 23)
    )
