"""``gpt2 bench train``: training-step throughput and peak memory of our GPT against Hugging Face's GPT-2.

One step = forward + backward + AdamW update on one micro-batch, for both models with the same
config (vocab 50304, no dropout), the same batch, the same precision, the same optimizer settings
and the same number of threads. Reference: ``transformers.GPT2LMHeadModel`` with SDPA attention.

CPU: fp32, eager, the fused (single-kernel) AdamW our trainer uses, for both; the ``mini`` config
(B=2, T=256) and 124M (B=1, T=128, fewer repeats; skipped in quick mode). "ours" is our trainer's
fastest CPU configuration, ``--fused-loss`` (the output layer and cross-entropy in chunks of rows,
gpt2.fused_loss); the plain loss is timed in the same rounds and reported as ``plain_ratio``.
CUDA: bf16 autocast, ``torch.compile``, fused AdamW and flash SDPA for both, plain loss (compiled,
it is fused already), 124M at T=1024 with micro-batch 16/32/64, plus MFU against the card's bf16 peak.
"""

from __future__ import annotations

import dataclasses
import gc
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn as nn

from gpt2.bench.core import BenchResult, interleaved_median_seconds, median_seconds
from gpt2.bench.memory import peak_memory_bytes
from gpt2.config import GPT2_VOCAB_SIZE, GPTConfig
from gpt2.model import GPT, optimizer_param_groups
from gpt2.runtime.device import autocast, resolve_amp_dtype
from gpt2.train.mfu import device_peak_flops, model_flops_utilization  # the same MFU as `gpt2 train` prints

