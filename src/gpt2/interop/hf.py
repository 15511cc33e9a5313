"""Hugging Face ``transformers`` GPT-2 <-> our GPT.

The two models compute the same function; only the storage differs:

* HF's GPT-2 uses ``Conv1D`` layers whose weight is stored (in_features, out_features),
  the transpose of ``nn.Linear``'s (out, in). Four matrices per block are affected.
* HF keeps the real vocabulary (50257 rows); models we train pad it to 50304 for speed.
  The padding rows are never a real token, so export drops them and import keeps 50257.
* Both tie ``lm_head.weight`` to ``transformer.wte.weight``; it is stored once.

``transformers`` is an optional dependency (``pip install gpt2-from-scratch[hf]``) and is
only imported when loading through it. Export writes the files by hand (safetensors + JSON),
so it needs no ``transformers`` at all.
"""

from __future__ import annotations

import re
import shutil
import time
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from gpt2.config import GPT2_VOCAB_SIZE, GPTConfig
from gpt2.errors import GPT2Error
from gpt2.interop.state_dict import (
    ATTENTION_BUFFER_SUFFIXES,
    check_tied_head,
    drop_attention_buffers,
    transpose_conv1d,
    transpose_shapes,
)
from gpt2.model import GPT
from gpt2.store.checkpoint import CHECKPOINT_FORMAT, model_from_state_dict
from gpt2.store.files import atomic_directory, read_json_object, write_json_atomic
from gpt2.store.tensors import (
    check_float_dtypes,
    check_shapes,
    read_safetensors,
    safetensors_header,
    safetensors_metadata,
)
from gpt2.tokenizer import EOT_ID, EOT_TOKEN, bpe_files

LAYER_NORM_EPS = 1e-5  # nn.LayerNorm's default, which our model uses
# Both names denote the tanh approximation of GELU that GPT-2 was trained with (our MLP's activation).
SUPPORTED_ACTIVATIONS = ("gelu_new", "gelu_pytorch_tanh")


def config_from_hf(hf: dict[str, Any], source: str) -> GPTConfig:
    """Our GPTConfig for an HF GPT-2 config dict; a GPT2Error for settings our model does not implement."""
    if hf.get("model_type") != "gpt2":
        raise GPT2Error(f"{source}: model_type is {hf.get('model_type')!r}, only GPT-2 ('gpt2') models can be imported")
    n_embd: Any = hf.get("n_embd")  # unvalidated JSON: GPTConfig checks it
    unsupported = {
        "activation_function": (hf.get("activation_function", "gelu_new"), SUPPORTED_ACTIVATIONS),
        "scale_attn_weights": (hf.get("scale_attn_weights", True), (True,)),
        "scale_attn_by_inverse_layer_idx": (hf.get("scale_attn_by_inverse_layer_idx", False), (False,)),
        "add_cross_attention": (hf.get("add_cross_attention", False), (False,)),
        "tie_word_embeddings": (hf.get("tie_word_embeddings", True), (True,)),
        "layer_norm_epsilon": (hf.get("layer_norm_epsilon", LAYER_NORM_EPS), (LAYER_NORM_EPS,)),
        "n_inner": (hf.get("n_inner"), (None, 4 * n_embd if isinstance(n_embd, int) else None)),
    }
    for key, (value, allowed) in unsupported.items():
        if value not in allowed:
            raise GPT2Error(f"{source}: unsupported GPT-2 setting {key}={value!r} (supported: {list(allowed)})")
    # resid/embd/attn_pdrop are left out on purpose: the hub's GPT-2 configs carry OpenAI's pre-training 0.1,
    # which would silently turn dropout on for every fine-tune; --dropout sets it instead.
    try:
        return GPTConfig(
            block_size=hf["n_positions"],
            vocab_size=hf["vocab_size"],
            n_layer=hf["n_layer"],
            n_head=hf["n_head"],
            n_embd=n_embd,
        )
    except KeyError as exc:
        raise GPT2Error(f"{source}: GPT-2 config has no {exc.args[0]!r}") from None
    except GPT2Error as exc:
        raise GPT2Error(f"{source}: {exc}") from None


