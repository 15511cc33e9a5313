"""Model FLOPs utilisation: achieved training FLOP/s over the accelerator's peak.

The peak is the dense (no 2:4 sparsity) bf16 tensor-core throughput from the vendors' data
sheets, looked up from ``torch.cuda.get_device_name()``; ``--peak-flops`` overrides it (for a
card missing here, or to compare against fp16/fp8 peaks). Without a known peak MFU is None
rather than a number relative to some other GPU.
"""

from __future__ import annotations

import re

import torch

# (pattern searched in the upper-cased device name, dense bf16 FLOP/s). First match wins, so
# more specific names (H100 PCIe, L40S) come before their prefixes (H100, L40).
PEAK_BF16_FLOPS: list[tuple[str, float]] = [
    (r"GB200", 2.5e15),
    (r"B200", 2.25e15),
    (r"B100", 1.75e15),
    (r"H200.*NVL", 835e12),  # the PCIe-card H200 (lower clocks and power); GH200 matches "H200" below
    # Same SXM compute as the H100, more and faster memory. A measured 8192^3 bf16 matmul reaches ~790 TFLOP/s
    # on one (the GPU check's env stage records it); MFU stays against the data sheet, as everyone quotes it.
    (r"H200", 989e12),
    (r"H100.*PCIE", 756e12),
    (r"H100.*NVL", 835e12),
    (r"H100|H800", 989e12),  # SXM5
    (r"H20\b", 148e12),
    (r"A100|A800", 312e12),
    (r"L40S", 362e12),
    (r"L40\b", 181e12),
    (r"\bL4\b", 121e12),
    (r"A6000", 155e12),
    (r"\bA40\b", 150e12),
    (r"\bA30\b", 165e12),
    (r"\bA10\b", 125e12),
    (r"5090", 209e12),
    (r"4090", 165e12),  # GeForce: bf16 with fp32 accumulation
    (r"3090", 71e12),
    (r"V100", 125e12),  # no bf16: fp16 tensor-core peak
    (r"\bT4\b", 65e12),  # fp16
    (r"MI300X", 1307e12),
    (r"MI250", 362e12),
]


def peak_flops_for(device_name: str) -> float | None:
    """Dense bf16 peak FLOP/s of the GPU called ``device_name``, or None when it is not in the table."""
    name = device_name.upper()
    for pattern, flops in PEAK_BF16_FLOPS:
        if re.search(pattern, name):
            return flops
    return None


def device_peak_flops(device: torch.device, override: float | None = None) -> float | None:
    """Peak FLOP/s of one ``device``: the override when given, the table for a CUDA GPU, else None (CPU, MPS)."""
    if override is not None:
        return override
    if device.type == "cuda":
        return peak_flops_for(torch.cuda.get_device_name(device))
    return None


def model_flops_utilization(
    flops_per_token: float, tokens_per_second: float, peak_flops: float | None, num_devices: int = 1
) -> float | None:
    """Fraction of the peak that training achieves: flops_per_token * tok/s / (peak * devices).

    ``tokens_per_second`` is the global throughput of all ``num_devices`` devices together.
    """
    if peak_flops is None or peak_flops <= 0:
        return None
    return flops_per_token * tokens_per_second / (peak_flops * num_devices)
