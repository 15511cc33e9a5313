"""GPT-2 from scratch: model, tokenizer, data, training, evaluation, generation and a web app.

The public API most users need::

    import gpt2
    model = gpt2.GPT(gpt2.GPTConfig.named("124M"))
    model = gpt2.load("runs/demo")          # our checkpoint / run dir / HF dir / hub name
    tok = gpt2.get_tokenizer()
"""

from gpt2.checkpoint import save_model
from gpt2.config import CONFIGS, GPTConfig
from gpt2.errors import GPT2Error
from gpt2.loading import load
from gpt2.model import GPT
from gpt2.tokenizer import get_tokenizer

__version__ = "0.1.0"
__all__ = ["CONFIGS", "GPT", "GPT2Error", "GPTConfig", "get_tokenizer", "load", "save_model", "__version__"]
