"""``python -m tools.bench train``: training-step throughput and peak memory of our ``Trainer`` against HF's GPT-2.

"ours" is the real step of ``gpt2 train``: :meth:`gpt2.train.trainer.Trainer.train_step` of a ``Trainer`` built
from a :class:`~gpt2.train.config.TrainConfig` (loader, autocast, forward, backward, gradient clipping at 1.0,
fused AdamW, the finite check), on a dataset of random tokens in a temporary folder. The reference,
``transformers.GPT2LMHeadModel`` with SDPA attention, does the same work by hand: the same config (vocab 50304,
no dropout), batches from the same kind of loader, the same precision, fused AdamW with the same settings,
clipping at 1.0 and the same number of threads.

CPU: fp32, eager; the ``mini`` config (B=2, T=256) and 124M (B=1, T=128; skipped in quick mode), at least 3
timed repeats each. "ours" is the trainer's fastest CPU configuration, ``--fused-loss`` (the output layer and
cross-entropy in chunks of rows, gpt2.fused_loss); the plain loss is timed in the same rounds and reported as
``plain_ratio``. CUDA: bf16 autocast and ``torch.compile`` for both, plain loss (compiled, it is fused
already), 124M at T=1024 with micro-batch 16/32/64, plus MFU against the card's bf16 peak.
"""

from __future__ import annotations

import dataclasses
import gc
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from gpt2.config import GPT2_VOCAB_SIZE, GPTConfig
from gpt2.model import GPT, optimizer_param_groups
from gpt2.runtime.device import autocast, resolve_amp_dtype
from gpt2.train.mfu import device_peak_flops, model_flops_utilization  # the same MFU as `gpt2 train` prints
from tools.bench.core import BenchResult, interleaved_median_seconds, median_seconds
from tools.bench.memory import peak_memory_bytes

REFERENCE_NAME = "transformers GPT2LMHeadModel (sdpa)"
IMPLEMENTATIONS = ("ours", "hf")
OURS_PLAIN = "ours-plain"  # CPU only: our trainer with the plain (full-logits) loss, timed alongside
MIB = 2**20


@dataclass(frozen=True)
class TrainCase:
    """One measured shape: model size (registry name), micro-batch B and sequence length T (tokens)."""

    size: str
    batch: int
    seq: int
    repeat: int

    @property
    def label(self) -> str:
        return f"{self.size} B={self.batch} T={self.seq}"


def train_cases(device: torch.device, repeat: int, quick: bool) -> list[TrainCase]:
    if quick:
        return [TrainCase("tiny", 2, 64, repeat)]
    if device.type == "cuda":
        # a GPU step takes ~0.1-0.5 s: at least 10 timed steps for a steady median
        return [TrainCase("124M", batch, 1024, max(repeat, 10)) for batch in (16, 32, 64)]
    # a 124M step at B=1, T=128 takes about a second per side on 2 cores: a median needs 3 repeats at least
    return [TrainCase("mini", 2, 256, repeat), TrainCase("124M", 1, 128, max(3, repeat))]


def case_config(case: TrainCase) -> GPTConfig:
    config = GPTConfig.named(case.size)
    return config if case.seq <= config.block_size else dataclasses.replace(config, block_size=case.seq)


def autocast_dtype(device: torch.device) -> torch.dtype | None:
    """The benchmarks' precision: bf16 autocast on CUDA, plain fp32 elsewhere, as ``gpt2 train --autocast auto``
    picks (on a CPU with AVX512_BF16 bf16 may be faster: measure it per machine). None means no autocast."""
    return resolve_amp_dtype(_dtype_option(device), device)


def _dtype_option(device: torch.device) -> str:
    return "bf16" if device.type == "cuda" else "fp32"


