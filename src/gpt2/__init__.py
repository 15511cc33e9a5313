"""GPT-2 from scratch: model, tokenizer, data, training, evaluation, generation and a web app.

The public API most users need::

    import gpt2
    model = gpt2.GPT(gpt2.GPTConfig.named("124M"))
    model = gpt2.load("runs/demo/run")      # our checkpoint / run dir / HF dir / hub name
    tok = gpt2.get_tokenizer()

The names are resolved lazily (on first use), so ``import gpt2``, ``import gpt2.errors`` and
``gpt2 --help`` do not import torch.
"""

from typing import TYPE_CHECKING

from gpt2._lazy import lazy_exports

__version__ = "0.1.0"

if TYPE_CHECKING:  # the exports; at run time imported on first use (gpt2._lazy)
    from gpt2.config import CONFIGS, GPTConfig  # noqa: F401
    from gpt2.errors import GPT2Error  # noqa: F401
    from gpt2.model import GPT  # noqa: F401
    from gpt2.store.checkpoint import save_model  # noqa: F401
    from gpt2.store.load import load  # noqa: F401
    from gpt2.tokenizer import get_tokenizer  # noqa: F401

__getattr__, __dir__, __all__ = lazy_exports(__name__)