def model_from_hf_state(config: GPTConfig, state: dict[str, torch.Tensor], source: str) -> GPT:
    """Our GPT from an HF ``GPT2LMHeadModel`` state dict (Conv1D layout, optional buffers and tied head)."""
    state = check_tied_head(drop_attention_buffers(state), source)
    return model_from_state_dict(config, transpose_conv1d(state), source)


# A hub id is ``name`` or ``owner/name`` of letters, digits, ``-``, ``_`` and ``.`` (huggingface_hub's rule).
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*(/[\w.-]+)?")


def is_local_path(spec: str) -> bool:
    """True for what can only mean a local path, never a hub name such as ``gpt2`` or ``owner/name``: it exists,
    starts with ``.``, ``/`` or ``~``, is no hub id (``a/b/c``, a backslash, a space) or sits in a local
    directory (``runs/dmeo`` beside ``runs/``). Such a spec fails at once instead of going to the hub."""
    path = Path(spec).expanduser()  # ".", "/" and "~" cannot start a hub id
    return path.exists() or not _HUB_ID.fullmatch(spec) or ("/" in spec and path.parent.is_dir())


def _hub_unreachable() -> str | None:
    """Why the Hugging Face Hub cannot be asked, or None when it answers; asked twice with a short timeout
    (huggingface_hub's own backoff retries an unreachable hub for ~25 s before giving up)."""
    from huggingface_hub import constants
    from huggingface_hub.utils import get_session

    if constants.HF_HUB_OFFLINE:
        return "HF_HUB_OFFLINE is set"
    for attempt in range(2):  # one short retry
        try:
            get_session().head(constants.ENDPOINT, timeout=5)
            return None
        except Exception:  # the HTTP client's own errors (httpx or requests, by huggingface_hub version)
            time.sleep(1 - attempt)
    return f"no answer from {constants.ENDPOINT}, asked twice"


def _load_transformers():
    try:
        import transformers
    except ImportError:
        raise GPT2Error("loading Hugging Face models needs transformers: pip install 'gpt2-from-scratch[hf]'") from None
    return transformers


HF_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")  # what save_pretrained writes (new, old)


def _hf_key(key: str) -> str:
    # A saved GPT2Model (the hub's gpt2) has no "transformer." prefix; GPT2LMHeadModel has one.
    return key if key.startswith(("transformer.", "lm_head.")) else f"transformer.{key}"


def hf_weight_files(path: Path) -> list[Path]:
    """The weight files of a local HF directory: ``model.safetensors`` / ``pytorch_model.bin``, or the shards that
    their ``*.index.json`` lists (``save_pretrained`` shards models over 5 GB, e.g. gpt2-xl in fp32)."""
    for name in HF_WEIGHT_FILES:
        if (path / name).is_file():
            return [path / name]
        index = path / f"{name}.index.json"
        if index.is_file():
            weight_map = read_json_object(index, "weights index").get("weight_map")
            files = sorted(set(weight_map.values())) if isinstance(weight_map, dict) else []
            if not files or not all(isinstance(f, str) and Path(f).name == f for f in files):
                raise GPT2Error(f"corrupt weights index {index}: expected a weight_map of file names in {path}")
            return [path / f for f in files]
    raise GPT2Error(f"cannot load Hugging Face model from {path}: no {' or '.join(HF_WEIGHT_FILES)}")


