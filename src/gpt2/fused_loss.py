"""Output layer + cross-entropy in chunks of rows, without materialising the (N, V) logits or their gradient.

The plain loss, ``F.cross_entropy(x @ W.T, y)``, writes N x V logits (N = B*T tokens, V = 50304), reads
them back for the softmax, then writes and reads an N x V gradient in the backward pass: for a small
model on a CPU that memory traffic (and, with glibc's default settings, page-faulting those buffers in
again at every step) costs more than the matmuls themselves. Here the forward pass takes ``chunk_rows``
rows at a time, computes their logits, loss and the loss's gradient with respect to ``x`` and ``W`` in
one go (as Liger-Kernel's fused linear cross-entropy does on GPUs), and keeps only those gradients; the
backward pass just scales them by the incoming gradient. Peak extra memory is one chunk_rows x V block.

The result matches the plain loss to float rounding (not bitwise: the sums run in another order), so it
is opt-in (``gpt2 train --fused-loss``); the default keeps build-nanogpt's numerics.
"""

from __future__ import annotations

import torch

IGNORE_INDEX = -1  # targets with this value are left out of the mean (gpt2.model re-exports it)
# Rows per chunk: 256 x 50304 fp32 logits = 51 MB, one buffer reused for every chunk. On the 2-core dev CPU
# 128-1,024 rows were within measurement noise of each other for the demo model (1,024 x 64) and 64 was
# slower: each chunk also reads and writes the whole V x C weight gradient, so tiny chunks pay that too often.
DEFAULT_CHUNK_ROWS = 256


class _FusedLinearCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, chunk_rows: int) -> torch.Tensor:
        n_rows = x.shape[0]
        # Under autocast, run the matmuls in its dtype explicitly (autocast itself is off in here: the in-place
        # fp32 accumulation below must not be re-cast).
        device_type = x.device.type
        if torch.is_autocast_enabled(device_type):
            dtype = torch.get_autocast_dtype(device_type)
            x_mm, w_mm = x.to(dtype), weight.to(dtype)
        else:
            x_mm, w_mm = x, weight.to(x.dtype)
        valid = targets != IGNORE_INDEX
        n_valid = int(valid.sum())
        need_grad = ctx.needs_input_grad[0] or ctx.needs_input_grad[1]
        # mean over the valid targets; an all-ignored batch gives NaN, as F.cross_entropy does
        scale = 1.0 / n_valid if n_valid else float("nan")
        loss_sum = torch.zeros((), dtype=torch.float32, device=x.device)
        grad_x = torch.empty_like(x_mm) if need_grad else None
        grad_w = None
        # One logits buffer for all chunks: a fresh 50 MB block per chunk would be page-faulted in every time
        # (glibc returns large freed blocks to the OS).
        buffer = torch.empty(min(chunk_rows, n_rows), weight.shape[0], dtype=x_mm.dtype, device=x.device)
        with torch.autocast(device_type, enabled=False):
            for start in range(0, n_rows, chunk_rows):
                rows = slice(start, min(start + chunk_rows, n_rows))
                x_c, y_c, ok = x_mm[rows], targets[rows], valid[rows]
                logits = torch.mm(x_c, w_mm.t(), out=buffer[: x_c.shape[0]])  # (n, V): the only large buffer
                safe_y = torch.where(ok, y_c, 0).unsqueeze(1)
                target_logit = logits.gather(1, safe_y).squeeze(1).float()
                # log-sum-exp in place: exp(logits - max) stays in the buffer, as the softmax's numerator
                row_max = logits.amax(dim=1, keepdim=True)
                exp = logits.sub_(row_max).exp_()
                sum_exp = exp.sum(dim=1, dtype=torch.float32)
                lse = row_max.squeeze(1).float() + sum_exp.log()
                loss_sum += torch.where(ok, lse - target_logit, 0.0).sum()
                if grad_x is None:  # no gradient wanted
                    continue
                # d(mean loss)/d(logits) = (softmax - onehot(target)) / n_valid on valid rows, 0 on ignored ones
                row_scale = ok.float() * scale
                grad_logits = exp.mul_((row_scale / sum_exp).unsqueeze(1).to(exp.dtype))
                grad_logits.scatter_add_(1, safe_y, -row_scale.unsqueeze(1).to(exp.dtype))
                torch.mm(grad_logits, w_mm, out=grad_x[rows])
                if grad_w is None:
                    grad_w = grad_logits.t().float() @ x_c.float()  # (V, C) fp32: written once, then accumulated
                else:
                    grad_w.addmm_(grad_logits.t().float(), x_c.float())
        if need_grad and grad_w is None:  # no rows at all
            grad_w = torch.zeros_like(weight, dtype=torch.float32)
        if grad_x is not None and grad_w is not None:
            grad_x, grad_w = grad_x.to(x.dtype), grad_w.to(weight.dtype)
        ctx.save_for_backward(grad_x, grad_w)
        return loss_sum * scale

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor):
        # Scale in place: forward made these tensors for this one backward pass (a second one would need
        # retain_graph and is not supported).
        grad_x, grad_w = ctx.saved_tensors
        gx = grad_x.mul_(grad_output.to(grad_x.dtype)) if ctx.needs_input_grad[0] else None
        gw = grad_w.mul_(grad_output.to(grad_w.dtype)) if ctx.needs_input_grad[1] else None
        return gx, gw, None, None


def fused_linear_cross_entropy(
    x: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, chunk_rows: int = DEFAULT_CHUNK_ROWS
) -> torch.Tensor:
    """Mean cross-entropy of ``x @ weight.T`` against ``targets``, computed ``chunk_rows`` rows at a time.

    ``x`` (N, C) hidden states, ``weight`` (V, C) output matrix, ``targets`` (N,) token ids, -1 = ignored.
    Returns a scalar fp32 loss (nats/token) whose gradient flows to ``x`` and ``weight``; equal to
    ``F.cross_entropy((x @ weight.T).float(), targets, ignore_index=-1)`` up to float rounding.
    """
    if chunk_rows < 1:
        raise ValueError(f"chunk_rows must be >= 1, got {chunk_rows}")
    return _FusedLinearCrossEntropy.apply(x, weight, targets, chunk_rows)
