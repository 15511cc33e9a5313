"""The initial model of a run: fresh weights, or pretrained ones for fine-tuning (``gpt2 train --init-from SRC``).

Fine-tuning takes only the weights of SRC (anything :func:`gpt2.store.load.load` accepts); the optimizer,
the schedule and the data position start fresh. The run's model has SRC's shape (``build_config`` refuses a
different one) with two changes that keep the weights valid: a shorter context (the position embedding
rows past it are cropped, as nanoGPT's ``crop_block_size``) and the run's dropout rate (no weights).

The vocabulary is kept as SRC has it. A Hugging Face GPT-2 has 50,257 rows; padding to 50,304 would add
rows whose logits (0 for zero rows, next to GPT-2's typical -30..-100) enter every softmax and change the
model's predictions until training pushed them down. Kept, the first loss is exactly SRC's, and export /
evaluation stay equal to the HF model's logits; the cost is the padding's few % of matmul speed.

``--init-layers 0,2,4`` keeps only those blocks of SRC (renumbered 0, 1, 2; embeddings and the final norm are kept
whole): DistilGPT2 started its 6-layer student from every other layer of GPT-2's 12 (Sanh et al. 2019), the usual
start for ``--distill-from`` (gpt2.train.distill).

A run directory that already has a checkpoint resumes that run: SRC only seeds a new one, is not read
again (a requeued job resumes even when SRC is gone), and the model shape comes from the checkpoint.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gpt2.config import GPTConfig
from gpt2.errors import GPT2Error
from gpt2.model import GPT
from gpt2.store.checkpoint import find_checkpoint, model_from_state_dict, read_config, read_meta
from gpt2.store.load import TORCH_FILE_SUFFIXES, load
from gpt2.store.rundir import find_resume_checkpoint
from gpt2.train.config import TrainConfig, option_name
from gpt2.train.recipes import build_config


@dataclass
class InitSource:
    """Pretrained weights to start from: ``spec`` as given, the loaded ``model`` (CPU, eval mode), and
    ``record``, what run.json and every checkpoint's meta.json keep about it (spec, resolved checkpoint,
    and what the source says about itself: step, tokens, val_loss, ... when it has any)."""

    spec: str
    model: GPT
    record: dict[str, Any]


def _source_record(spec: str, meta: dict[str, Any]) -> dict[str, Any]:
    """Where the weights of ``spec`` come from: the checkpoint a run directory points to, and its metadata."""
    path = Path(spec)
    record: dict[str, Any] = {"spec": spec}
    checkpoint = None
    if path.is_dir():
        checkpoint = find_checkpoint(path)
        record["path"] = str(path.resolve())
    elif path.is_file():
        record["path"] = str(path.resolve())
    if checkpoint is not None:
        record["checkpoint"] = str(checkpoint.resolve())
        meta = read_meta(checkpoint)
    record["meta"] = meta
    return record


def load_init_source(spec: str) -> InitSource:
    """Load the weights ``--init-from spec`` names; any failure is one GPT2Error naming the option."""
    try:
        path = Path(spec)
        meta: dict[str, Any] = {}
        if path.is_file() and path.suffix in TORCH_FILE_SUFFIXES:
            from gpt2.interop.nanogpt import import_nanogpt

            model, meta = import_nanogpt(path)  # the weights and what the file says about them (step, val_loss)
            model.eval()
        else:
            model = load(spec)
        return InitSource(spec, model, _source_record(spec, meta))
    except GPT2Error as exc:
        raise GPT2Error(f"{option_name('init_from')} {spec}: {exc}") from None


def parse_layers(text: str | None, n_layer: int) -> list[int] | None:
    """The blocks ``--init-layers`` names ("0,2,4": distinct, each in [0, n_layer)); None (all) when not given."""
    if text is None:
        return None
    try:
        layers = [int(part) for part in text.split(",")]
    except ValueError:
        layers = []
    if not layers or len(set(layers)) != len(layers) or not all(0 <= i < n_layer for i in layers):
        raise GPT2Error(
            f"{option_name('init_layers')} must list distinct blocks of the source, each in 0..{n_layer - 1} "
            f"(e.g. 0,2,4), got {text!r}"
        )
    return layers


def with_layers(config: GPTConfig, layers: list[int] | None) -> GPTConfig:
    """``config`` with as many blocks as ``layers`` names (unchanged for None)."""
    return config if layers is None else dataclasses.replace(config, n_layer=len(layers))


def fit_model(source: InitSource, config: GPTConfig, layers: list[int] | None = None) -> GPT:
    """A GPT of ``config`` (the run's) holding the weights of ``source``, in training mode.

    ``config`` must be the source's shape with at most a shorter ``block_size``, any ``dropout`` and, given
    ``layers``, that many blocks: the source's blocks ``layers``, renumbered from 0. The first ``block_size``
    position embeddings are kept. The new model takes over the source's tensors (no copy of a possibly multi-GB
    model): ``source.model`` must not be used afterwards.
    """
    have = with_layers(source.model.config, layers)
    if (config.n_layer, config.n_head, config.n_embd, config.vocab_size) != (
        have.n_layer,
        have.n_head,
        have.n_embd,
        have.vocab_size,
    ) or config.block_size > have.block_size:
        raise GPT2Error(f"{option_name('init_from')} {source.spec}: the weights ({have}) do not fit the run's {config}")
    state = {k: v.detach() for k, v in source.model.state_dict().items()}
    if layers is not None:  # block `old` of the source becomes block `new`
        blocks = {k: state.pop(k) for k in [k for k in state if k.startswith("transformer.h.")]}
        for new, old in enumerate(layers):
            prefix = f"transformer.h.{old}."
            state.update(
                {k.replace(prefix, f"transformer.h.{new}.", 1): v for k, v in blocks.items() if k.startswith(prefix)}
            )
    state["transformer.wpe.weight"] = state["transformer.wpe.weight"][: config.block_size].contiguous()
    return model_from_state_dict(config, state, source.spec).train()


def initial_model(
    config: TrainConfig, resuming: bool, model: GPT | None = None, source: InitSource | None = None
) -> tuple[GPT, dict[str, Any] | None]:
    """The model a run starts with (before any checkpoint is restored) and the record of its weights' source.

    ``model`` given: that one. Else with ``config.init_from`` and not ``resuming``: ``source`` (loaded now
    when not given) fitted to ``config.model``. Else a fresh random init of ``config.model`` (the caller
    seeds torch first). Resuming, the checkpoint overwrites the weights, so SRC is not read.
    """
    if model is not None:
        return model, source.record if source is not None else None
    if config.init_layers is not None and not config.init_from:
        raise GPT2Error(f"{option_name('init_layers')} needs {option_name('init_from')} (the blocks to take)")
    if config.init_from and not resuming:
        source = source or load_init_source(config.init_from)
        layers = parse_layers(config.init_layers, source.model.config.n_layer)
        record = source.record if layers is None else {**source.record, "layers": layers}
        return fit_model(source, config.model, layers), record
    return GPT(config.model), None


def resolve_config(options: dict[str, Any], device_type: str) -> tuple[TrainConfig, InitSource | None]:
    """:func:`gpt2.train.recipes.build_config` for options that may hold ``init_from``; returns the config and
    the loaded source (None when there is none, or the run resumes: then the checkpoint gives the shape).

    Reads only: a bad source fails here, before the run directory is created.
    """
    spec = options.get("init_from")
    if not spec:
        return build_config(options, device_type), None
    run_dir = Path(options.get("out") or TrainConfig.out)
    resume_from = find_resume_checkpoint(run_dir, options.get("resume"))
    if resume_from is not None:
        return build_config(options, device_type, read_config(resume_from)), None
    source = load_init_source(spec)
    layers = parse_layers(options.get("init_layers"), source.model.config.n_layer)
    return build_config(options, device_type, with_layers(source.model.config, layers)), source
