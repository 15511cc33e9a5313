import pytest
import torch

from gpt2 import GPT, GPTConfig
from gpt2.train.mfu import device_peak_flops, model_flops_utilization, peak_flops_for


@pytest.mark.parametrize(
    "name, flops",
    [
        ("NVIDIA A100-SXM4-80GB", 312e12),
        ("NVIDIA H100 80GB HBM3", 989e12),
        ("NVIDIA H100 PCIe", 756e12),
        ("NVIDIA H200", 989e12),
        ("NVIDIA H200 NVL", 835e12),
        ("NVIDIA GH200 480GB", 989e12),
        ("NVIDIA L4", 121e12),
        ("NVIDIA L40S", 362e12),
        ("NVIDIA GeForce RTX 4090", 165e12),
        ("NVIDIA A10", 125e12),
        ("Tesla V100-SXM2-16GB", 125e12),
        ("Some Future GPU", None),
    ],
)
def test_peak_table_matches_device_names(name, flops):
    assert peak_flops_for(name) == flops


def test_mfu_uses_the_model_flops_and_the_devices():
    model = GPT(GPTConfig.named("tiny"))
    per_token = model.flops_per_token(64)
    assert per_token == 6 * model.num_parameters() + 12 * 2 * 64 * 64
    # 124M at T=1024 on 8 H100s at 4.6M tok/s: ~50% MFU
    flops_124m = 6 * 124_475_904 + 12 * 12 * 768 * 1024
    assert model_flops_utilization(flops_124m, 4.6e6, 989e12, 8) == pytest.approx(0.5, rel=0.02)
    assert model_flops_utilization(per_token, 1000, None) is None


def test_cpu_has_no_peak_unless_given():
    assert device_peak_flops(torch.device("cpu")) is None
    assert device_peak_flops(torch.device("cpu"), override=1e12) == 1e12
