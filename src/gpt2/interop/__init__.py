"""Import weights from Hugging Face / nanoGPT, export to Hugging Face.

    gpt2 import hf SRC --out DIR           # SRC: local HF GPT-2 directory or hub name (gpt2, gpt2-xl, ...)
    gpt2 import nanogpt FILE.pt --out DIR  # seed / build-nanogpt / nanoGPT checkpoint, read without running pickles
    gpt2 export CKPT --format hf --out HFDIR

Imports write our checkpoint format (safetensors + JSON); the export directory loads with
``transformers.GPT2LMHeadModel.from_pretrained`` and ``AutoTokenizer.from_pretrained`` offline.
"""

from typing import TYPE_CHECKING

from gpt2._lazy import lazy_exports

_EXPORTS = {
    "export_hf": "gpt2.interop.hf",
    "load_hf_model": "gpt2.interop.hf",
    "import_nanogpt": "gpt2.interop.nanogpt",
    "load_nanogpt_checkpoint": "gpt2.interop.nanogpt",
}
__all__ = list(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

if TYPE_CHECKING:
    from gpt2.interop.hf import export_hf, load_hf_model  # noqa: F401
    from gpt2.interop.nanogpt import import_nanogpt, load_nanogpt_checkpoint  # noqa: F401
