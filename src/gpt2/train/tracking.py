"""Experiment tracking (``--log-to``): every metrics.jsonl row also goes to TensorBoard and/or Weights & Biases.

The trackers are fed by :class:`gpt2.train.console.RunConsole`, the same call that writes each row to
metrics.jsonl, so they show exactly its rows under the same names (``loss``, ``lr``, ``val_loss``, ...), with
the optimizer ``step`` as the x axis. Rank 0 only, like metrics.jsonl.

    RUN_DIR/tensorboard/   TensorBoard event files (``tensorboard --logdir RUN_DIR/tensorboard``)
    RUN_DIR/wandb/         W&B's local run directories (``offline-run-*`` with WANDB_MODE=offline)

A resumed run continues the same tracker run: TensorBoard appends to the same directory with
``purge_step`` = the checkpoint's step + 1, so the steps logged by the run that died after its last
checkpoint are hidden, as metrics.jsonl drops them; W&B resumes the run whose id run.json records
(``"tracking": {"wandb": ID}``). W&B's history is append-only, so there those steps appear twice.

Light at import: the tracker packages load when a run starts (:class:`Tracking`), and a missing one is
one clear error naming the extra to install, before anything is written.
"""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Any

from gpt2.errors import GPT2Error
from gpt2.store.rundir import RunDir, read_run_info

TRACKERS = ("tensorboard", "wandb")
INSTALL = "pip install 'gpt2-from-scratch[track]'"
WANDB_PROJECT = "gpt2-from-scratch"  # unless WANDB_PROJECT is set
WANDB_INIT_TIMEOUT = 30.0  # seconds wandb.init may wait for the server before we fall back to offline
# seconds wandb.finish may wait for uploads (network gone mid-run); what is left stays in RUN_DIR/wandb for `wandb sync`
WANDB_FINISH_TIMEOUT = 60.0
# Row keys that are not metrics of their own: the row type, the x axis, the skipped flag.
_NOT_METRICS = {"type", "step", "skipped"}


def parse_log_to(text: str) -> list[str]:
    """The tracker names of a ``--log-to`` value (``"tensorboard,wandb"``); raises GPT2Error for an unknown one."""
    names = [name.strip().lower() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in TRACKERS]
    if unknown:
        raise GPT2Error(f"--log-to: unknown tracker {unknown[0]!r}; choose from {', '.join(TRACKERS)}")
    return list(dict.fromkeys(names))  # each once, in the given order


def metric_values(row: dict[str, Any]) -> dict[str, float]:
    """The numbers of a train/eval row to log as scalars: every number but the step (a None, e.g. a skipped loss, is
    left out, as are booleans).

    ``tokens`` and ``time`` of an eval row are left out: the train row of the same step logged them already.
    """
    skip = _NOT_METRICS if row["type"] == "train" else _NOT_METRICS | {"tokens", "time"}
    return {
        key: value
        for key, value in row.items()
        if key not in skip and isinstance(value, (int, float)) and not isinstance(value, bool)
    }


