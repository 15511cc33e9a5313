"""``--log-to``: TensorBoard and W&B get every metrics.jsonl row, read back from the files the trackers wrote.

No tracker is mocked: TensorBoard's event files are read with the ``EventAccumulator`` its Python backend
uses (``plugin_event_accumulator``: it applies ``purge_step`` to every tag, text included), W&B's offline
run file (``run-ID.wandb``, a LevelDB-style record log of protobuf ``Record`` messages) with wandb's own
protobuf definitions.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from gpt2.cli import main
from gpt2.store.rundir import read_metrics, read_run_info, write_latest
from gpt2.train.tracking import INSTALL, Tracking
from gpt2.train.trainer import train
from train_helpers import GPT2_TRAIN, QUIET, TINY_RUN, prepared_dataset, subprocess_env, tiny_config

# Every 2 steps: a validation loss and 2 samples of 4 tokens; a checkpoint every 2 steps, all kept.
LOOP = dict(eval_every=2, eval_tokens=256, sample_every=2, sample_tokens=4, num_samples=2, save_every=2, keep_last=0)
LOOP_ARGS = ["--eval-every", "2", "--eval-tokens", "256", "--sample-every", "2", "--sample-tokens", "4"]
LOOP_ARGS += ["--num-samples", "2", "--save-every", "2", "--keep-last", "0"]
TRAIN_SCALARS = {"loss", "lr", "grad_norm", "tokens", "tok_per_s", "dt_ms", "time"}  # mfu is None on CPU: not logged
EVAL_SCALARS = {"val_loss", "val_bpb", "val_tokens"}  # HellaSwag is off in these runs


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    return prepared_dataset(tmp_path_factory.getbasetemp())


def expected_scalars(rows: list[dict]) -> dict[str, list[tuple[int, float]]]:
    """(step, value) per metric name, as metrics.jsonl has them: train rows' numbers and eval rows' val_loss
    (with val_tokens, how many tokens it covers)."""
    scalars: dict[str, list[tuple[int, float]]] = {}
    for row in rows:
        names = TRAIN_SCALARS if row["type"] == "train" else EVAL_SCALARS if row["type"] == "eval" else set()
        for name in sorted(names):
            scalars.setdefault(name, []).append((row["step"], row[name]))
    return scalars


# ---------------------------------------------------------------- TensorBoard


def test_tensorboard_gets_every_row_and_a_resume_replaces_the_dead_steps(dataset, tmp_path):
    from tensorboard.backend.event_processing.plugin_event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2
    from tensorboard.util.tensor_util import make_ndarray

    out = tmp_path / "run"
    train(tiny_config(dataset, out, steps=4, log_to="tensorboard", **LOOP))
    # As if the run had died after logging steps 3-4 but before saving step 4: resume from step 2.
    first_rows = read_metrics(out)
    shutil.rmtree(out / "step_000004")
    write_latest(out, "step_000002")
    train(tiny_config(dataset, out, steps=4, log_to="tensorboard", **LOOP))
    rows = read_metrics(out)
    assert [r["step"] for r in rows if r["type"] == "train"] == [1, 2, 3, 4]
    resumed = [r["dt_ms"] for r in rows if r["type"] == "train" and r["step"] > 2]
    assert resumed != [r["dt_ms"] for r in first_rows if r["type"] == "train" and r["step"] > 2]

    events = EventAccumulator(str(out / "tensorboard"), size_guidance={"tensors": 0})  # 0: keep every event
    events.Reload()
    assert len(list((out / "tensorboard").glob("events.out.tfevents.*"))) == 2  # one per session, same directory
    expected = expected_scalars(rows)
    assert set(events.PluginTagToContent("scalars")) == set(expected) == TRAIN_SCALARS | EVAL_SCALARS
    for name, values in expected.items():
        logged = [(e.step, make_ndarray(e.tensor_proto).item()) for e in events.Tensors(name)]
        # the purged steps 3-4 of the first session are gone; the values are the resumed session's (dt_ms differs)
        assert [step for step, _ in logged] == [step for step, _ in values], name
        assert [np.float32(v) for _, v in logged] == [np.float32(v) for _, v in values], name

    samples = [r for r in rows if r["type"] == "sample"]
    logged = [(e.step, e.tensor_proto.string_val[0].decode()) for e in events.Tensors("sample/text_summary")]
    # the first session's step-4 samples are purged: each step's samples appear once
    assert logged == [(r["step"], r["prompt"] + r["text"]) for r in samples] and len(logged) == 4

    configs = {e.step: e.tensor_proto.string_val[0].decode() for e in events.Tensors("config/text_summary")}
    assert sorted(configs) == [0, 2]  # the config of each session, at the step it started from
    config = json.loads(configs[2].strip("`\n"))
    assert config["config"]["log_to"] == "tensorboard" and config["config"]["steps"] == 4
    assert config["model"]["n_layer"] == 2 and config["resumes"][0]["step"] == 2
    content = events.SummaryMetadata("_hparams_/session_start_info").plugin_data.content
    hparams = plugin_data_pb2.HParamsPluginData.FromString(content).session_start_info.hparams
    assert hparams["lr"].number_value == pytest.approx(3e-3) and hparams["model.n_embd"].number_value == 64
    assert hparams["log_to"].string_value == "tensorboard" and hparams["peak_flops"].string_value == "None"


def test_only_rank_0_tracks(tmp_path):
    tracking = Tracking("tensorboard,wandb", tmp_path, resuming=False, is_main=False, warn=print)
    tracking.start(tmp_path, {"config": {}}, 0).write({"type": "train", "step": 1, "loss": 1.0})
    tracking.close()
    assert tracking.run_ids == {} and list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------- Weights & Biases (offline: there is no network)


def wandb_records(path: Path) -> list:
    """The protobuf records of a ``.wandb`` file: a 7-byte header, then LevelDB-log blocks of 32 KiB holding
    chunks (crc32 u32, length u16, type u8: 1 full, 2 first, 3 middle, 4 last)."""
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    assert data[:7] == b":W&B\xe1\xbe\x00", data[:7]  # ident, magic 0xBEE1, version 0
    records, pending, pos = [], b"", 7
    while pos + 7 <= len(data):
        left = 32768 - pos % 32768
        _crc, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        if left < 7 or kind == 0:  # block trailer padding
            pos += left
            continue
        pending += data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):
            records.append(wandb_internal_pb2.Record.FromString(pending))
            pending = b""
    return records


def wandb_history(run_dir: Path) -> tuple[dict[str, list[tuple[int, float]]], dict, list[str]]:
    """(step, value) per logged metric, the config, and the run ids, over every offline session of ``run_dir``."""
    history: dict[str, list[tuple[int, float]]] = {}
    config: dict = {}
    ids = []
    for path in sorted((run_dir / "wandb").glob("offline-run-*/run-*.wandb")):
        for record in wandb_records(path):
            kind = record.WhichOneof("record_type")
            if kind == "run":
                ids.append(record.run.run_id)
                config.update({item.key: json.loads(item.value_json) for item in record.run.config.update})
            elif kind == "history":
                # a key is in `key` or, split at "/", in `nested_key` (wandb-core writes the latter)
                items = {
                    item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in record.history.item
                }
                for key, value in items.items():
                    if not key.startswith(("_", "samples/")) and key != "step" and isinstance(value, (int, float)):
                        history.setdefault(key, []).append((items["step"], value))
    return history, config, ids


def wandb_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in subprocess_env().items() if not k.startswith("WANDB_")}
    # wandb's settings, caches and artifacts under tmp_path, not the user's home
    dirs = {f"WANDB_{name}_DIR": str(tmp_path / f"wandb-{name.lower()}") for name in ("CONFIG", "CACHE", "DATA")}
    return {**env, **dirs, **extra}


@pytest.mark.slow
def test_wandb_offline_run_holds_every_row_and_resumes_the_same_run(dataset, tmp_path):
    out = tmp_path / "run"
    args = [*GPT2_TRAIN, *TINY_RUN, *QUIET, *LOOP_ARGS, "--data", str(dataset), "--out", str(out), "--log-to", "wandb"]
    first = subprocess.run([*args, "--steps", "4"], capture_output=True, text=True, timeout=300,
                           env=wandb_env(tmp_path, WANDB_MODE="offline"))  # fmt: skip
    assert first.returncode == 0, first.stderr[-3000:]
    run_id = read_run_info(out)["tracking"]["wandb"]
    # The resume runs "online" with a key but no reachable server: W&B must fall back to offline, not block.
    # (Port 9 refuses connections; one retry instead of wandb's default backoff just makes the failure quicker.)
    offline = wandb_env(
        tmp_path, WANDB_API_KEY="x" * 40, WANDB_BASE_URL="http://127.0.0.1:9", WANDB__GRAPHQL_RETRY_MAX="1"
    )
    second = subprocess.run([*args, "--steps", "6"], capture_output=True, text=True, timeout=300, env=offline)
    assert second.returncode == 0, second.stderr[-3000:]
    assert "warning: W&B:" in second.stderr and "logging offline instead" in second.stderr

    sessions = sorted((out / "wandb").glob("offline-run-*"))
    assert len(sessions) == 2 and all(p.name.endswith(f"-{run_id}") for p in sessions)
    history, config, ids = wandb_history(out)
    assert ids == [run_id, run_id] and read_run_info(out)["tracking"]["wandb"] == run_id
    rows = read_metrics(out)
    expected = expected_scalars(rows)
    assert set(history) == set(expected) == TRAIN_SCALARS | EVAL_SCALARS
    for name, values in expected.items():
        assert [step for step, _ in history[name]] == [step for step, _ in values] == sorted({s for s, _ in values})
        assert [v for _, v in history[name]] == pytest.approx([v for _, v in values], rel=1e-12), name
    assert config["log_to"] == "wandb" and config["steps"] == 6 and config["model"]["n_layer"] == 2
    # the samples table of the last session, with every sample it logged (steps 6; 2, 4 are the first session's)
    tables = sorted((sessions[-1] / "files" / "media" / "table").glob("samples_*.table.json"), key=os.path.getmtime)
    table = json.loads(tables[-1].read_text())
    samples = [[r["step"], r["prompt"], r["text"]] for r in rows if r["type"] == "sample" and r["step"] > 4]
    assert table["columns"] == ["step", "prompt", "text"] and table["data"] == samples and len(samples) == 2


# ---------------------------------------------------------------- bad input: one line, RUN_DIR untouched


def test_unknown_tracker(dataset, tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["train", *TINY_RUN, *QUIET, "--data", str(dataset), "--out", str(out), "--log-to", "tensorboard,mlflow"]
    assert main(argv) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["error: --log-to: unknown tracker 'mlflow'; choose from tensorboard, wandb"]
    assert not out.exists()


@pytest.mark.parametrize("tracker, module", [("tensorboard", "tensorboard"), ("wandb", "wandb")])
def test_missing_tracker_package(dataset, tmp_path, tracker, module):
    out = tmp_path / "run"
    # None in sys.modules makes the real import machinery fail for that package, as if it were not installed
    code = f"import sys; sys.modules[{module!r}] = None; from gpt2.cli import main; sys.exit(main(sys.argv[1:]))"
    argv = ["train", *TINY_RUN, *QUIET, "--data", str(dataset), "--out", str(out), "--log-to", tracker]
    result = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, env=subprocess_env())
    err = result.stderr.strip().splitlines()
    assert result.returncode == 1 and len(err) == 1, result.stderr
    assert err[0].startswith(f"error: --log-to {tracker}: the {tracker} package is not installed") and INSTALL in err[0]
    assert not out.exists()