def random_token_data(workdir: Path, batch: int, seq: int) -> Path:
    """A prepared dataset (train split only) of uniformly random GPT-2 token ids: 8 steps of B x T, made once."""
    from gpt2.data import ShardWriter

    data = Path(workdir) / f"random-tokens-{batch}x{seq}"
    if not (data / "manifest.json").is_file():
        tokens = np.random.default_rng(0).integers(0, GPT2_VOCAB_SIZE, 8 * batch * seq + 1, dtype=np.uint16)
        writer = ShardWriter(data, source="random tokens (benchmark)", shard_tokens=len(tokens), val_tokens=0)
        writer.add_document(0, tokens)
        writer.finish()
    return data


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def trainer_step(
    config: GPTConfig, batch: int, seq: int, device: torch.device, workdir: Path, fused_loss: bool
) -> Callable[[], None]:
    """One optimizer step of a ``Trainer`` (one micro-batch of B x T), as ``gpt2 train`` would run it."""
    from gpt2.runtime.distributed import setup_distributed
    from gpt2.train.config import TrainConfig
    from gpt2.train.signals import MicroStepStop, StopRequest
    from gpt2.train.trainer import Trainer

    cfg = TrainConfig(
        model=config, size=config.registry_name(), data=str(random_token_data(workdir, batch, seq)),
        out=str(Path(workdir) / f"run-{'fused' if fused_loss else 'plain'}"), steps=1000, batch_tokens=batch * seq,
        micro_batch=batch, seq_len=seq, device=str(device), autocast=_dtype_option(device),
        compile=device.type == "cuda", fused_loss=fused_loss, eval_every=0, hellaswag_every=0, sample_every=0,
        save_every=0, keep_last=1, seed=0,
    )  # fmt: skip
    trainer = Trainer(cfg, setup_distributed(cfg.device))  # checks and builds; writes nothing before run()
    pacer = MicroStepStop(StopRequest(), trainer.ctx, trainer.grad_accum, trainer.warn)  # no stop is ever asked

    def step() -> None:
        trainer.train_step(pacer)
        _synchronize(device)

    return step


def hf_model(config: GPTConfig) -> nn.Module:
    """HF's GPT2LMHeadModel with our shape (padded vocab), fp32 weights, dropout off, seed 0."""
    from transformers import GPT2Config, GPT2LMHeadModel
    from transformers.utils import logging as hf_logging

    from gpt2.interop.hf import hf_config_dict

    torch.manual_seed(0)
    hf_logging.set_verbosity_error()  # its "loss_type=None ... using ForCausalLMLoss" notice is expected here
    # The exported-model config (dropout 0, tied embeddings, gelu_new), but with our padded vocab: same shape.
    hf_config = GPT2Config(**{**hf_config_dict(config), "vocab_size": config.vocab_size}, attn_implementation="sdpa")
    return GPT2LMHeadModel(hf_config)


def hf_step(config: GPTConfig, batch: int, seq: int, device: torch.device, workdir: Path) -> Callable[[], None]:
    """The reference's step, doing what ``Trainer.train_step`` does (see the module docstring)."""
    from gpt2.data import TokenShardLoader

    model = hf_model(config).to(device).train()
    runner = torch.compile(model) if device.type == "cuda" else model
    # fused AdamW, as `gpt2 train` uses on CUDA and CPU (the optimizer is not what is compared)
    optimizer = torch.optim.AdamW(
        optimizer_param_groups(model, 0.1), lr=6e-4, betas=(0.9, 0.95), eps=1e-8, fused=device.type in ("cuda", "cpu")
    )
    loader = TokenShardLoader(random_token_data(workdir, batch, seq), "train", batch, seq)
    amp = autocast_dtype(device)

    def step() -> None:
        x = loader.next_batch()[0].to(device, non_blocking=True)
        with autocast(device, amp):  # keep only the loss; HF shifts the labels itself; no KV cache in training
            loss = runner(input_ids=x, labels=x, use_cache=False).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        _synchronize(device)

    return step


def make_train_step(
    impl: str, config: GPTConfig, batch: int, seq: int, device: torch.device, workdir: Path
) -> Callable[[], None]:
    """``impl``: "ours" (the trainer; ``--fused-loss`` on CPU), "ours-plain" (the trainer, plain loss) or "hf"."""
    if impl == "hf":
        return hf_step(config, batch, seq, device, workdir)
    return trainer_step(config, batch, seq, device, workdir, fused_loss=impl == "ours" and device.type == "cpu")


