"""Helpers of tests/test_bad_input.py: the Case row type, the fixture world, and the functions that make bad
files, drive a real process (signals, a filling disk) and check what must be unchanged afterwards."""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import shutil
import signal
import stat
import struct
import subprocess
import sys
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from gpt2.cli import main
from gpt2.data.shards import HEADER_BYTES, file_sha256
from gpt2.store.rundir import read_metrics
from train_helpers import QUIET, TINY_RUN, subprocess_env

GPT2 = [sys.executable, "-m", "gpt2"]
SRC = Path(__file__).resolve().parents[1] / "src"


@dataclass
class Case:
    """One bad input. ``argv`` may use ``{name}`` placeholders for the paths of :class:`World`.

    ``setup(world)`` makes the bad files; ``unchanged`` lists paths (placeholders allowed) whose files are hashed
    before and after; ``after(world, stderr)`` asserts anything else. ``stderr`` None: nothing on stderr.
    ``process``: run ``gpt2`` in a subprocess with ``process(world, popen)`` driving it (signals, filling a disk).
    """

    id: str
    argv: list[str]
    code: int
    stderr: str | None
    setup: Callable[[World], None] | None = None
    unchanged: list[str] = field(default_factory=list)
    after: Callable[[World, str], None] | None = None
    process: Callable[[World, subprocess.Popen], None] | None = None
    call: Callable[[World], None] | None = None  # a library call instead of a command (errors as the CLI shows them)
    root: bool = False  # needs to mount a tmpfs
    within: float | None = None  # seconds it must fail within (loosely: what it prevents took much longer)


class World:
    """The fixtures: ``run`` (2 steps, a checkpoint each), ``ckpt`` (a copy of its step_000002), ``data``."""

    def __init__(self, base: Path, data: Path, run: Path):
        self.base, self.data, self.run = base, data, run
        self.case_dir = base

    def new_case(self, name: str) -> None:
        self.case_dir = self.base / "cases" / name
        self.case_dir.mkdir(parents=True)
        self.ckpt = self.case_dir / "ckpt"
        shutil.copytree(self.run / "step_000002", self.ckpt)

    def paths(self) -> dict[str, str]:
        return {"data": str(self.data), "run": str(self.run), "ckpt": str(self.ckpt), "case": str(self.case_dir)}

    def fill(self, text: str) -> str:
        return text.format(**self.paths())


# ---------------------------------------------------------------- helpers that make bad files


def tree_hashes(path: Path) -> dict[str, str]:
    """{relative path: sha256} of every file under ``path`` (or of ``path`` itself), with the mode bits."""
    if path.is_file():
        return {".": hashlib.sha256(path.read_bytes()).hexdigest()}
    return {
        str(p.relative_to(path)): f"{hashlib.sha256(p.read_bytes()).hexdigest()} {oct(p.stat().st_mode)}"
        for p in sorted(path.rglob("*"))
        if p.is_file()
    }


def edit_json(path: Path, **changes) -> None:
    path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))


def edit_weights(ckpt: Path, change: Callable[[dict[str, torch.Tensor]], None]) -> None:
    weights = load_file(str(ckpt / "model.safetensors"))
    change(weights)
    save_file(weights, str(ckpt / "model.safetensors"), metadata={"format": "gpt2-from-scratch"})


def set_weight(name: str, value) -> Callable[[World], None]:
    def setup(world: World) -> None:
        def change(weights):
            if isinstance(value, torch.dtype):
                weights[name] = weights[name].to(value)
            else:
                weights[name][0, 0] = value

        edit_weights(world.ckpt, change)

    return setup


def nanogpt_pt(world: World, **model_args) -> Path:
    """A nanoGPT-style .pt of the fixture model with ``model_args`` as its saved config."""
    state = load_file(str(world.ckpt / "model.safetensors"))
    args = {"n_layer": 2, "n_head": 2, "n_embd": 64, "block_size": 128, "vocab_size": 50304, **model_args}
    path = world.case_dir / "model.pt"
    torch.save({"model": state, "model_args": args, "iter_num": 2}, path)
    return path