REFERENCE_NAME = "transformers GPT2LMHeadModel (sdpa)"
IMPLEMENTATIONS = ("ours", "hf")
OURS_PLAIN = "ours-plain"  # CPU only: our model with the plain (full-logits) loss, timed alongside
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
    # 124M costs ~4x a mini step per token on CPU; fewer repeats keep the suite within minutes.
    return [TrainCase("mini", 2, 256, repeat), TrainCase("124M", 1, 128, max(1, repeat // 2))]


def build_model(impl: str, config: GPTConfig) -> nn.Module:
    """Our GPT or HF's GPT2LMHeadModel with the same shape, fp32 weights, dropout off, seed 0."""
    torch.manual_seed(0)
    if impl == "ours":
        return GPT(config)
    from transformers import GPT2Config, GPT2LMHeadModel
    from transformers.utils import logging as hf_logging

    from gpt2.interop.hf import hf_config_dict

    hf_logging.set_verbosity_error()  # its "loss_type=None ... using ForCausalLMLoss" notice is expected here
    # The exported-model config (dropout 0, tied embeddings, gelu_new), but with our padded vocab: same shape.
    hf_config = GPT2Config(**{**hf_config_dict(config), "vocab_size": config.vocab_size}, attn_implementation="sdpa")
    return GPT2LMHeadModel(hf_config)


def autocast_dtype(device: torch.device) -> torch.dtype | None:
    """The benchmarks' precision: bf16 autocast on CUDA, plain fp32 elsewhere (CPU bf16 is slower than fp32
    without AMX), as ``gpt2 train --autocast auto`` picks on a bf16 GPU. None means no autocast."""
    return resolve_amp_dtype("bf16" if device.type == "cuda" else "fp32", device)


def uses_fused_loss(impl: str, device: torch.device) -> bool:
    """Whether ``impl`` runs with ``fused_loss``: ours on CPU (where it is our trainer's fastest setting)."""
    return impl == "ours" and device.type == "cpu"


def make_train_step(impl: str, config: GPTConfig, batch: int, seq: int, device: torch.device) -> Callable[[], None]:
    """A closure doing one optimizer step of a freshly built ``impl`` model on a fixed random batch.

    ``impl``: "ours" (fused loss on CPU), "ours-plain" (our model, plain loss) or "hf".
    """
    model = build_model("hf" if impl == "hf" else "ours", config).to(device).train()
    cuda = device.type == "cuda"
    runner = torch.compile(model) if cuda else model
    fused_loss = uses_fused_loss(impl, device)
    # fused AdamW for both sides, as `gpt2 train` uses on CUDA and CPU (the optimizer is not what is compared)
    optimizer = torch.optim.AdamW(
        optimizer_param_groups(model, 0.1), lr=6e-4, betas=(0.9, 0.95), eps=1e-8, fused=device.type in ("cuda", "cpu")
    )
    generator = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, GPT2_VOCAB_SIZE, (batch, seq + 1), generator=generator).to(device)
    x, y = tokens[:, :-1].contiguous(), tokens[:, 1:].contiguous()
    amp = autocast_dtype(device)

    def step() -> None:
        with autocast(device, amp):
            # Keep only the loss: holding the (B, T, V) logits through backward would cost B*T*V*4 bytes.
            if impl != "hf":
                loss = runner(x, y, fused_loss=fused_loss)[1]
            else:  # HF shifts the labels itself; no KV cache in training
                loss = runner(input_ids=x, labels=x, use_cache=False).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if cuda:
            torch.cuda.synchronize(device)

    return step


def case_config(case: TrainCase) -> GPTConfig:
    config = GPTConfig.named(case.size)
    return config if case.seq <= config.block_size else dataclasses.replace(config, block_size=case.seq)


def _free_memory(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def _two_steps(impl: str, config: GPTConfig, batch: int, seq: int, device: torch.device) -> None:
    """Build and take two steps: AdamW allocates its moments in the first, so the second has the steady-state
    peak (weights + moments + gradients + activations)."""
    step = make_train_step(impl, config, batch, seq, device)
    step()
    step()


def _measure_cpu(case: TrainCase, config: GPTConfig, device: torch.device) -> tuple[dict, dict]:
    """CPU: both models (and ours with the plain loss) timed in alternation; then each one's memory in a
    separate, untimed run."""
    steps = {
        impl: make_train_step(impl, config, case.batch, case.seq, device) for impl in (*IMPLEMENTATIONS, OURS_PLAIN)
    }
    seconds = interleaved_median_seconds(steps, repeat=case.repeat, warmup=1)
    del steps
    _free_memory(device)
    peak = {}
    for impl in IMPLEMENTATIONS:
        peak[impl] = peak_memory_bytes(lambda impl=impl: _two_steps(impl, config, case.batch, case.seq, device), device)
    return seconds, peak


def _measure_cuda(case: TrainCase, config: GPTConfig, device: torch.device) -> tuple[dict, dict]:
    """CUDA: one model at a time (a dedicated GPU is steady); the allocator's peak comes free with the timing."""
    seconds, peak = {}, {}
    for impl in IMPLEMENTATIONS:

        def timed(impl: str = impl) -> None:
            step = make_train_step(impl, config, case.batch, case.seq, device)
            # several warm-up steps: the first ones compile the graph and autotune kernels
            seconds[impl] = median_seconds(step, repeat=case.repeat, warmup=3)

        peak[impl] = peak_memory_bytes(timed, device)
        _free_memory(device)
    return seconds, peak


def run(device: str = "cpu", repeat: int = 3, quick: bool = False) -> list[BenchResult]:
    """Training-step tokens/s and peak memory, ours vs HF, for each case of :func:`train_cases`."""
    dev = torch.device(device)
    if dev.type == "cuda":
        torch.set_float32_matmul_precision("high")  # TF32 for anything autocast leaves in fp32
    results = []
    for case in train_cases(dev, repeat, quick):
        config = case_config(case)
        measure = _measure_cuda if dev.type == "cuda" else _measure_cpu
        seconds, peak = measure(case, config, dev)
        tokens = case.batch * case.seq
        ours, ref = tokens / seconds["ours"], tokens / seconds["hf"]
        with torch.device("meta"):
            flops_per_token = GPT(config).flops_per_token(case.seq)
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
            "ours_loss": "fused" if uses_fused_loss("ours", dev) else "plain",
        }
        if OURS_PLAIN in seconds:  # the same comparison without the fused loss
            extra["plain_seconds_per_step"] = seconds[OURS_PLAIN]
            extra["plain_ratio"] = seconds["hf"] / seconds[OURS_PLAIN]
        peak_flops = device_peak_flops(dev)  # None on CPU: MFU is only defined against a GPU's bf16 peak
        extra["mfu"] = model_flops_utilization(flops_per_token, ours, peak_flops)
        extra["reference_mfu"] = model_flops_utilization(flops_per_token, ref, peak_flops)
        extra["peak_flops"] = peak_flops
        fused = " (ours --fused-loss)" if extra["ours_loss"] == "fused" else ""
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
