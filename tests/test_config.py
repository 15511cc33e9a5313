import pytest

from gpt2 import GPT2Error, GPTConfig
from gpt2.config import CONFIGS


def test_named_and_aliases():
    assert GPTConfig.named("gpt2") == GPTConfig.named("124M")
    assert GPTConfig.named("gpt2-xl").n_embd == 1600
    assert set(CONFIGS) >= {"124M", "350M", "774M", "1558M", "tiny", "mini"}


def test_unknown_name_is_clear_error():
    with pytest.raises(GPT2Error, match="unknown model size 'huge'"):
        GPTConfig.named("huge")


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"n_embd": 100, "n_head": 3}, "divisible"),
        ({"vocab_size": 1000}, "at least 50257"),
        ({"n_layer": 0}, "positive"),
    ],
)
def test_invalid_configs_rejected(kwargs, message):
    with pytest.raises(GPT2Error, match=message):
        GPTConfig(**kwargs)