class Payload:
    """Unpickling this runs a shell command (touch a marker): what a hostile .pt / pytorch_model.bin does."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class Opaque:
    """A harmless custom class that weights_only loading refuses."""


def hf_dir(world: World) -> Path:
    """An HF export of the fixture checkpoint at CASE/hf."""
    assert main(["export", str(world.ckpt), "--out", str(world.case_dir / "hf")]) == 0
    return world.case_dir / "hf"


def other_vocabulary_model(world: World) -> None:
    """A checkpoint at CASE/teacher whose vocabulary (50,400 rows) is not GPT-2's, padded or not."""
    from gpt2 import GPT, GPTConfig
    from gpt2.store.checkpoint import save_model

    save_model(world.case_dir / "teacher", GPT(GPTConfig(n_layer=1, n_head=2, n_embd=64, vocab_size=50_400)), {})


def hostile_hf_dir(world: World) -> None:
    path = hf_dir(world)
    (path / "model.safetensors").unlink()
    torch.save({"transformer.wte.weight": Payload(world.case_dir / "pwned")}, path / "pytorch_model.bin")


def zip_bomb(world: World) -> None:
    """A 0.1 MB .pt whose zip index says it inflates to 100 MB (torch.save never compresses)."""
    with zipfile.ZipFile(world.case_dir / "bomb.pt", "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("archive/data.pkl", b"\x80\x02}q\x00.")
        with archive.open("archive/data/0", "w", force_zip64=True) as f:
            for _ in range(100):
                f.write(bytes(1 << 20))


def corrupt_dataset(world: World, token: int, update_sha: bool, split: str = "train") -> None:
    """CASE/data: a copy of the dataset with ``token`` written into the body of its first ``split`` shard."""
    data = world.case_dir / "data"
    shutil.copytree(world.data, data)
    manifest = json.loads((data / "manifest.json").read_text())
    shard = next(s for s in manifest["shards"] if s["split"] == split)
    with open(data / shard["file"], "r+b") as f:
        f.seek(HEADER_BYTES + 2 * 100)  # token offset 100
        f.write(np.array([token], dtype="<u2").tobytes())
    if update_sha:  # so the range check, not the checksum, is what catches it
        shard["sha256"] = file_sha256(data / shard["file"])
        (data / "manifest.json").write_text(json.dumps(manifest))


def hub_offline(world: World) -> None:
    """The Hub in offline mode, as `make test` runs every test (HF_HUB_OFFLINE=1); set for the rest of the session
    because huggingface_hub and datasets read the flag once, at import."""
    import datasets
    import huggingface_hub

    os.environ["HF_HUB_OFFLINE"] = "1"
    huggingface_hub.constants.HF_HUB_OFFLINE = datasets.config.HF_HUB_OFFLINE = True


