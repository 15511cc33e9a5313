"""The training loop: gradient accumulation, DDP/FSDP, bf16 autocast, clipping, checkpoints, fault tolerance.

One optimizer step ("step") consumes ``batch_tokens`` tokens: ``grad_accum`` micro-batches of
``micro_batch x seq_len`` tokens on each of ``world_size`` ranks. Steps are counted from 1;
``step_000100`` is the state after 100 updates, and a resumed run continues with step 101,
reading exactly the tokens, using exactly the learning rate and optimizer moments the
uninterrupted run would have (bitwise on CPU).
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import torch

from gpt2.errors import GPT2Error
from gpt2.model import GPT
from gpt2.runtime.device import autocast, resolve_amp_dtype
from gpt2.runtime.distributed import DistContext, all_reduce_mean, any_rank, barrier
from gpt2.runtime.parallel import gradient_sync, wrap_model
from gpt2.store.checkpointer import Checkpointer, ModelState, RNGState, Stateful
from gpt2.store.rundir import (
    MetricsLog,
    RunLock,
    check_run_dir,
    find_resume_checkpoint,
    latest_checkpoint,
    remove_stale_temporaries,
    truncate_metrics,
    write_run_info,
)
from gpt2.train.config import TrainConfig
from gpt2.train.console import RunConsole
from gpt2.train.distill import Distiller
from gpt2.train.hooks import InLoopEvaluation
from gpt2.train.init import InitSource, initial_model
from gpt2.train.mfu import device_peak_flops, model_flops_utilization
from gpt2.train.optim import build_optimizers, check_resume_optimizer, muon_class, newton_schulz_flops
from gpt2.train.recipes import resolve_micro_batch
from gpt2.train.signals import MicroStepStop, StopRequest
from gpt2.train.state import TrainState, check_resumable
from gpt2.train.tracking import Tracking


class Trainer:
    """Sets a run up (validating everything before writing anything) and runs it."""

    def __init__(self, config: TrainConfig, ctx: DistContext, model: GPT | None = None, init: InitSource | None = None):
        from gpt2.data import TokenShardLoader
        from gpt2.data.mixture import MixtureLoader, parse_mix

        self.cfg = cfg = resolve_micro_batch(config, ctx.device.type, ctx.world_size)  # --micro-batch auto
        self.ctx = ctx
        self.device = ctx.device
        cfg.validate(ctx.world_size)
        if cfg.optimizer == "muon":
            muon_class(cfg)  # this torch has torch.optim.Muon (checked before anything is written)
        self.grad_accum = cfg.grad_accum_steps(ctx.world_size)
        self.run_dir = Path(cfg.out)
        self.console = RunConsole(ctx.is_main, cfg.steps, cfg.log_every)
        self.log, self.warn = self.console.log, self.console.warn
        # One gpt2 train per RUN_DIR (rank 0 holds the lock): taken before anything there is read or cleaned, or for a
        # new RUN_DIR once it is created below (a bad invocation creates nothing).
        self.lock = RunLock(self.run_dir) if ctx.is_main and self.run_dir.is_dir() else None
        if ctx.is_main:  # a crash's leftovers (a step_N caught mid-replace is put back first)
            remove_stale_temporaries(self.run_dir)
        barrier(ctx)
        # --- read-only checks next: a bad invocation must not touch an existing run
        self.mix = parse_mix(cfg.data, cfg.mix) if cfg.mix else None
        assert cfg.micro_batch is not None  # resolved above
        loader_args = (cfg.micro_batch, cfg.seq_len, ctx.rank, ctx.world_size, cfg.seed, cfg.shuffle)
        if self.mix:
            self.loader = MixtureLoader(self.mix, *loader_args)
        else:
            self.loader = TokenShardLoader(cfg.data, "train", *loader_args)
        self.resume_from = find_resume_checkpoint(self.run_dir, cfg.resume)
        if self.resume_from is not None:
            # refuses another model config or optimizer, and a dataset/seed the data position does not belong to
            saved = check_resumable(self.resume_from, cfg.model)
            check_resume_optimizer(self.resume_from, saved, cfg)
            self.loader.load_state_dict(saved["loader"])
        self.tracking = Tracking(cfg.log_to, self.run_dir, self.resume_from is not None, ctx.is_main, self.warn)
        self.amp_dtype = resolve_amp_dtype(cfg.autocast, self.device)
        self.distiller = Distiller.load(cfg, self.device)  # None unless --distill-from
        self.compile = cfg.compile if cfg.compile is not None else self.device.type == "cuda"
        if self.compile and self.device.type == "mps":
            raise GPT2Error("--compile is not supported on MPS; drop it or use --no-compile")
        # --- build the model (same init on every rank) and the optimizer
        torch.manual_seed(cfg.seed)
        if self.device.type == "cuda":
            torch.cuda.manual_seed(cfg.seed)
            torch.set_float32_matmul_precision("high")  # TF32 for any fp32 matmul left outside autocast
        model, init_record = initial_model(cfg, self.resume_from is not None, model, init)  # --init-from weights
        self.model = model.to(self.device).train()  # loaded models come in eval mode (dropout off)
        self.flops_per_token = self.model.flops_per_token(cfg.seq_len)
        if self.distiller is not None:  # the teacher's forward pass is work of every step too
            self.flops_per_token += self.distiller.flops_per_token(cfg.seq_len)
        self.num_parameters = self.model.num_parameters()
        if ctx.is_main:  # room for fp32 weights + two AdamW moments per kept checkpoint
            check_run_dir(self.run_dir, 4 * 3 * self.num_parameters, cfg.keep_last)
            self.lock = self.lock or RunLock(self.run_dir)
        self.runner = wrap_model(self.model, ctx, cfg.fsdp, self.compile)
        self.optimizers = build_optimizers(self.model, cfg, self.device)  # AdamW, or Muon + AdamW
        self.optimizer = self.optimizers.adamw
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp_dtype == torch.float16)
        self.peak_flops = device_peak_flops(self.device, cfg.peak_flops)
        self.evaluation = InLoopEvaluation(cfg, self.device, self.amp_dtype, self.warn)
        self.state = TrainState(cfg, self.loader, self.scaler, ctx.world_size)
        self.state.init_from = init_record  # a resumed run restores its own
        # Everything a checkpoint holds, each saved under its name; a new stateful piece is one more entry here.
        components: dict[str, Stateful] = {
            "model": ModelState(self.model, cfg.fsdp, self.state.meta),
            **self.optimizers.components(self.model, cfg.fsdp),  # "optimizer" (AdamW), with Muon also "muon"
            "rng": RNGState(ctx),
            "trainer": self.state,
        }
        self.checkpointer = Checkpointer(self.run_dir, components, ctx, cfg.keep_last)

    def _restore(self) -> None:
        assert self.resume_from is not None
        self.checkpointer.load(self.resume_from)
        if not self.state.same_run_shape():
            self.warn(
                "world size or batch differs from the saved run: training continues at the same token, "
                "but losses will not match an uninterrupted run exactly"
            )
        self.log(f"resumed from {self.resume_from} (step {self.state.step}, {self.state.tokens:,} tokens)")
        if self.cfg.init_from:
            self.log(f"note: --init-from is ignored: {self.run_dir} has a checkpoint, so the run resumes from it")

    def run_info(self) -> dict[str, Any]:
        """run.json: how this process trains (rundir adds start time and the resume history)."""
        return {
            "config": self.cfg.to_dict(),
            "init_from": self.state.init_from,  # where the initial weights came from (None: random init)
            "model": self.cfg.model.to_dict(),
            "parameters": self.num_parameters,
            "world_size": self.ctx.world_size,
            "grad_accum": self.grad_accum,
            "device": str(self.device),
            "device_name": torch.cuda.get_device_name(self.device) if self.device.type == "cuda" else self.device.type,
            "dtype": str(self.amp_dtype or torch.float32).removeprefix("torch."),
            "compile": self.compile,
            "data": str(self.cfg.data),
            "mix": [{"data": d, "weight": float(w)} for d, w in self.mix] if self.mix else None,
            "flops_per_token": self.flops_per_token,  # model (+ teacher forward) FLOPs: what MFU counts
            "optimizer_flops_per_step": newton_schulz_flops(self.model, self.cfg),
            "peak_flops": self.peak_flops,
            "torch": torch.__version__,
            "tracking": self.tracking.run_ids,
        }

    # ------------------------------------------------------------ one step

    def train_step(self, pacer: MicroStepStop) -> tuple[torch.Tensor, torch.Tensor, bool] | None:
        """Forward/backward over ``grad_accum`` micro-batches, then clip and update (unless non-finite).

        Returns (mean loss over ranks and micro-batches, grad norm before clipping, whether it updated), or None
        when ``pacer`` stopped it between micro-steps (nothing updated; data position and RNGs at the step's start).
        """
        cfg = self.cfg
        self.optimizers.set_lr(self.state.step)  # each group from its own peak lr
        self.optimizers.zero_grad()
        loss_sum = torch.zeros((), device=self.device)
        pacer.begin_step(self.loader, self.device)
        for micro in range(self.grad_accum):
            if micro and pacer.abort():  # it rewound the data position and RNGs
                self.optimizers.zero_grad()
                return None
            t_micro = time.perf_counter()
            x, y = self.loader.next_batch()
            if self.device.type == "cuda":  # page-locked memory lets the copy overlap with compute
                x, y = x.pin_memory(), y.pin_memory()
            x, y = x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
            # Only the last micro-step all-reduces gradients; the others just accumulate locally.
            with gradient_sync(self.runner, self.model, micro == self.grad_accum - 1):
                with autocast(self.device, self.amp_dtype):
                    if self.distiller is not None:
                        loss = self.distiller.loss(self.runner, x, y)
                    else:
                        # Index the tuple instead of unpacking it: a name bound to the logits would keep
                        # B*T*V activations (6.6 GB at 124M, B=64, bf16) alive through the backward pass.
                        loss = self.runner(x, y, fused_loss=cfg.fused_loss)[1]
                # Each micro-batch's mean loss / grad_accum: the summed gradient is that of the mean over all.
                loss = loss / self.grad_accum
                loss_sum += loss.detach()
                self.scaler.scale(loss).backward()
            if micro == 1:  # the 2nd micro-step: compile and warm-up are behind
                pacer.time_micro_step(t_micro, self.device)
        loss_mean = all_reduce_mean(loss_sum, self.ctx)
        self.optimizers.unscale_(self.scaler)
        max_norm = cfg.grad_clip if cfg.grad_clip > 0 else math.inf
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), max_norm)
        if hasattr(grad_norm, "full_tensor"):  # FSDP: a DTensor
            grad_norm = grad_norm.full_tensor()
        finite = bool(torch.isfinite(loss_mean).item() and torch.isfinite(grad_norm).item())
        if finite:
            self.optimizers.step(self.scaler)
        self.scaler.update()
        self.optimizers.zero_grad()
        return loss_mean, grad_norm, finite

    # ------------------------------------------------------------ the loop

    def run(self) -> dict[str, Any]:
        """Train until ``steps`` (or a stop signal); returns a summary (final step, loss, stop reason)."""
        cfg, ctx, state = self.cfg, self.ctx, self.state
        if self.resume_from is not None:
            self._restore()
        if self.lock is not None:  # rank 0's
            self.lock.claim()  # rank 0 holds the run's lock; from here on it writes the run
            truncate_metrics(self.run_dir, state.step)
            info = write_run_info(self.run_dir, self.run_info(), state.step if self.resume_from is not None else None)
            self.console.open(MetricsLog(self.run_dir), self.tracking.start(self.run_dir, info, state.step))
        self.log(
            f"training {cfg.size or 'custom'} ({self.num_parameters:,} parameters, --recipe {cfg.recipe}, "
            f"--optimizer {cfg.optimizer}) on {self.device} "
            f"x{ctx.world_size}, {str(self.amp_dtype or 'fp32').removeprefix('torch.')}, "
            f"{cfg.batch_tokens:,} tokens/step = {cfg.micro_batch} x {cfg.seq_len} x {ctx.world_size} ranks "
            f"x {self.grad_accum} micro-steps; steps {state.step + 1}..{cfg.steps} -> {self.run_dir}"
        )
        from tqdm import tqdm

        bar = tqdm(total=cfg.steps, initial=state.step, disable=None if ctx.is_main else True, unit="step")
        state.start_clock()
        bad_in_row, stopped = 0, False
        try:
            with StopRequest() as stop:
                pacer = MicroStepStop(stop, ctx, self.grad_accum, self.warn)
                while state.step < cfg.steps:
                    t0 = time.perf_counter()
                    if (result := self.train_step(pacer)) is None:  # stopped between micro-steps: redone on resume
                        stopped = True
                        if state.step > 0:
                            self.log(f"saved {self.checkpointer.save(state.step)}")
                        break
                    loss, grad_norm, finite = result
                    if self.device.type == "cuda":
                        torch.cuda.synchronize(self.device)
                    dt = time.perf_counter() - t0
                    pacer.step_done(dt)
                    state.step += 1
                    state.tokens += cfg.batch_tokens
                    bad_in_row = 0 if finite else bad_in_row + 1
                    state.last_loss = loss.item() if finite else state.last_loss
                    self._log_train_row(loss, grad_norm, finite, dt)
                    bar.update(1)
                    if not finite:
                        self._on_non_finite(loss, bad_in_row)
                    last = state.step == cfg.steps
                    self._evaluate(last)
                    stopped = any_rank(stop.requested, ctx)
                    if stopped or last or (cfg.save_every > 0 and state.step % cfg.save_every == 0):
                        self.log(f"saved {self.checkpointer.save(state.step)}")
                    if stopped:
                        break
        finally:
            bar.close()
            self.console.close()
            if self.lock is not None:
                self.lock.close()
        self.log(
            f"{'stopped by signal' if stopped else 'finished'} at step {state.step}; checkpoints in {self.run_dir}"
        )
        summary = {"step": state.step, "loss": state.last_loss, "stopped": "signal" if stopped else "done"}
        return {**summary, **state.last_eval}

    def _log_train_row(self, loss: torch.Tensor, norm: torch.Tensor, finite: bool, dt: float) -> None:
        tok_per_s = self.cfg.batch_tokens / dt
        row = {
            "type": "train",
            "step": self.state.step,
            "loss": loss.item() if finite else None,
            **self.optimizers.lrs(),
            "grad_norm": norm.item() if math.isfinite(norm.item()) else None,
            "tokens": self.state.tokens,
            "tok_per_s": tok_per_s,
            "mfu": model_flops_utilization(self.flops_per_token, tok_per_s, self.peak_flops, self.ctx.world_size),
            "dt_ms": 1000 * dt,
            "time": self.state.clock(),
        }
        if self.distiller is not None:
            row.update(self.distiller.train_metrics(self.ctx))
        if not finite:
            row["skipped"] = True
        self.console.train_row(row)

    def _on_non_finite(self, loss: torch.Tensor, bad_in_row: int) -> None:
        limit, step = self.cfg.max_bad_steps, self.state.step
        self.warn(f"step {step}: loss is {loss.item()} -> update skipped ({bad_in_row}/{limit} in a row)")
        if bad_in_row >= limit:
            latest = latest_checkpoint(self.run_dir) if self.run_dir.is_dir() else None
            raise GPT2Error(
                f"training diverged: non-finite loss/gradients for {bad_in_row} steps in a row (up to step "
                f"{step}); last good checkpoint: {latest or 'none'}. Lower --lr, raise --warmup-steps, "
                "or check the data"
            )

    def _evaluate(self, last: bool) -> None:
        metrics, samples = self.evaluation.run(self.model, self.state.step, last)
        if self.distiller is not None and "val_loss" in metrics:
            metrics["teacher_val_loss"] = self.distiller.teacher_val_loss(self.evaluation.val_loss)
        self.state.last_eval.update(metrics)
        self.console.evaluation({"step": self.state.step, "tokens": self.state.tokens}, metrics, samples)


def train(config: TrainConfig, model: GPT | None = None, init: InitSource | None = None) -> dict[str, Any]:
    """Run (or resume) training described by ``config`` in this process; under torchrun, on every rank.

    ``model`` optionally supplies the initial model (it must have ``config.model``'s shape); ``init`` the
    already loaded ``--init-from`` weights (:func:`gpt2.train.init.resolve_config`), else they load here.
    """
    from gpt2.runtime.distributed import setup_distributed, teardown_distributed

    ctx = setup_distributed(config.device)
    try:
        return Trainer(config, ctx, model, init).run()
    finally:
        teardown_distributed()