def _free_memory(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def _measure_cpu(case: TrainCase, config: GPTConfig, device: torch.device, workdir: Path) -> tuple[dict, dict]:
    """CPU: both sides (and ours with the plain loss) timed in alternation; then each one's memory in a
    separate, untimed run of two steps (AdamW allocates its moments in the first: the second has the
    steady-state peak of weights + moments + gradients + activations)."""
    impls = (*IMPLEMENTATIONS, OURS_PLAIN)
    steps = {impl: make_train_step(impl, config, case.batch, case.seq, device, workdir) for impl in impls}
    seconds = interleaved_median_seconds(steps, repeat=case.repeat, warmup=1)
    del steps
    _free_memory(device)
    peak = {}
    for impl in IMPLEMENTATIONS:

        def two_steps(impl: str = impl) -> None:
            step = make_train_step(impl, config, case.batch, case.seq, device, workdir)
            step()
            step()

        peak[impl] = peak_memory_bytes(two_steps, device)
    return seconds, peak


def _measure_cuda(case: TrainCase, config: GPTConfig, device: torch.device, workdir: Path) -> tuple[dict, dict]:
    """CUDA: one side at a time (a dedicated GPU is steady); the allocator's peak comes free with the timing."""
    seconds, peak = {}, {}
    for impl in IMPLEMENTATIONS:

        def timed(impl: str = impl) -> None:
            step = make_train_step(impl, config, case.batch, case.seq, device, workdir)
            # several warm-up steps: the first ones compile the graph and autotune kernels
            seconds[impl] = median_seconds(step, repeat=case.repeat, warmup=3)

        peak[impl] = peak_memory_bytes(timed, device)
        _free_memory(device)
    return seconds, peak


def run(device: str = "cpu", repeat: int = 3, quick: bool = False) -> list[BenchResult]:
    """Training-step tokens/s and peak memory, ours vs HF, for each case of :func:`train_cases`."""
    dev = torch.device(device)
    if dev.type == "cuda":
        torch.set_float32_matmul_precision("high")  # TF32 for anything autocast leaves in fp32, as the trainer sets
    results = []
    for case in train_cases(dev, repeat, quick):
        config = case_config(case)
        measure = _measure_cuda if dev.type == "cuda" else _measure_cpu
        with tempfile.TemporaryDirectory(prefix="gpt2-bench-train-") as workdir:
            seconds, peak = measure(case, config, dev, Path(workdir))
        tokens = case.batch * case.seq
        ours, ref = tokens / seconds["ours"], tokens / seconds["hf"]
        with torch.device("meta"):
            flops_per_token = GPT(config).flops_per_token(case.seq)
        fused_loss = dev.type == "cpu"
        extra: dict[str, Any] = {
            "suite": "train",
            "size": case.size,
            "batch": case.batch,
            "seq_len": case.seq,
            "repeat": case.repeat,
            "dtype": "bf16-autocast" if autocast_dtype(dev) else "fp32",
            "compile": dev.type == "cuda",
            "flops_per_token": flops_per_token,
            "ours_seconds_per_step": seconds["ours"],
            "reference_seconds_per_step": seconds["hf"],
            "ours_loss": "fused" if fused_loss else "plain",
        }
        if OURS_PLAIN in seconds:  # the same comparison without the fused loss
            extra["plain_seconds_per_step"] = seconds[OURS_PLAIN]
            extra["plain_ratio"] = seconds["hf"] / seconds[OURS_PLAIN]
        peak_flops = device_peak_flops(dev)  # None on CPU: MFU is only defined against a GPU's bf16 peak
        extra["mfu"] = model_flops_utilization(flops_per_token, ours, peak_flops)
        extra["reference_mfu"] = model_flops_utilization(flops_per_token, ref, peak_flops)
        extra["peak_flops"] = peak_flops
        fused = " (ours --fused-loss)" if fused_loss else ""
        results.append(
            BenchResult(f"train {case.label} tok/s{fused}", ours, ref, "tok/s", ours / ref, REFERENCE_NAME, extra)
        )
        if OURS_PLAIN in seconds:
            plain = tokens / seconds[OURS_PLAIN]
            plain_extra = {**extra, "ours_loss": "plain", "ours_seconds_per_step": seconds[OURS_PLAIN]}
            plain_extra["mfu"] = model_flops_utilization(flops_per_token, plain, peak_flops)
            name = f"train {case.label} tok/s (ours, plain loss)"
            results.append(BenchResult(name, plain, ref, "tok/s", plain / ref, REFERENCE_NAME, plain_extra))
        memory_extra = {key: extra[key] for key in ("suite", "size", "batch", "seq_len", "dtype")}
        memory_extra["method"] = "cuda max_memory_allocated" if dev.type == "cuda" else "peak live tensor bytes"
        results.append(
            BenchResult(
                f"train {case.label} peak memory",
                peak["ours"] / MIB,
                peak["hf"] / MIB,
                "MiB",
                peak["hf"] / max(peak["ours"], 1),  # lower is better: reference / ours
                REFERENCE_NAME,
                memory_extra,
            )
        )
        _free_memory(dev)
    return results