def hub_dataset(world: World) -> None:
    """CASE/ds: a dataset in the Hub's layout (data/train-00000-of-00001.parquet, columns text and id)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    hub_offline(world)
    (world.case_dir / "ds" / "data").mkdir(parents=True)
    table = pa.table({"text": ["the river and the city"] * 20, "id": list(range(20))})
    pq.write_table(table, world.case_dir / "ds" / "data" / "train-00000-of-00001.parquet")


def published_shards(token: int | None = None, shift: bool = False, magic: int | None = None):
    """A setup writing CASE/hub: shards in the layout of kjj0/finewebedu10B-gpt2 (val 0, train 1 and 2), whose
    train shard 1 gets ``token`` at offset 100, every id but EOT shifted by one (another tokenizer), or ``magic``."""

    def setup(world: World) -> None:
        from gpt2.data.encode import encode_document
        from gpt2.data.shards import encode_header, write_shard
        from train_helpers import synthetic_texts

        hub = world.case_dir / "hub"
        hub.mkdir()
        stream = np.concatenate([encode_document(text) for text in synthetic_texts(30)])
        for i, part in enumerate(np.array_split(stream, 3)):
            if i == 1 and token is not None:
                part[100] = token
            if i == 1 and shift:
                part[part != 50256] = (part[part != 50256] + 1) % 50256
            path = hub / f"finewebedu_{'val' if i == 0 else 'train'}_{i:06d}.bin"
            write_shard(path, part)
            if i == 1 and magic is not None:
                header = np.frombuffer(encode_header(len(part)), dtype="<i4").copy()
                header[0] = magic
                path.write_bytes(header.tobytes() + path.read_bytes()[HEADER_BYTES:])

    return setup


MOUNTS: list[Path] = []  # unmounted at the end of each test
PROCESSES: list[subprocess.Popen] = []  # started by a setup, killed at the end of each test


def mount_tmpfs(path: Path, size: str, read_only: bool = False) -> None:
    path.mkdir(parents=True, exist_ok=True)
    options = f"size={size}" + (",ro" if read_only else "")
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True)
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs ({result.stderr.decode().strip()})")
    MOUNTS.append(path)


def no_temporaries(path: Path, keep: tuple[str, ...] = ()) -> None:
    leftovers = [
        p.name
        for p in path.rglob("*")
        if p.name.startswith(".") and (".tmp" in p.name or ".old-" in p.name) and p.name not in keep
    ]
    assert leftovers == [], leftovers


def latest_is(run: Path, name: str) -> None:
    assert (run / "latest").read_text().strip() == name and (run / name / "model.safetensors").is_file()


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def follows_umask(*paths: Path) -> None:
    umask = os.umask(0)
    os.umask(umask)
    for path in paths:
        expected = (0o777 if path.is_dir() else 0o666) & ~umask
        assert mode(path) == expected, f"{path}: {oct(mode(path))} != {oct(expected)}"


# ---------------------------------------------------------------- rows that drive a real process


def fill_disk_after_first_save(world: World, proc: subprocess.Popen) -> None:
    run = world.case_dir / "disk" / "run"
    deadline = time.time() + 120
    while not (run / "latest").is_file():
        assert proc.poll() is None and time.time() < deadline, "training never saved its first checkpoint"
        time.sleep(0.2)
    with open(world.case_dir / "disk" / "filler", "wb") as f:
        try:
            while True:
                f.write(bytes(2**20))
                f.flush()
        except OSError:  # full
            pass
        f.truncate(max(0, f.tell() - 2**20))  # leave 1 MB: metrics rows still fit, a checkpoint (40 MB) does not
    proc.wait(timeout=120)


def sigterm_after_slow_step_warning(world: World, proc: subprocess.Popen) -> None:
    log = world.case_dir / "stderr.txt"
    deadline = time.time() + 120
    while "one optimizer step will take" not in log.read_text():
        assert proc.poll() is None and time.time() < deadline, log.read_text()
        time.sleep(0.2)
    sent = time.time()
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=60)
    assert time.time() - sent < 30  # at the next micro-step boundary, not after 10^10 tokens


def same_state_as_before_the_dropped_step(world: World) -> None:
    """The re-saved step_000002 holds what the first one did: the half step left no trace (data position, RNGs)."""
    first, again = world.run / "step_000002", world.case_dir / "run" / "step_000002"
    for name in ("model.safetensors", "optimizer.safetensors", "rng.safetensors", "rng.json"):
        assert tree_hashes(first / name) == tree_hashes(again / name), name
    loader = [json.loads((path / "trainer.json").read_text())["loader"] for path in (first, again)]
    assert loader[0] == loader[1]


def copy_run(world: World) -> None:
    shutil.copytree(world.run, world.case_dir / "run")


def leftovers(world: World) -> None:
    copy_run(world)
    run = world.case_dir / "run"
    shutil.copytree(run / "step_000001", run / ".step_000002.old-4242")  # killed mid-replace of step_000002
    (run / ".latest.k3j.tmp").write_text("step_000002\n")
    (run / ".metrics.jsonl.x9.tmp").write_text("")
    (run / ".notes.tmp").write_text("not ours: must stay")


def home_dir(world: World) -> None:
    """A directory gpt2 did not write, holding what must never be deleted."""
    (world.case_dir / "home" / ".ssh").mkdir(parents=True)
    (world.case_dir / "home" / ".ssh" / "id_ed25519").write_text("PRIVATE KEY\n")
    (world.case_dir / "home" / "config.json").write_text('{"model_type": "gpt2"}\n')  # even one that looks HF


def latest_links_out(world: World) -> None:
    """``latest`` a link to a file outside the run (that could be any file of the machine)."""
    copy_run(world)
    (world.case_dir / "secret.txt").write_text("SECRET-LINE\n")
    (world.case_dir / "run" / "latest").unlink()
    (world.case_dir / "run" / "latest").symlink_to(world.case_dir / "secret.txt")


def huge_latest(world: World) -> None:
    """A 50 MB ``latest`` (sparse: no disk used) that starts like a step name."""
    copy_run(world)
    with open(world.case_dir / "run" / "latest", "wb") as f:
        f.write(b"step_000002 SECRET ")
        f.truncate(50 * 2**20)


def step_links_out(world: World) -> None:
    """``step_000002`` (what ``latest`` names) a link to a checkpoint outside the run."""
    copy_run(world)
    run = world.case_dir / "run"
    shutil.move(run / "step_000002", world.case_dir / "elsewhere")
    (run / "step_000002").symlink_to(world.case_dir / "elsewhere")


def read_only_out(world: World) -> None:
    mount_tmpfs(world.case_dir / "ro", "1m", read_only=True)


def full_out(world: World) -> None:
    mount_tmpfs(world.case_dir / "full", "96k")


def small_disk(world: World) -> None:
    mount_tmpfs(world.case_dir / "disk", "100m")


TRAIN = ["train", *TINY_RUN, *QUIET, "--data", "{data}"]


def train_option_case(id: str, flag: str, value: str, rule: str, shown: str | None = None) -> Case:
    """``gpt2 train FLAG VALUE`` refused with ``error: FLAG must be RULE, got VALUE``; nothing may be created."""
    return Case(
        id,
        [*TRAIN, "--out", "{case}/run", flag, value],
        1,
        rf"^error: {flag} must be {rule}, got {re.escape(shown or value)}$",
        after=lambda w, _: not (w.case_dir / "run").exists() or pytest.fail("created the run directory"),
    )


def config_file_case(id: str, text: str, stderr: str) -> Case:
    """``gpt2 train --config CASE/c.json`` with ``text`` in that file: nothing may be created."""
    return Case(
        id,
        [*TRAIN, "--out", "{case}/run", "--config", "{case}/c.json"],
        1,
        stderr,
        setup=lambda w: (w.case_dir / "c.json").write_text(text),
        after=lambda w, _: not (w.case_dir / "run").exists() or pytest.fail("created the run directory"),
    )


def save_nan_model(world: World) -> None:
    from gpt2.store.checkpoint import load_checkpoint, save_model

    model = load_checkpoint(world.ckpt)
    with torch.no_grad():
        model.transformer.wte.weight[0, 0] = float("nan")
    save_model(world.case_dir / "step_000009", model)


def core_bundle(edit: Callable[[Path], object] | None = None) -> Callable[[World], None]:
    """Setup of a 2-task CORE bundle in ``{case}/bundle`` (0-shot multiple choice and schema), then ``edit(dir)``."""

    def setup(world: World) -> None:
        from core_bundle import write_bundle

        rows = {
            "copa": [{"query": "The man fell.", "choices": ["He slipped.", "He sang."], "gold": 0}] * 2,
            "winograd": [
                {"context_options": ["Ann thanked Sue because Ann", "... Sue"], "continuation": "won.", "gold": 1}
            ]
            * 2,
        }
        bundle = write_bundle(world.case_dir / "bundle", tuple(rows), n=2, data=rows)
        if edit is not None:
            edit(bundle)

    return setup


# ---------------------------------------------------------------- issue 28: locks, absurd JSON, sparse files, paths


def nested_json(path: Path, before: str = "") -> None:
    """``path``: ``before``, then a JSON array nested 100,000 deep (Python's parser recurses once per level)."""
    path.write_text(before + "[" * 100_000 + "]" * 100_000 + "\n")


def sparse_checkpoint(n_layer: int, n_embd: int) -> Callable[[World], None]:
    """Setup of CASE/sparse: a checkpoint of ``n_layer`` x ``n_embd`` whose model.safetensors is a true header and
    then holes (``truncate``): a few KB on disk, gigabytes of fp32 weights by its size and offsets."""

    def setup(world: World) -> None:
        from gpt2.store.checkpoint import read_config
        from gpt2.store.tensors import expected_shapes

        ckpt = world.case_dir / "sparse"
        shutil.copytree(world.ckpt, ckpt)
        edit_json(ckpt / "config.json", n_layer=n_layer, n_embd=n_embd, n_head=n_embd // 64)
        header: dict = {"__metadata__": {"format": "gpt2-from-scratch"}}
        end = 0
        for name, shape in expected_shapes(read_config(ckpt)).items():
            header[name] = {"dtype": "F32", "shape": list(shape), "data_offsets": [end, end + 4 * math.prod(shape)]}
            end += 4 * math.prod(shape)
        raw = json.dumps(header).encode()
        raw += b" " * (-len(raw) % 8)
        with open(ckpt / "model.safetensors", "wb") as f:
            f.write(struct.pack("<Q", len(raw)) + raw)
            f.truncate(8 + len(raw) + end)

    return setup


def manifest_shard_outside(world: World) -> None:
    """CASE/data: a copy of the dataset whose manifest names its first shard by a path out of the directory."""
    data = world.case_dir / "data"
    shutil.copytree(world.data, data)
    manifest = json.loads((data / "manifest.json").read_text())
    shutil.move(data / manifest["shards"][0]["file"], world.case_dir / "outside.bin")
    manifest["shards"][0]["file"] = "../outside.bin"
    (data / "manifest.json").write_text(json.dumps(manifest))


def busy_run(world: World) -> None:
    """CASE/run (a copy of the fixture run) that another ``gpt2 train`` is training (stopped by first_goes_on)."""
    copy_run(world)
    argv = [world.fill(a) for a in [*TRAIN, "--out", "{case}/run", "--steps", "100000", "--save-every", "0"]]
    with (world.case_dir / "first.txt").open("w") as log:
        env = {**subprocess_env(), "PYTHONPATH": str(SRC)}
        PROCESSES.append(subprocess.Popen([*GPT2, *argv], stdout=log, stderr=subprocess.STDOUT, env=env))
    metrics, deadline = world.case_dir / "run" / "metrics.jsonl", time.time() + 120
    while len(read_metrics(world.case_dir / "run")) < 4:  # resumed after the fixture's 2 steps, and training
        assert PROCESSES[-1].poll() is None and time.time() < deadline, (world.case_dir / "first.txt").read_text()
        time.sleep(0.1)
    assert metrics.is_file()


def first_goes_on(world: World, err: str) -> None:
    """The refused run named the first one's pid; that one trained on, and stops cleanly with one history."""
    first = PROCESSES[-1]
    assert f"(pid {first.pid} on " in err, err
    first.send_signal(signal.SIGTERM)
    assert first.wait(timeout=60) == 0, (world.case_dir / "first.txt").read_text()
    steps = [row["step"] for row in read_metrics(world.case_dir / "run")]
    assert steps == list(range(1, len(steps) + 1)), steps
