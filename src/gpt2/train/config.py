"""Training hyper-parameters: one dataclass that is also the one source of the ``gpt2 train`` options.

Each option is a ``TrainConfig`` field declared with :func:`option`: its type, default, one-line help and
group live in the field (``metadata``), and :mod:`gpt2.train.options` turns them into the command-line
flags and their ``--help`` (tools/docs_options.py into the options table of docs/training.md). Messages name
an option by :func:`option_name`, so they read the same whether a value came from a flag or a ``--config`` file.

The field defaults are the 124M recipe of the seed (build-nanogpt): 2^19-token batches of T=1024, AdamW
beta=(0.9, 0.95), weight decay 0.1, max lr 6e-4 with 715 warmup steps and cosine decay to 10%
over 19,073 steps (~10B tokens), grad clip 1.0. The other recipes, fine-tuning and the precedence
recipe < ``--config`` file < flags are :mod:`gpt2.train.recipes`.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gpt2.config import GPTConfig
from gpt2.errors import GPT2Error
from gpt2.store.files import read_json_object
from gpt2.train.schedule import SCHEDULES
from gpt2.train.tracking import TRACKERS, parse_log_to

DTYPES = ("auto", "bf16", "fp16", "fp32")
OPTIMIZERS = ("adamw", "muon")
QKV_MODES = ("fused", "split")


def option(default: Any, help: str, group: str, **extra: Any) -> Any:
    """A TrainConfig field that is a command-line option.

    ``help`` is the one-line help (the default is appended when rendered); ``group`` one of
    ``gpt2.train.options.GROUPS``. ``extra``: ``choices`` (allowed values), ``metavar``, and
    ``default_text`` (how to show a default that is decided later, e.g. a ``None``).
    """
    return field(default=default, metadata={"help": help, "group": group, **extra})


@dataclass
class TrainConfig:
    """Everything that defines a training run. Token counts are tokens, steps are optimizer steps.

    ``model``, ``size`` and ``recipe`` are not flags of their own: ``--recipe`` / ``--size`` / a ``--config``
    model shape set them. ``None`` for an option means "decided later" (its ``default_text`` says how).
    """

    model: GPTConfig = field(default_factory=lambda: GPTConfig.named("124M"))
    size: str | None = "124M"  # the registry size with the model's layers (None for a custom shape)
    recipe: str = "124M"  # the named recipe the run started from (gpt2.train.recipes.RECIPES)
    data: str = option("edu_fineweb10B", "prepared dataset directory (gpt2 prepare)", "data", metavar="DIR")
    mix: str = option(
        "",
        "train on a mixture: other prepared datasets and their share of the training sequences, e.g. "
        "data/mine:0.1 (--data gets the rest; val loss stays on --data)",
        "data",
        metavar="DIR:W,...",
        default_text="none",
    )
    out: str = option("runs/gpt2", "run directory: checkpoints, metrics.jsonl, run.json", "data", metavar="RUN_DIR")
    init_from: str | None = option(
        None,
        "fine-tune: start from these weights (checkpoint or run dir, HF dir or hub name, nanoGPT .pt); "
        "the shape comes from SRC, the optimizer and schedule start fresh, the fine-tuning defaults apply",
        "data",
        metavar="SRC",
        default_text="random init",
    )
    init_layers: str | None = option(
        None,
        "with --init-from: take only these blocks of SRC, 0-based (DistilGPT2's every other layer: 0,2,4,6,8,10); "
        "n_layer becomes their count",
        "data",
        metavar="LIST",
        default_text="all",
    )
    distill_from: str | None = option(
        None,
        "distil: the student also learns this frozen teacher's next-token distributions (any model source with "
        "the GPT-2 tokenizer)",
        "data",
        metavar="TEACHER",
        default_text="off",
    )
    # optimisation (the seed's 124M recipe)
    optimizer: str = option(
        "adamw",
        "adamw: AdamW on every parameter; muon: Muon on the hidden 2-D matrices, AdamW on the rest",
        "optim",
        choices=OPTIMIZERS,
    )
    steps: int = option(19073, "optimizer steps (at 124M: x 2^19 tokens = 10B, one epoch of sample-10BT)", "optim")
    batch_tokens: int = option(2**19, "tokens per optimizer step, over all micro-steps and ranks", "optim")
    micro_batch: int | None = option(
        None,
        "sequences per forward/backward on one rank",
        "optim",
        default_text="auto: the most that divides the batch, up to a per-size cap (table below; smaller on CPU)",
    )
    seq_len: int = option(1024, "tokens per sequence (at most the model's block size)", "optim")
    lr: float = option(6e-4, "peak learning rate", "optim")
    schedule: str = option(
        "cosine",
        "lr schedule after warmup: cosine decay, or wsd (constant, then linear decay over --decay-frac)",
        "optim",
        choices=SCHEDULES,
    )
    decay_frac: float = option(0.4, "wsd: fraction of --steps (at the end) over which the lr decays", "optim")
    min_lr_ratio: float = option(0.1, "final lr as a fraction of the peak (decay to lr x ratio)", "optim")
    warmup_steps: int = option(715, "linear warmup steps (from lr/warmup to lr)", "optim")
    weight_decay: float = option(0.1, "AdamW weight decay on the >=2-D weights (not biases, not LayerNorm)", "optim")
    muon_lr: float = option(
        0.02,
        "--optimizer muon: peak lr of the Muon matrices, x sqrt(max(1, rows/cols)) (--lr: the AdamW rest)",
        "optim",
    )
    muon_momentum: float = option(0.95, "--optimizer muon: Muon's (Nesterov) momentum", "optim")
    muon_weight_decay: float = option(0.0, "--optimizer muon: decoupled weight decay of the Muon matrices", "optim")
    muon_qkv: str = option(
        "split",
        "--optimizer muon: orthogonalise attention's fused q/k/v matrix as 3 blocks (measured better), or whole",
        "optim",
        choices=QKV_MODES,
    )
    grad_clip: float = option(1.0, "max global gradient norm, 0 = off", "optim")
    beta1: float = option(0.9, "AdamW beta1", "optim")
    beta2: float = option(0.95, "AdamW beta2", "optim")
    dropout: float = option(0.0, "dropout probability on embeddings, attention and residuals, in [0, 1)", "optim")
    distill_temperature: float = option(2.0, "--distill-from: temperature of the soft targets (DistilGPT2's)", "optim")
    distill_alpha: float = option(
        0.5, "--distill-from: weight of the soft-target loss, 1 - alpha on the next-token loss (DistilGPT2's)", "optim"
    )
    seed: int = option(1337, "seed for the model init and (with --shuffle) the shard order", "optim")
    shuffle: bool = option(False, "shuffle the shard order every epoch (the seed reads shards in order)", "optim")
    # hardware
    device: str = option("auto", "auto (cuda > mps > cpu), cpu, cuda, cuda:N, mps", "hardware")
    autocast: str = option(
        "auto",
        "autocast dtype; weights stay fp32 (auto: bf16 on GPUs that have it, fp16 on older ones, fp32 on CPU/MPS)",
        "hardware",
        choices=DTYPES,
    )
    compile: bool | None = option(None, "torch.compile the model", "hardware", default_text="on for CUDA")
    fused_loss: bool = option(
        False,
        "output layer + cross-entropy in chunks of 256 rows, never holding the (B*T, V) logits: the same loss up "
        "to float rounding, faster for small models on CPU (off: the seed recipe stays bit for bit)",
        "hardware",
    )
    fsdp: bool = option(False, "shard with FSDP2 instead of replicating with DDP (774M+, needs torchrun)", "hardware")
    peak_flops: float | None = option(
        None, "peak FLOP/s of one device, for MFU", "hardware", default_text="the GPU table"
    )
    # in-loop evaluation, sampling and checkpoints (every N steps; 0 disables)
    eval_every: int = option(250, "validation loss every N steps", "loop")
    eval_tokens: int = option(10 * 2**19, "validation tokens per evaluation", "loop")
    hellaswag_every: int | None = option(None, "HellaSwag every N steps", "loop", default_text="--eval-every")
    hellaswag_limit: int | None = option(None, "HellaSwag examples per evaluation", "loop", default_text="all 10,042")
    hellaswag_path: str | None = option(
        None, "HellaSwag JSONL file", "loop", metavar="FILE", default_text="the official set, downloaded once"
    )
    core_every: int = option(0, "CORE (gpt2 eval core) every N steps", "loop")
    core_max_per_task: int = option(100, "CORE examples per task in the loop (a fast estimate)", "loop")
    core_bundle: str | None = option(
        None, "CORE eval bundle directory", "loop", metavar="DIR", default_text="$GPT2_CORE_BUNDLE or downloaded once"
    )
    sample_every: int | None = option(None, "generate samples every N steps", "loop", default_text="--eval-every")
    sample_prompt: str = option("Hello, I'm a language model,", "prompt of the in-loop samples", "loop")
    sample_tokens: int = option(32, "new tokens per in-loop sample", "loop")
    num_samples: int = option(2, "samples per in-loop generation", "loop")
    save_every: int = option(1000, "checkpoint every N steps (and always at the end)", "loop")
    keep_last: int = option(3, "checkpoints kept in RUN_DIR, 0 = all", "loop")
    resume: bool | None = option(
        None,
        "continue from RUN_DIR/latest; --no-resume refuses to",
        "loop",
        default_text="when RUN_DIR has a checkpoint",
    )
    max_bad_steps: int = option(5, "abort after N non-finite losses in a row", "loop")
    log_every: int = option(1, "console line every N steps (metrics.jsonl always gets every step)", "loop")
    log_to: str = option(
        "",
        f"experiment trackers that get every metrics.jsonl row, comma-separated: {', '.join(TRACKERS)} "
        "(rank 0; needs the [track] extra)",
        "loop",
        metavar="LIST",
        default_text="none",
    )

    def grad_accum_steps(self, world_size: int) -> int:
        """Micro-steps per optimizer step on each rank: batch_tokens / (micro_batch * seq_len * world_size)."""
        micro = self.micro_batch or 1  # auto (None): the trainer picks a divisor (gpt2.train.recipes)
        per_micro = micro * self.seq_len * world_size
        if self.batch_tokens % per_micro != 0:
            raise GPT2Error(
                f"{option_name('batch_tokens')} {self.batch_tokens} is not divisible by micro-batch x seq-len x "
                f"world size = {micro} x {self.seq_len} x {world_size} = {per_micro}; pick "
                f"{option_name('batch_tokens')} as a multiple of {per_micro} "
                f"(e.g. {max(1, round(self.batch_tokens / per_micro)) * per_micro})"
            )
        return self.batch_tokens // per_micro

    def validate(self, world_size: int = 1) -> None:
        """Raise GPT2Error naming the option when the configuration cannot work."""
        for name in OPTION_NAMES:
            check_option_value(name, getattr(self, name))
        positive: tuple[str, ...]
        positive = ("steps", "batch_tokens", "micro_batch", "seq_len", "lr", "peak_flops", "eval_tokens", "muon_lr")
        positive += ("sample_tokens", "num_samples", "hellaswag_limit", "core_max_per_task")
        for name in positive:
            value = getattr(self, name)
            if value is not None and value <= 0:  # None (peak_flops, hellaswag_limit) = decided later
                raise GPT2Error(f"{option_name(name)} must be positive, got {value}")
        non_negative = ("warmup_steps", "eval_every", "save_every", "keep_last", "grad_clip", "weight_decay", "seed")
        for name in (*non_negative, "core_every", "hellaswag_every", "sample_every", "log_every", "muon_weight_decay"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise GPT2Error(f"{option_name(name)} must be >= 0, got {value}")
        if self.seq_len > self.model.block_size:
            raise GPT2Error(
                f"{option_name('seq_len')} {self.seq_len} exceeds the model's context window "
                f"(block_size {self.model.block_size})"
            )
        if not 0 <= self.dropout < 1:
            raise GPT2Error(f"{option_name('dropout')} must be in [0, 1), got {self.dropout}")
        if self.model.dropout != self.dropout:  # one rate: the model applies it, the checkpoint config stores it
            raise GPT2Error(f"{option_name('dropout')} {self.dropout} differs from the model's {self.model.dropout}")
        for name in ("beta1", "beta2"):  # AdamW's moment decay rates; torch would raise a ValueError at start-up
            if not 0 <= getattr(self, name) < 1:
                raise GPT2Error(f"{option_name(name)} must be in [0, 1), got {getattr(self, name)}")
        for name in ("min_lr_ratio", "decay_frac"):
            if not 0 <= getattr(self, name) <= 1:
                raise GPT2Error(f"{option_name(name)} must be in [0, 1], got {getattr(self, name)}")
        if not 0 <= self.muon_momentum < 1:
            raise GPT2Error(f"{option_name('muon_momentum')} must be in [0, 1), got {self.muon_momentum}")
        if self.fsdp and self.optimizer == "muon":
            raise GPT2Error(
                f"{option_name('fsdp')} does not work with {option_name('optimizer')} muon: FSDP shards each "
                "matrix across ranks (DTensor), and Muon's Newton-Schulz step needs the whole matrix; "
                "train with DDP (drop --fsdp) or use --optimizer adamw"
            )
        if self.max_bad_steps < 1:
            raise GPT2Error(f"{option_name('max_bad_steps')} must be >= 1, got {self.max_bad_steps}")
        parse_log_to(self.log_to)
        if self.fsdp and world_size < 2:
            raise GPT2Error(f"{option_name('fsdp')} needs several processes (launch with torchrun --nproc_per_node=N)")
        self.grad_accum_steps(world_size)

    @property
    def hellaswag_interval(self) -> int:
        return self.eval_every if self.hellaswag_every is None else self.hellaswag_every

    @property
    def sample_interval(self) -> int:
        return self.eval_every if self.sample_every is None else self.sample_every

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["model"] = self.model.to_dict()
        return data


FIELDS = {f.name: f for f in dataclasses.fields(TrainConfig)}
OPTION_NAMES = tuple(name for name, f in FIELDS.items() if "help" in f.metadata)  # the command-line options
# dropout is a GPTConfig field but also an option of its own
SHAPE_FIELDS = {f.name for f in dataclasses.fields(GPTConfig)} - {"dropout"}
_TYPES = typing.get_type_hints(TrainConfig)
_TYPE_WORDS = {int: "an integer", float: "a number", str: "a string", bool: "true or false"}


def option_name(name: str) -> str:
    """How the command line spells TrainConfig field ``name`` (``seq_len`` -> ``--seq-len``): the one mapping."""
    return "--" + name.replace("_", "-")


def option_type(name: str) -> tuple[type, bool]:
    """(value type, whether None is allowed) of field ``name``, from its annotation (``int | None`` -> int, True)."""
    hint = _TYPES[name]
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    return (args[0], True) if args else (hint, False)


def check_option_value(name: str, value: Any) -> Any:
    """``value`` checked against the type and choices of option ``name`` (an int is accepted for a float).

    Raises GPT2Error naming the option for a wrong type, a value outside ``choices`` or a non-finite float.
    """
    kind, optional = option_type(name)
    if value is None and optional:
        return None
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if type(value) is not kind:  # not isinstance: True is an int, and an int must not pass for a bool
        raise GPT2Error(f"{option_name(name)} must be {_TYPE_WORDS[kind]}, got {value!r}")
    if isinstance(value, float) and not math.isfinite(value):  # type(value) is kind here
        raise GPT2Error(f"{option_name(name)} must be a finite number, got {value}")
    choices = FIELDS[name].metadata.get("choices")
    if choices is not None and value not in choices:
        raise GPT2Error(f"{option_name(name)} must be one of {', '.join(choices)}, got {value!r}")
    return value


def read_config_file(path: str | Path) -> dict[str, Any]:
    """Options from a JSON ``--config`` file, each checked against its TrainConfig type.

    The file holds training options by their ``TrainConfig`` names (``"lr"``, ``"steps"``, ...), a
    ``"recipe"`` or ``"size"``, and/or the model shape, either as GPTConfig fields at the top level (a model's
    ``config.json`` works as is) or under ``"model"``. Unknown keys are an error, so typos never
    silently fall back to a default.
    """
    data = read_json_object(path, "--config file")
    data = {k: v for k, v in data.items() if k not in ("format", "format_version")}  # a checkpoint's config.json
    if "dtype" in data and "autocast" not in data:  # the option's old name
        data["autocast"] = data.pop("dtype")
    model = data.pop("model", None) or {}
    if not isinstance(model, dict):
        raise GPT2Error(f'--config {path}: "model" must be an object of GPTConfig fields, got {model!r}')
    model = dict(model)
    for key in list(data):
        if key in SHAPE_FIELDS:
            model[key] = data.pop(key)
    unknown = sorted(set(data) - set(OPTION_NAMES) - {"recipe", "size"})
    if unknown:
        raise GPT2Error(f"--config {path}: unknown option(s) {', '.join(unknown)}")
    try:
        data = {name: check_option_value(name, value) for name, value in data.items()}
    except GPT2Error as exc:
        raise GPT2Error(f"--config {path}: {exc}") from None
    if model:
        data["model"] = model
    return data
