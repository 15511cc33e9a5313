"""Export to GGUF, the single-file format of llama.cpp (and Ollama, LM Studio), with the ``gguf`` package.

What llama.cpp's GPT-2 loader reads (its ``convert_hf_to_gguf.py`` GPT2Model writes the same):

* keys: ``gpt2.block_count``, ``context_length``, ``embedding_length``, ``feed_forward_length`` (4 * n_embd),
  ``attention.head_count`` and ``attention.layer_norm_epsilon``; the tokenizer as ``tokenizer.ggml.*``:
  model ``gpt2`` (byte-level BPE), pre-tokenizer ``gpt-2``, the 50,257 token strings, their types, the
  50,000 merges, and <|endoftext|> as bos/eos.
* tensors: the ``gguf`` package's GPT-2 name map (``transformer.h.0.attn.c_attn`` -> ``blk.0.attn_qkv``).
  llama.cpp wants the ``nn.Linear`` (out, in) layout, which is ours (convert_hf_to_gguf transposes HF's
  Conv1D back to it). The tied head is not written: without ``output.weight`` llama.cpp reuses
  ``token_embd.weight``. Only the 50,257 real vocabulary rows are written (we pad to 50,304 for speed).
* types, as convert_hf_to_gguf picks them: f16 / q8_0 apply to 2-D ``.weight`` matrices except the position
  embedding; norms, biases and ``position_embd`` stay f32. Q8_0 stores blocks of 32 values as int8 with one
  f16 scale; a matrix whose rows are not a multiple of 32 falls back to f16, as in llama.cpp.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from gpt2.config import GPT2_VOCAB_SIZE
from gpt2.errors import GPT2Error
from gpt2.interop.hf import LAYER_NORM_EPS
from gpt2.model import GPT
from gpt2.store.files import atomic_output
from gpt2.tokenizer import EOT_ID, bpe_files

# --quant -> the GGUF file type llama.cpp reports (the type of most of its weights)
FILE_TYPES = {"f32": "ALL_F32", "f16": "MOSTLY_F16", "q8_0": "MOSTLY_Q8_0"}


def check_quant(quant: str) -> str:
    if quant not in FILE_TYPES:
        raise GPT2Error(f"unknown GGUF quantisation {quant!r}; choose one of {', '.join(FILE_TYPES)}")
    return quant


def _gguf():
    try:
        import gguf
    except ImportError:
        raise GPT2Error("GGUF export needs the gguf package: pip install 'gpt2-from-scratch[gguf]'") from None
    return gguf


def _vocabulary(gguf) -> tuple[list[str], list[int], list[str]]:
    """(tokens by id, token types, merges) of the GPT-2 BPE: encoder.json's byte-level strings and vocab.bpe's
    merge lines (the same two files HF ships as vocab.json and merges.txt)."""
    vocab_bpe, encoder_json = bpe_files()
    ids = json.loads(encoder_json.read_text(encoding="utf-8"))  # hash-checked: ids 0..50256, EOT last
    tokens = sorted(ids, key=ids.__getitem__)
    types = [gguf.TokenType.NORMAL] * GPT2_VOCAB_SIZE
    types[EOT_ID] = gguf.TokenType.CONTROL  # a special token: never produced by the BPE from text
    lines = vocab_bpe.read_text(encoding="utf-8").splitlines()
    merges = [line for line in lines[1:] if line]  # line 0 is the "#version: 0.2" header
    return tokens, types, merges


def _quant_type(gguf, name: str, array: np.ndarray, quant: str):
    """The GGML type this tensor is stored as under ``--quant quant`` (convert_hf_to_gguf's rule, see above)."""
    matrix = array.ndim == 2 and name.endswith(".weight") and not name.startswith("position_embd")
    if quant == "f32" or not matrix:
        return gguf.GGMLQuantizationType.F32
    if quant == "q8_0" and array.shape[1] % gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType.Q8_0][0] == 0:
        return gguf.GGMLQuantizationType.Q8_0
    return gguf.GGMLQuantizationType.F16


def _tensors(gguf, model: GPT, quant: str) -> dict[str, tuple[np.ndarray, object]]:
    """llama.cpp name -> (data as stored, GGML type) for every tensor of ``model`` (tied head left out)."""
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.GPT2, model.config.n_layer)
    out = {}
    for key, tensor in model.state_dict().items():
        if key == "lm_head.weight":
            continue  # tied to the token embedding; llama.cpp falls back to token_embd.weight
        name = names.get_name(key, try_suffixes=(".weight", ".bias"))
        if name is None:
            raise GPT2Error(f"no GGUF name for tensor {key}")
        array = tensor.detach().float().cpu().numpy()
        if key == "transformer.wte.weight":
            array = array[:GPT2_VOCAB_SIZE]  # padding rows are never a token
        qtype = _quant_type(gguf, name, array, quant)
        if qtype == gguf.GGMLQuantizationType.F16:
            array = array.astype(np.float16)
        elif qtype == gguf.GGMLQuantizationType.Q8_0:
            array = gguf.quants.quantize(array, qtype)
        out[name] = (np.ascontiguousarray(array), qtype)
    return out


def export_gguf(model: GPT, out: str | Path, quant: str = "f32", name: str = "gpt2") -> Path:
    """Write ``model`` as one GGUF file at ``out`` (atomically; replaces ``out``) that llama.cpp loads as GPT-2."""
    gguf = _gguf()
    tensors = _tensors(gguf, model, check_quant(quant))
    cfg = model.config
    tokens, types, merges = _vocabulary(gguf)
    with atomic_output(out) as tmp:
        writer = gguf.GGUFWriter(tmp, gguf.MODEL_ARCH_NAMES[gguf.MODEL_ARCH.GPT2])
        writer.add_name(name)
        writer.add_block_count(cfg.n_layer)
        writer.add_context_length(cfg.block_size)
        writer.add_embedding_length(cfg.n_embd)
        writer.add_feed_forward_length(4 * cfg.n_embd)
        writer.add_head_count(cfg.n_head)
        writer.add_layer_norm_eps(LAYER_NORM_EPS)
        writer.add_file_type(gguf.LlamaFileType[FILE_TYPES[quant]])
        writer.add_tokenizer_model("gpt2")
        writer.add_tokenizer_pre("gpt-2")
        writer.add_token_list(tokens)
        writer.add_token_types(types)
        writer.add_token_merges(merges)
        writer.add_bos_token_id(EOT_ID)
        writer.add_eos_token_id(EOT_ID)
        writer.add_add_bos_token(False)  # GPT-2 prompts start without <|endoftext|>, as our sampler feeds them
        for tensor_name, (array, qtype) in tensors.items():
            writer.add_tensor(tensor_name, array, raw_dtype=qtype)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
    return Path(out)