def flat_config(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``config`` with nested dicts flattened (``model.n_layer``) and None as ``"None"``: TensorBoard hparams."""
    flat: dict[str, Any] = {}
    for key, value in config.items():
        if isinstance(value, dict):
            flat.update(flat_config(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value if isinstance(value, (int, float, str, bool)) else str(value)
    return flat


def _import_tracker(name: str) -> None:
    """Import tracker ``name``'s package now, so that a missing one fails before training starts."""
    try:
        if name == "tensorboard":
            import torch.utils.tensorboard  # noqa: F401 - needs the tensorboard package
        else:
            import wandb  # noqa: F401
    except ImportError as exc:
        raise GPT2Error(f"--log-to {name}: the {name} package is not installed ({exc}); run: {INSTALL}") from None


class TensorBoardTracker:
    """Scalars per row (``global_step`` = step), samples as text, the config as text and as hparams."""

    def __init__(self, run_dir: Path, info: dict[str, Any], step: int):
        from torch.utils.tensorboard import SummaryWriter
        from torch.utils.tensorboard.summary import hparams

        # purge_step: events at steps > the checkpoint's (logged by a run that died) are dropped from view
        self.writer = SummaryWriter(str(RunDir(run_dir).tensorboard), purge_step=step + 1, flush_secs=30)
        config = json.dumps(info, indent=2, default=str)
        self.writer.add_text("config", "```\n" + config + "\n```", global_step=step)
        file_writer = self.writer.file_writer
        assert file_writer is not None  # SummaryWriter opens it in __init__
        for summary in hparams(flat_config(info["config"]), {"loss": 0.0, "val_loss": 0.0}):
            file_writer.add_summary(summary, step)

    def write(self, row: dict[str, Any]) -> None:
        step = row["step"]
        if row["type"] == "sample":
            self.writer.add_text("sample", row["prompt"] + row["text"], global_step=step)
            return
        for key, value in metric_values(row).items():
            self.writer.add_scalar(key, value, global_step=step)
        if row["type"] == "eval":
            self.writer.flush()  # evaluations are rare and the numbers one waits for

    def close(self) -> None:
        self.writer.close()


class WandbTracker:
    """One W&B run per training run (resumed by id): rows as history with ``step`` as the x axis, samples as a table."""

    def __init__(self, run_dir: Path, info: dict[str, Any], run_id: str, warn: Callable[[str], None]):
        import wandb

        self.wandb = wandb
        options: dict[str, Any] = {
            "project": os.environ.get("WANDB_PROJECT", WANDB_PROJECT),
            "name": run_dir.resolve().name,
            "id": run_id,
            "resume": "allow",
            "dir": str(run_dir),  # -> RUN_DIR/wandb/
            "config": {**info["config"], **{k: v for k, v in info.items() if k not in ("config", "tracking")}},
        }
        try:
            settings = wandb.Settings(init_timeout=WANDB_INIT_TIMEOUT, finish_timeout=WANDB_FINISH_TIMEOUT)
            self.run = wandb.init(**options, settings=settings)
        except Exception as exc:  # no API key, server unreachable, ...: never block or stop the training
            warn(f"W&B: {str(exc).splitlines()[0]}; logging offline instead (upload later with wandb sync)")
            wandb.teardown()  # the failed run still holds its id in wandb's service process
            self.run = wandb.init(**options, mode="offline")
        self.run.define_metric("step")
        self.run.define_metric("*", step_metric="step")
        self.samples: list[list[Any]] = []

    def write(self, row: dict[str, Any]) -> None:
        if row["type"] == "sample":
            # One growing table: the W&B UI shows its latest version, i.e. every sample so far.
            self.samples.append([row["step"], row["prompt"], row["text"]])
            table = self.wandb.Table(columns=["step", "prompt", "text"], data=self.samples)
            self.run.log({"step": row["step"], "samples": table})
            return
        self.run.log({"step": row["step"], **metric_values(row)})

    def close(self) -> None:
        self.run.finish()


class Tracking:
    """The trackers of one run, written to like :class:`gpt2.store.rundir.MetricsLog` (``write(row)``, ``close()``).

    Construct it with the read-only checks (before RUN_DIR is touched): it parses ``log_to`` and imports the
    tracker packages on rank 0. :meth:`start` opens the tracker runs once run.json is written; on other ranks
    it does nothing.
    """

    def __init__(self, log_to: str, run_dir: Path, resuming: bool, is_main: bool, warn: Callable[[str], None]):
        self.names = parse_log_to(log_to) if is_main else []
        self.warn = warn
        for name in self.names:
            _import_tracker(name)
        self.run_ids: dict[str, str] = {}  # recorded in run.json: how a resumed run finds its tracker run
        if "wandb" in self.names:
            previous = self._previous_ids(run_dir).get("wandb") if resuming else None
            self.run_ids["wandb"] = previous if isinstance(previous, str) and previous else secrets.token_hex(6)
        self.trackers: list[Any] = []

    @staticmethod
    def _previous_ids(run_dir: Path) -> dict[str, str]:
        try:
            ids = read_run_info(run_dir).get("tracking")
        except GPT2Error:  # an unreadable run.json is replaced by the resume anyway
            return {}
        return ids if isinstance(ids, dict) else {}

    def start(self, run_dir: Path, info: dict[str, Any], step: int) -> Tracking:
        """Open the tracker runs; ``info`` is run.json (config, ...), ``step`` the step training continues after."""
        for name in self.names:
            if name == "tensorboard":
                self.trackers.append(TensorBoardTracker(run_dir, info, step))
            else:
                self.trackers.append(WandbTracker(run_dir, info, self.run_ids["wandb"], self.warn))
        return self

    def write(self, row: dict[str, Any]) -> None:
        for tracker in self.trackers:
            tracker.write(row)

    def close(self) -> None:
        for tracker in self.trackers:
            tracker.close()
        self.trackers = []
