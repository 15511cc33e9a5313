"""Two gloo processes give the same HellaSwag, loss, bits-per-byte and CORE totals as one process."""

import json
import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from core_bundle import task_rows, write_bundle
from evaluate_helpers import ITEMS, tiny_model, write_jsonl
from gpt2.data import prepare_documents
from gpt2.evaluate.core import evaluate_core, load_bundle
from gpt2.evaluate.hellaswag import hellaswag_accuracy, load_hellaswag
from gpt2.evaluate.loss import evaluate_loss, evaluate_text_loss
from gpt2.runtime.distributed import all_reduce_sum, rank_and_world_size

WORLD_SIZE = 2
BATCH = 2  # per rank; one process reads the same tokens with BATCH * WORLD_SIZE
EXTRA_ITEMS = [  # 5 items: an odd count, so one rank scores a padding item that must not be counted
    {"ctx": "Cooking: A chef slices onions. She", "endings": ["cries.", "sings.", "fries them.", "flies."], "label": 2},
    {"ctx": "Running: A man laces his shoes. He", "endings": ["runs.", "sleeps.", "jogs off.", "eats."], "label": 0},
]


def _evaluate_all(paths, batch):
    model = tiny_model(seed=5)
    return {
        "hellaswag": hellaswag_accuracy(model, load_hellaswag(paths["hellaswag"]), batch_size=1),
        "loss": evaluate_loss(model, paths["data"], batch_size=batch, seq_len=32),
        "text": evaluate_text_loss(model, paths["text"], batch_size=1, seq_len=32),
        "core": {
            k: v["accuracy"] for k, v in evaluate_core(model, load_bundle(paths["core"]), batch_rows=3)["tasks"].items()
        },
    }


def _core_bundle(directory):
    """5 examples a task (an odd count: one rank scores fewer), 2 to 4 options each (the ranks' rows differ)."""
    items = [(i["ctx"], i["endings"], i["label"]) for i in ITEMS + EXTRA_ITEMS]
    labels = ("agi_eval_lsat_ar", "lambada_openai", "winograd")  # 3-shot multiple choice, 0-shot LM, schema
    types = {"agi_eval_lsat_ar": "multiple_choice", "lambada_openai": "language_modeling", "winograd": "schema"}
    data = {label: task_rows(types[label], items, seed=1) for label in labels}
    return str(write_bundle(directory, labels, n=5, data=data))


def _worker(rank, port, paths):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=WORLD_SIZE)
    try:
        assert rank_and_world_size() == (rank, WORLD_SIZE)
        assert all_reduce_sum([rank, 1], "cpu") == [1.0, 2.0]
        result = _evaluate_all(paths, BATCH)
        with open(os.path.join(paths["out"], f"rank{rank}.json"), "w") as f:
            json.dump(result, f)
    finally:
        dist.destroy_process_group()


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_gloo_ranks_give_the_same_totals_as_one(tmp_path, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    prepare_documents([f"Story {i}: a fox met a dog near the river {i} times. " * 5 for i in range(12)],
                      tmp_path / "data", shard_tokens=3000, val_tokens=700)  # fmt: skip
    text = tmp_path / "notes.txt"
    text.write_text("The river was wide and slow. " * 40)
    paths = {
        "hellaswag": str(write_jsonl(tmp_path / "hs.jsonl", ITEMS + EXTRA_ITEMS)),
        "data": str(tmp_path / "data"),
        "text": str(text),
        "out": str(tmp_path),
        "core": _core_bundle(tmp_path / "eval_bundle"),
    }
    single = _evaluate_all(paths, BATCH * WORLD_SIZE)
    # fork: the children reuse the already imported torch and gpt2 instead of paying ~5 s each to import them
    mp.start_processes(_worker, args=(_free_port(), paths), nprocs=WORLD_SIZE, join=True, start_method="fork")
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(WORLD_SIZE)]
    assert ranks[0] == ranks[1]  # every rank returns the same totals
    assert ranks[0]["hellaswag"] == single["hellaswag"]
    assert single["hellaswag"]["n"] == 5
    for key in ("loss", "text"):
        assert ranks[0][key]["tokens"] == single[key]["tokens"]
        assert ranks[0][key]["loss"] == pytest.approx(single[key]["loss"], abs=1e-5)
        assert ranks[0][key]["bpb"] == pytest.approx(single[key]["bpb"], abs=1e-5)
    assert ranks[0]["core"] == single["core"] and len(single["core"]) == 3
