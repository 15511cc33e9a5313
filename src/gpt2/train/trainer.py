"""The training loop: gradient accumulation, DDP/FSDP, bf16 autocast, clipping, checkpoints, fault tolerance.

One optimizer step ("step") consumes ``batch_tokens`` tokens: ``grad_accum`` micro-batches of
``micro_batch x seq_len`` tokens on each of ``world_size`` ranks. Steps are counted from 1;
``step_000100`` is the state after 100 updates, and a resumed run continues with step 101,
reading exactly the tokens, using exactly the learning rate and optimizer moments the
uninterrupted run would have (bitwise on CPU).
"""

from __future__ import annotations

import contextlib
import math
import signal
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from gpt2.checkpoint import latest_checkpoint
from gpt2.errors import GPT2Error
from gpt2.fileio import write_json_atomic
from gpt2.model import GPT, optimizer_param_groups
from gpt2.runtime.device import autocast, resolve_amp_dtype
from gpt2.runtime.distributed import DistContext, all_reduce_mean, any_rank
from gpt2.runtime.parallel import gradient_sync, wrap_model
from gpt2.train.config import TrainConfig
from gpt2.train.hooks import InLoopEvaluation
from gpt2.train.mfu import device_peak_flops, model_flops_utilization
from gpt2.train.runlog import (
    RUN_FILE,
    MetricsLog,
    check_run_dir,
    format_eval_line,
    format_step_line,
    truncate_metrics,
)
from gpt2.train.schedule import learning_rate
from gpt2.train.state import (
    check_resumable,
    list_checkpoints,
    load_training_checkpoint,
    remove_stale_temporaries,
    save_training_checkpoint,
)


class StopRequest:
    """SIGTERM / SIGINT set a flag; the loop finishes its step, saves a checkpoint and exits 0.

    A second Ctrl-C stops at once (KeyboardInterrupt) for when the user really means it.
    """

    def __init__(self) -> None:
        self.requested = False
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested = True
        print(
            f"\n{signal.Signals(signum).name} received: finishing this step, saving a checkpoint, then exiting",
            file=sys.stderr,
            flush=True,
        )

    def __enter__(self) -> StopRequest:
        for signum in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(ValueError):  # not the main thread: no handlers, no graceful stop
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc: Any) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)


