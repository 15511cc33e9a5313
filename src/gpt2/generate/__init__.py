"""Text generation with a KV cache: ``gpt2.generate.decode`` (the one decode loop: the text API, and the batch the
server steps), ``gpt2.generate.sampling`` (options, limits and filters), ``gpt2.generate.text`` (token ids to
text, stop strings), ``gpt2.generate.cli`` (``gpt2 sample``).

    from gpt2.generate import generate, stream
    texts = generate(model, "Hello, I'm a language model,", max_new_tokens=32, num_samples=2, seed=42)

Names resolve on first use, so ``gpt2 sample --help`` does not import torch.
"""

from gpt2._lazy import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(
    __name__,
    {
        "gpt2.generate.decode": (
            "SLIDE_KEEP_FRACTION",
            "GenerationNotice",
            "decode_steps",
            "fit_prompt",
            "generate",
            "generate_token_ids",
            "stream",
            "stream_samples",
        ),
        "gpt2.generate.text": ("TextAssembler",),
    },
)
