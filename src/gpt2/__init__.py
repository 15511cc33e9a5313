"""GPT-2 from scratch: model, tokenizer, data, training, evaluation, generation and a web app.

The public API most users need::

    import gpt2
    model = gpt2.GPT(gpt2.GPTConfig.named("124M"))
    model = gpt2.load("runs/demo/run")      # our checkpoint / run dir / HF dir / hub name
    tok = gpt2.get_tokenizer()

The names are resolved lazily (on first use), so ``import gpt2``, ``import gpt2.errors`` and
``gpt2 --help`` do not import torch.
"""

from gpt2._lazy import lazy_exports

__version__ = "0.1.0"

__getattr__, __dir__, __all__ = lazy_exports(
    __name__,
    {
        "gpt2.config": ("CONFIGS", "GPTConfig"),
        "gpt2.errors": ("GPT2Error",),
        "gpt2.model": ("GPT",),
        "gpt2.store.checkpoint": ("save_model",),
        "gpt2.store.load": ("load",),
        "gpt2.tokenizer": ("get_tokenizer",),
    },
)