class Trainer:
    """Sets a run up (validating everything before writing anything) and runs it."""

    def __init__(self, config: TrainConfig, ctx: DistContext, model: GPT | None = None):
        from gpt2.data import TokenShardLoader

        self.cfg = cfg = config
        self.ctx = ctx
        self.device = ctx.device
        cfg.validate(ctx.world_size)
        self.grad_accum = cfg.grad_accum_steps(ctx.world_size)
        self.run_dir = Path(cfg.out)
        # --- read-only checks first: a bad invocation must not touch an existing run
        self.loader = TokenShardLoader(
            cfg.data, "train", cfg.micro_batch, cfg.seq_len, ctx.rank, ctx.world_size, cfg.seed, cfg.shuffle
        )
        self.resume_from = self._find_resume_checkpoint()
        if self.resume_from is not None:
            # refuses another model config, and a dataset/seed the data position does not belong to
            self.loader.load_state_dict(check_resumable(self.resume_from, cfg.model)["loader"])
        self.amp_dtype = resolve_amp_dtype(cfg.dtype, self.device)
        self.compile = cfg.compile if cfg.compile is not None else self.device.type == "cuda"
        if self.compile and self.device.type == "mps":
            raise GPT2Error("--compile is not supported on MPS; drop it or use --no-compile")
        # --- build the model (same init on every rank) and the optimizer
        torch.manual_seed(cfg.seed)
        if self.device.type == "cuda":
            torch.cuda.manual_seed(cfg.seed)
            torch.set_float32_matmul_precision("high")  # TF32 for any fp32 matmul left outside autocast
        self.model = (model or GPT(cfg.model)).to(self.device)
        self.flops_per_token = self.model.flops_per_token(cfg.seq_len)
        self.num_parameters = self.model.num_parameters()
        self.checkpoint_bytes = 4 * 3 * self.num_parameters  # fp32 weights + two AdamW moments
        if ctx.is_main:
            check_run_dir(self.run_dir, self.checkpoint_bytes, cfg.keep_last)
        self.runner = wrap_model(self.model, ctx, cfg.fsdp, self.compile)
        self.optimizer = torch.optim.AdamW(
            optimizer_param_groups(self.model, cfg.weight_decay),
            lr=cfg.lr,
            betas=(cfg.beta1, cfg.beta2),
            eps=1e-8,
            # one fused kernel for the whole update: on CUDA (as the seed) and on CPU, where it is ~7x faster than
            # the default per-tensor loop (30M-parameter model: 110 ms vs 750 ms per step)
            fused=self.device.type in ("cuda", "cpu"),
        )
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp_dtype == torch.float16)
        self.peak_flops = device_peak_flops(self.device, cfg.peak_flops)
        self.evaluation = InLoopEvaluation(cfg, self.device, self.amp_dtype, self.warn)
        self.step = 0
        self.elapsed_before = 0.0  # seconds trained before this process (from the checkpoint)
        self.start = time.time()
        self.last_eval: dict[str, Any] = {}
        self.metrics: MetricsLog | None = None

    # ------------------------------------------------------------ setup helpers

    def log(self, message: str) -> None:
        if self.ctx.is_main:
            from tqdm import tqdm

            tqdm.write(message, file=sys.stdout)

    def warn(self, message: str) -> None:
        if self.ctx.is_main:
            print(f"warning: {message}", file=sys.stderr, flush=True)

    def _find_resume_checkpoint(self) -> Path | None:
        resume = self.cfg.resume
        latest = latest_checkpoint(self.run_dir) if self.run_dir.is_dir() else None
        if latest is None and list_checkpoints(self.run_dir):
            raise GPT2Error(f"{self.run_dir} has checkpoint directories but no 'latest' pointer; fix or move it")
        if resume is True and latest is None:
            raise GPT2Error(f"--resume: {self.run_dir} has no checkpoint to resume from")
        if resume is False and latest is not None:
            raise GPT2Error(
                f"--no-resume: {self.run_dir} already holds checkpoints (latest {latest.name}); "
                "choose a new --out so they are not overwritten"
            )
        return latest

    def _restore(self) -> None:
        assert self.resume_from is not None
        state = load_training_checkpoint(self.resume_from, self.model, self.optimizer, self.ctx, self.cfg.fsdp)
        if "scaler" in state and self.scaler.is_enabled():
            self.scaler.load_state_dict(state["scaler"])
        self.step = state["step"]
        self.last_eval = dict(state.get("last_eval", {}))
        self.elapsed_before = float(state.get("elapsed", 0.0))
        if state.get("world_size") != self.ctx.world_size or state.get("batch_tokens") != self.cfg.batch_tokens:
            self.warn(
                "world size or batch differs from the saved run: training continues at the same token, "
                "but losses will not match an uninterrupted run exactly"
            )
        self.log(f"resumed from {self.resume_from} (step {self.step}, {self.step * self.cfg.batch_tokens:,} tokens)")

    def _write_run_json(self) -> None:
        path = self.run_dir / RUN_FILE
        now = datetime.now(timezone.utc).isoformat(timespec="seconds")
        info = {
            "config": self.cfg.to_dict(),
            "model": self.cfg.model.to_dict(),
            "parameters": self.num_parameters,
            "world_size": self.ctx.world_size,
            "grad_accum": self.grad_accum,
            "device": str(self.device),
            "device_name": torch.cuda.get_device_name(self.device) if self.device.type == "cuda" else self.device.type,
            "dtype": str(self.amp_dtype or torch.float32).removeprefix("torch."),
            "compile": self.compile,
            "data": str(self.cfg.data),
            "flops_per_token": self.flops_per_token,
            "peak_flops": self.peak_flops,
            "torch": torch.__version__,
            "start_time": now,
            "resumes": [],
        }
        if self.resume_from is not None and path.is_file():
            import json

            with contextlib.suppress(json.JSONDecodeError):
                old = json.loads(path.read_text())
                info["start_time"] = old.get("start_time", now)
                resume = {"step": self.step, "time": now, "world_size": self.ctx.world_size}
                info["resumes"] = [*old.get("resumes", []), resume]
        write_json_atomic(path, info)

    # ------------------------------------------------------------ one step

    def train_step(self) -> tuple[torch.Tensor, torch.Tensor, bool]:
        """Forward/backward over ``grad_accum`` micro-batches, then clip and update (unless non-finite).

        Returns (mean loss over ranks and micro-batches, grad norm before clipping, whether it updated).
        """
        cfg = self.cfg
        lr = learning_rate(self.step, cfg.lr, cfg.warmup_steps, cfg.steps, cfg.min_lr_ratio)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.optimizer.zero_grad(set_to_none=True)
        loss_sum = torch.zeros((), device=self.device)
        for micro in range(self.grad_accum):
            x, y = self.loader.next_batch()
            if self.device.type == "cuda":  # page-locked memory lets the copy overlap with compute
                x, y = x.pin_memory(), y.pin_memory()
            x, y = x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
            # Only the last micro-step all-reduces gradients; the others just accumulate locally.
            with gradient_sync(self.runner, self.model, micro == self.grad_accum - 1):
                with autocast(self.device, self.amp_dtype):
                    # Index the tuple instead of unpacking it: a name bound to the logits would keep
                    # B*T*V activations (6.6 GB at 124M, B=64, bf16) alive through the backward pass.
                    loss = self.runner(x, y, fused_loss=cfg.fused_loss)[1]
                # Each micro-batch's mean loss / grad_accum: the summed gradient is that of the mean over all.
                loss = loss / self.grad_accum
                loss_sum += loss.detach()
                self.scaler.scale(loss).backward()
        loss_mean = all_reduce_mean(loss_sum, self.ctx)
        self.scaler.unscale_(self.optimizer)
        max_norm = cfg.grad_clip if cfg.grad_clip > 0 else math.inf
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), max_norm)
        if hasattr(grad_norm, "full_tensor"):  # FSDP: a DTensor
            grad_norm = grad_norm.full_tensor()
        finite = bool(torch.isfinite(loss_mean).item() and torch.isfinite(grad_norm).item())
        if finite:
            self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        return loss_mean, grad_norm, finite

    # ------------------------------------------------------------ the loop

    def run(self) -> dict[str, Any]:
        """Train until ``steps`` (or a stop signal); returns a summary (final step, loss, stop reason)."""
        cfg, ctx = self.cfg, self.ctx
        if self.resume_from is not None:
            self._restore()
        if ctx.is_main:
            remove_stale_temporaries(self.run_dir)
            truncate_metrics(self.run_dir, self.step)
            self._write_run_json()
            self.metrics = MetricsLog(self.run_dir)
        self.log(
            f"training {cfg.size or 'custom'} ({self.num_parameters:,} parameters) on {self.device} "
            f"x{ctx.world_size}, {str(self.amp_dtype or 'fp32').removeprefix('torch.')}, "
            f"{cfg.batch_tokens:,} tokens/step = {cfg.micro_batch} x {cfg.seq_len} x {ctx.world_size} ranks "
            f"x {self.grad_accum} micro-steps; steps {self.step + 1}..{cfg.steps} -> {self.run_dir}"
        )
        from tqdm import tqdm

        bar = tqdm(total=cfg.steps, initial=self.step, disable=None if ctx.is_main else True, unit="step")
        # "time" in metrics counts training time over all sessions of the run (continues after a resume)
        self.start = time.time() - self.elapsed_before
        bad_in_row, last_loss, stopped = 0, None, False
        try:
            with StopRequest() as stop:
                while self.step < cfg.steps:
                    t0 = time.perf_counter()
                    loss, grad_norm, finite = self.train_step()
                    if self.device.type == "cuda":
                        torch.cuda.synchronize(self.device)
                    dt = time.perf_counter() - t0
                    self.step += 1
                    bad_in_row = 0 if finite else bad_in_row + 1
                    last_loss = loss.item() if finite else last_loss
                    self._log_train_row(loss, grad_norm, finite, dt)
                    bar.update(1)
                    if not finite:
                        self._on_non_finite(loss, bad_in_row)
                    last = self.step == cfg.steps
                    self._evaluate(last)
                    stopped = any_rank(stop.requested, ctx)
                    if stopped or last or (cfg.save_every > 0 and self.step % cfg.save_every == 0):
                        self.save(last_loss)
                    if stopped:
                        break
        finally:
            bar.close()
            if self.metrics is not None:
                self.metrics.close()
        reason = "signal" if stopped else "done"
        self.log(f"{'stopped by signal' if stopped else 'finished'} at step {self.step}; checkpoints in {self.run_dir}")
        return {"step": self.step, "loss": last_loss, "stopped": reason, **self.last_eval}

    def _log_train_row(self, loss: torch.Tensor, norm: torch.Tensor, finite: bool, dt: float) -> None:
        cfg = self.cfg
        tok_per_s = cfg.batch_tokens / dt
        row = {
            "type": "train",
            "step": self.step,
            "loss": loss.item() if finite else None,
            "lr": self.optimizer.param_groups[0]["lr"],
            "grad_norm": norm.item() if math.isfinite(norm.item()) else None,
            "tokens": self.step * cfg.batch_tokens,
            "tok_per_s": tok_per_s,
            "mfu": model_flops_utilization(self.flops_per_token, tok_per_s, self.peak_flops, self.ctx.world_size),
            "dt_ms": 1000 * dt,
            "time": time.time() - self.start,
        }
        if not finite:
            row["skipped"] = True
        if self.metrics is not None:
            self.metrics.write(row)
        if self.step % max(1, cfg.log_every) == 0 or self.step == cfg.steps or not finite:
            self.log(format_step_line(row, cfg.steps))

    def _on_non_finite(self, loss: torch.Tensor, bad_in_row: int) -> None:
        limit = self.cfg.max_bad_steps
        self.warn(f"step {self.step}: loss is {loss.item()} -> update skipped ({bad_in_row}/{limit} in a row)")
        if bad_in_row >= limit:
            latest = latest_checkpoint(self.run_dir) if self.run_dir.is_dir() else None
            raise GPT2Error(
                f"training diverged: non-finite loss/gradients for {bad_in_row} steps in a row (up to step "
                f"{self.step}); last good checkpoint: {latest or 'none'}. Lower --lr, raise --warmup-steps, "
                "or check the data"
            )

    def _evaluate(self, last: bool) -> None:
        metrics, samples = self.evaluation.run(self.model, self.step, last)
        if not (metrics or samples):
            return
        base = {"step": self.step, "tokens": self.step * self.cfg.batch_tokens}
        if metrics:
            self.last_eval.update(metrics)
            row = {"type": "eval", **base, **metrics}
            if self.metrics is not None:
                self.metrics.write(row)
            self.log(format_eval_line(row))
        for sample in samples:
            if self.metrics is not None:
                self.metrics.write({"type": "sample", **base, **sample})
            self.log(f"sample: {sample['prompt']}{sample['text']!r}")

    def save(self, last_loss: float | None) -> Path:
        cfg = self.cfg
        meta = {
            "step": self.step,
            "tokens": self.step * cfg.batch_tokens,
            "train_loss": last_loss,
            "size": cfg.size,
            "data": str(cfg.data),
            **{k: v for k, v in self.last_eval.items() if k in ("val_loss", "hellaswag_acc_norm", "hellaswag_acc")},
        }
        trainer_state = {
            "step": self.step,
            "tokens": self.step * cfg.batch_tokens,
            "loader": self.loader.state_dict(),
            "world_size": self.ctx.world_size,
            "batch_tokens": cfg.batch_tokens,
            "last_eval": self.last_eval,
            "elapsed": time.time() - self.start,
            "config": cfg.to_dict(),
        }
        if self.scaler.is_enabled():
            trainer_state["scaler"] = self.scaler.state_dict()
        try:
            path = save_training_checkpoint(
                self.run_dir,
                self.step,
                self.model,
                self.optimizer,
                self.ctx,
                cfg.fsdp,
                trainer_state,
                meta,
                keep_last=cfg.keep_last,
            )
        except OSError as exc:
            raise GPT2Error(
                f"saving the checkpoint of step {self.step} in {self.run_dir} failed ({exc.strerror or exc}); "
                "the previous checkpoint is intact"
            ) from None
        self.log(f"saved {path}")
        return path


def train(config: TrainConfig, model: GPT | None = None) -> dict[str, Any]:
    """Run (or resume) training described by ``config`` in this process; under torchrun, on every rank.

    ``model`` optionally supplies the initial model (it must have ``config.model``'s shape).
    """
    from gpt2.runtime.distributed import setup_distributed, teardown_distributed

    ctx = setup_distributed(config.device)
    try:
        return Trainer(config, ctx, model).run()
    finally:
        teardown_distributed()
