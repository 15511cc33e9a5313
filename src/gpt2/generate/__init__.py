"""Text generation with a KV cache: ``gpt2.generate.decode`` (the loop and the text API), ``gpt2.generate.cli``
(``gpt2 sample``).

    from gpt2.generate import generate, stream
    texts = generate(model, "Hello, I'm a language model,", max_new_tokens=32, num_samples=2, seed=42)

Names resolve on first use, so ``gpt2 sample --help`` does not import torch.
"""

from typing import TYPE_CHECKING

from gpt2._lazy import lazy_exports

_EXPORTS = dict.fromkeys(
    (
        "SLIDE_KEEP_FRACTION",
        "GenerationNotice",
        "TextAssembler",
        "fit_prompt",
        "generate",
        "generate_token_ids",
        "stream",
        "stream_samples",
    ),
    "gpt2.generate.decode",
)
__all__ = list(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

if TYPE_CHECKING:
    from gpt2.generate.decode import (  # noqa: F401
        SLIDE_KEEP_FRACTION,
        GenerationNotice,
        TextAssembler,
        fit_prompt,
        generate,
        generate_token_ids,
        stream,
        stream_samples,
    )