def read_hf_weights(path: Path, config: GPTConfig) -> dict[str, torch.Tensor]:
    """The tensors of a local HF GPT-2 directory, in our key names (Conv1D layout kept), read without transformers.

    safetensors weights are checked against ``config`` from their headers before any data is read; an old
    ``pytorch_model.bin`` is read with ``torch.load(weights_only=True)`` after the zip-bomb and pickle checks
    of :func:`gpt2.interop.nanogpt.read_pt`, so a hostile file is refused with one line and never runs.
    """
    from gpt2.interop.nanogpt import read_pt

    files = hf_weight_files(path)
    state: dict[str, torch.Tensor] = {}
    if files[0].suffix == ".safetensors":
        shapes, dtypes = {}, {}
        for file in files:
            file_shapes, file_dtypes = safetensors_header(file)
            shapes.update(file_shapes)
            dtypes.update(file_dtypes)
        shapes = drop_attention_buffers({_hf_key(k): v for k, v in shapes.items()})
        check_float_dtypes({k: v for k, v in dtypes.items() if not k.endswith(ATTENTION_BUFFER_SUFFIXES)}, str(path))
        check_shapes(transpose_shapes(shapes), config, str(files[0] if len(files) == 1 else path))
        for file in files:
            state.update(read_safetensors(file))
    else:
        for file in files:
            part = read_pt(file)
            if not isinstance(part, dict) or not all(isinstance(v, torch.Tensor) for v in part.values()):
                raise GPT2Error(f"{file}: expected a state dict of tensors")
            state.update(part)
    return {_hf_key(k): v for k, v in state.items()}


def load_hf_model(src: str, device: torch.device | str = "cpu") -> GPT:
    """Load a GPT-2 from a local HF directory or a hub name (``gpt2``, ``openai-community/gpt2-xl``).

    A local directory is read directly (no ``transformers`` needed); a hub name goes through
    ``transformers`` (the download and its cache). Weights are converted exactly (fp32, vocab kept at
    the checkpoint's 50257). Returns the model in eval mode on ``device``.
    """
    if is_local_path(src):
        path = Path(src).expanduser()
        if not path.exists():
            raise GPT2Error(f"Hugging Face model directory not found: {src}")
        if not (path / "config.json").is_file():
            raise GPT2Error(f"{src}: not a Hugging Face model directory (no config.json)")
        hf_config = read_json_object(path / "config.json", "Hugging Face config")
        if hf_config.get("format") == CHECKPOINT_FORMAT:
            raise GPT2Error(f"{src} is already a {CHECKPOINT_FORMAT} checkpoint; load it directly, no import needed")
        config = config_from_hf(hf_config, src)  # fail fast, before reading any weights
        return model_from_hf_state(config, read_hf_weights(path, config), src).to(device).eval()
    transformers = _load_transformers()

    def from_hub(cache_only: bool) -> tuple[GPTConfig, Any]:  # the config first: fail before the weights
        config = transformers.AutoConfig.from_pretrained(src, local_files_only=cache_only).to_dict()
        return config_from_hf(config, src), transformers.GPT2LMHeadModel.from_pretrained(
            src, dtype=torch.float32, local_files_only=cache_only
        )

    try:
        try:
            config, hf_model = from_hub(cache_only=True)  # the HF cache, without the network
        except OSError:
            if problem := _hub_unreachable():
                raise OSError(f"not in the HF cache, and {problem}") from None
            config, hf_model = from_hub(cache_only=False)  # the real hub code path: downloads into the HF cache
    except (OSError, ValueError) as exc:
        raise GPT2Error(
            f"cannot load {src!r} from the Hugging Face Hub: the hub is unreachable or the model does not exist "
            f"({str(exc).splitlines()[0]}), and there is no local directory {src!r}. "
            "To use a local copy, pass its directory: gpt2 import hf PATH --out DIR"
        ) from None
    model = model_from_hf_state(config, hf_model.state_dict(), src)
    return model.to(device).eval()


def hf_config_dict(config: GPTConfig) -> dict[str, Any]:
    """config.json of the HF ``GPT2LMHeadModel`` equivalent to ``config`` (vocab trimmed to 50257)."""
    return {
        "architectures": ["GPT2LMHeadModel"],
        "model_type": "gpt2",
        "vocab_size": GPT2_VOCAB_SIZE,
        "n_positions": config.block_size,
        "n_ctx": config.block_size,
        "n_embd": config.n_embd,
        "n_layer": config.n_layer,
        "n_head": config.n_head,
        "n_inner": None,
        "activation_function": "gelu_new",
        "layer_norm_epsilon": LAYER_NORM_EPS,
        "initializer_range": 0.02,
        # our one dropout rate (0 unless trained with --dropout) sits at the same three places as HF's
        "resid_pdrop": config.dropout,
        "embd_pdrop": config.dropout,
        "attn_pdrop": config.dropout,
        "scale_attn_weights": True,
        "scale_attn_by_inverse_layer_idx": False,
        "reorder_and_upcast_attn": False,
        "tie_word_embeddings": True,
        "bos_token_id": EOT_ID,
        "eos_token_id": EOT_ID,
        "use_cache": True,
        "dtype": "float32",
    }


