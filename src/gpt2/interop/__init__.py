"""Import weights from Hugging Face / nanoGPT, export to Hugging Face / GGUF.

    gpt2 import hf SRC --out DIR           # SRC: local HF GPT-2 directory or hub name (gpt2, gpt2-xl, ...)
    gpt2 import nanogpt FILE.pt --out DIR  # seed / build-nanogpt / nanoGPT checkpoint, read without running pickles
    gpt2 export CKPT --format hf --out HFDIR
    gpt2 export CKPT --format gguf --out FILE.gguf [--quant f32|f16|q8_0]

Imports write our checkpoint format (safetensors + JSON); the export directory loads with
``transformers.GPT2LMHeadModel.from_pretrained`` and ``AutoTokenizer.from_pretrained`` offline; the GGUF file
loads in llama.cpp (and Ollama, LM Studio).
"""

from gpt2._lazy import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(
    __name__,
    {
        "gpt2.interop.gguf": ("export_gguf",),
        "gpt2.interop.hf": ("export_hf", "load_hf_model"),
        "gpt2.interop.nanogpt": ("import_nanogpt", "load_nanogpt_checkpoint"),
    },
)
