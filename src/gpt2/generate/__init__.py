"""Text generation with a KV cache: ``gpt2.generate.decode`` (the one decode loop: the text API, and the batch the
server steps), ``gpt2.generate.sampling`` (options, limits and filters), ``gpt2.generate.text`` (token ids to
text, stop strings), ``gpt2.generate.cli`` (``gpt2 sample``).

    from gpt2.generate import generate, stream
    texts = generate(model, "Hello, I'm a language model,", max_new_tokens=32, num_samples=2, seed=42)

Names resolve on first use, so ``gpt2 sample --help`` does not import torch.
"""

from typing import TYPE_CHECKING

from gpt2._lazy import lazy_exports

if TYPE_CHECKING:  # the exports; at run time imported on first use (gpt2._lazy)
    from gpt2.generate.decode import (  # noqa: F401
        SLIDE_KEEP_FRACTION,
        GenerationNotice,
        decode_steps,
        fit_prompt,
        generate,
        generate_token_ids,
        stream,
        stream_samples,
    )
    from gpt2.generate.text import TextAssembler  # noqa: F401

__getattr__, __dir__, __all__ = lazy_exports(__name__)