def hf_state_dict(model: GPT) -> dict[str, torch.Tensor]:
    """HF ``GPT2LMHeadModel`` tensors of ``model``: Conv1D layout, 50257 vocab rows, tied head stored once."""
    state = {k: v.detach().float().cpu() for k, v in model.state_dict().items() if k != "lm_head.weight"}
    # Rows >= 50257 only exist for speed (padding); no token id ever selects them.
    state["transformer.wte.weight"] = state["transformer.wte.weight"][:GPT2_VOCAB_SIZE]
    return {k: v.contiguous() for k, v in transpose_conv1d(state).items()}


def write_tokenizer_files(directory: Path, model_max_length: int) -> None:
    """The GPT-2 tokenizer in HF's layout: vocab.json (= encoder.json), merges.txt (= vocab.bpe), configs."""
    vocab_bpe, encoder_json = bpe_files()
    shutil.copyfile(encoder_json, directory / "vocab.json")
    shutil.copyfile(vocab_bpe, directory / "merges.txt")
    special = {"bos_token": EOT_TOKEN, "eos_token": EOT_TOKEN, "unk_token": EOT_TOKEN}
    tokenizer_config = {
        "tokenizer_class": "GPT2Tokenizer",
        "model_max_length": model_max_length,
        "add_prefix_space": False,
        "add_bos_token": False,
        **special,
    }
    write_json_atomic(directory / "tokenizer_config.json", tokenizer_config, sort_keys=False)
    write_json_atomic(directory / "special_tokens_map.json", special, sort_keys=False)
    _write_fast_tokenizer(directory / "tokenizer.json", vocab_bpe, encoder_json)


def _write_fast_tokenizer(path: Path, vocab_bpe: Path, encoder_json: Path) -> None:
    """tokenizer.json (the ``tokenizers`` format, as on the hub's gpt2) when the library is installed.

    Optional: AutoTokenizer can rebuild it from vocab.json + merges.txt, but that conversion takes seconds.
    """
    try:
        from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors
    except ImportError:
        return
    tokenizer = Tokenizer(models.BPE.from_file(str(encoder_json), str(vocab_bpe)))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)  # GPT-2: bytes -> unicode + regex
    tokenizer.post_processor = processors.ByteLevel(trim_offsets=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.add_special_tokens([AddedToken(EOT_TOKEN, special=True)])
    tokenizer.save(str(path))


def is_hf_export(path: str | Path) -> bool:
    """True for a directory that :func:`export_hf` wrote (its weights' metadata name this project)."""
    try:
        return safetensors_metadata(Path(path) / "model.safetensors").get("exported_by") == CHECKPOINT_FORMAT
    except GPT2Error:  # no or unreadable weights: not ours
        return False


def export_hf(model: GPT, out: str | Path) -> Path:
    """Write ``model`` as a Hugging Face GPT-2 directory at ``out`` (atomically; replaces ``out``).

    ``GPT2LMHeadModel.from_pretrained(out)`` and ``AutoTokenizer.from_pretrained(out)`` load it offline.
    """
    with atomic_directory(out) as tmp:
        metadata = {"format": "pt", "exported_by": CHECKPOINT_FORMAT}  # "pt" for transformers; ours for --force
        save_file(hf_state_dict(model), str(tmp / "model.safetensors"), metadata=metadata)
        write_json_atomic(tmp / "config.json", hf_config_dict(model.config), sort_keys=False)
        write_json_atomic(
            tmp / "generation_config.json", {"bos_token_id": EOT_ID, "eos_token_id": EOT_ID}, sort_keys=False
        )
        write_tokenizer_files(tmp, model.config.block_size)
    return Path(out)
