"""Every bad input and fault of the hardening issue, one table row each: the command, its exit code, the first
line it prints on stderr, and what must be unchanged (or true) afterwards.

Rows run in-process through ``gpt2.cli.main`` unless they need a real process (a signal, a disk filling up
while training runs). The disk-full and read-only rows mount a small tmpfs, so they need root; they skip
with the reason otherwise. Fixtures (a tiny trained run, its checkpoint, a prepared dataset) are built once.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from bad_input_helpers import (
    GPT2,
    MOUNTS,
    PROCESSES,
    SRC,
    TRAIN,
    Case,
    Opaque,
    World,
    busy_run,
    config_file_case,
    copy_run,
    core_bundle,
    corrupt_dataset,
    edit_json,
    edit_weights,
    fill_disk_after_first_save,
    first_goes_on,
    follows_umask,
    full_out,
    hf_dir,
    home_dir,
    hostile_hf_dir,
    hub_dataset,
    hub_offline,
    huge_latest,
    latest_is,
    latest_links_out,
    leftovers,
    manifest_shard_outside,
    nanogpt_pt,
    nested_json,
    no_temporaries,
    other_vocabulary_model,
    published_shards,
    read_only_out,
    same_state_as_before_the_dropped_step,
    save_nan_model,
    set_weight,
    sigterm_after_slow_step_warning,
    small_disk,
    sparse_checkpoint,
    step_links_out,
    train_option_case,
    tree_hashes,
    zip_bomb,
)
from gpt2.cli import main
from gpt2.errors import GPT2Error
from train_helpers import prepared_dataset, subprocess_env

CASES = [
    # 1. disk full during a checkpoint save
    Case(
        "1-disk-full-during-save",
        [*TRAIN, "--out", "{case}/disk/run", "--steps", "100000", "--save-every", "1", "--keep-last", "1"],
        1,
        r"^error: saving the checkpoint of step \d+ in .*/disk/run failed: no space left on the disk mounted at "
        r".*/disk \(\d+\.\d MB free\); the previous checkpoint is intact$",
        setup=small_disk,
        process=fill_disk_after_first_save,
        after=lambda w, _: (
            no_temporaries(w.case_dir / "disk"),
            main(["info", str(w.case_dir / "disk" / "run")]) == 0 or pytest.fail("latest does not load"),
        ),
        root=True,
    ),
    # 2. gpt2 prepare on a read-only / full file system
    Case(
        "2-prepare-read-only",
        ["prepare", "files", "{case}/text.txt", "--out", "{case}/ro/data", "--quiet"],
        1,
        r"^error: --out .*/ro: cannot create or write the dataset directory \(the file system mounted at .*/ro is "
        r"read-only\)$",
        setup=lambda w: (read_only_out(w), (w.case_dir / "text.txt").write_text("some text\n" * 100)),
        root=True,
    ),
    Case(
        "2-prepare-disk-full",
        ["prepare", "files", "{case}/text.txt", "--out", "{case}/full/data", "--shard-tokens", "5000", "--quiet"],
        1,
        r"^error: --out .*/full/data: writing the dataset failed: no space left on the disk mounted at .*/full "
        r"\(0\.0 MB free\); finished shards are kept, free some space and re-run the same command to resume$",
        setup=lambda w: (full_out(w), (w.case_dir / "text.txt").write_text("the river and the city. " * 30_000)),
        after=lambda w, _: no_temporaries(w.case_dir / "full"),
        root=True,
    ),
    # 3. absurd model configs: bounded fields, weights checked before anything is built; info trusts the weights
    *(
        Case(
            f"3-config-json-million-layers-{argv[0]}",
            argv,
            1,
            r"^error: .*ckpt/config.json: GPTConfig.n_layer is 1,000,000, above the supported maximum of 1,024$",
            setup=lambda w: edit_json(w.ckpt / "config.json", n_layer=1_000_000),
        )
        for argv in (["info", "{ckpt}"], ["sample", "--model", "{ckpt}", "--max-new-tokens", "2"])
    ),
    Case(
        "3-config-json-lies-info",  # within bounds, but not what the weights hold: info no longer believes it
        ["info", "{ckpt}"],
        1,
        r"^error: .*model.safetensors: the config says n_layer=4 but the weights hold 2 blocks$",
        setup=lambda w: edit_json(w.ckpt / "config.json", n_layer=4),
    ),
    Case(
        "3-pt-million-layers-import",
        ["import", "nanogpt", "{case}/model.pt", "--out", "{case}/out"],
        1,
        r"^error: .*model.pt: invalid model config .*GPTConfig.n_layer is 1,000,000, above the supported maximum",
        setup=lambda w: nanogpt_pt(w, n_layer=1_000_000),
        after=lambda w, _: not (w.case_dir / "out").exists() or pytest.fail("import wrote an output"),
    ),
    Case(
        "3-pt-wrong-shapes-info",
        ["info", "{case}/model.pt"],
        1,
        r"^error: .*model.pt: transformer.wpe.weight has shape \[128, 64\], config needs \[256, 64\]$",
        setup=lambda w: nanogpt_pt(w, block_size=256),
    ),
    Case(
        "3-info-pt-file",
        ["info", "{case}/model.pt"],
        0,
        None,
        setup=lambda w: nanogpt_pt(w),
    ),
    Case(
        "3-info-hf-dir",
        ["info", "{case}/hf"],
        0,
        None,
        setup=lambda w: hf_dir(w),
    ),
    # 6. corrupt shard contents
    Case(
        "6-token-out-of-range-train",
        [*TRAIN[:-1], "{case}/data", "--out", "{case}/run", "--steps", "2"],
        1,
        r"^error: .*/data/\w+_train_000001.bin: token id 65535 at offset 100 is outside the vocabulary "
        r"\(ids must be < 50257\); the shard is corrupt or from another tokenizer$",
        setup=lambda w: corrupt_dataset(w, 0xFFFF, update_sha=True),
        after=lambda w, _: not (w.case_dir / "run" / "latest").exists() or pytest.fail("saved a checkpoint"),
    ),
    Case(
        "6-in-range-corruption-checksum",
        [*TRAIN[:-1], "{case}/data", "--out", "{case}/run", "--steps", "2"],
        1,
        r"^error: .*_train_000001.bin: SHA-256 differs from the dataset's manifest.json; the shard is corrupt",
        setup=lambda w: corrupt_dataset(w, 42, update_sha=False),
    ),
    Case(
        "6-token-out-of-range-eval-loss",
        ["eval", "loss", "--model", "{ckpt}", "--data", "{case}/data", "--seq-len", "32", "--device", "cpu"],
        1,
        r"^error: .*_val_000000.bin: token id 65535 at offset 100 is outside the vocabulary",
        setup=lambda w: corrupt_dataset(w, 0xFFFF, update_sha=True, split="val"),
    ),
    # 7. non-finite options and weights
    train_option_case("7-lr-inf", "--lr", "inf", "a finite number"),
    train_option_case("7-peak-flops-nan", "--peak-flops", "nan", "a finite number"),
    config_file_case(
        "7-config-lr-infinity", '{"lr": Infinity}', r"^error: --config .*c.json: --lr must be a finite number"
    ),
    Case(
        "7-sample-temperature-nan",
        ["sample", "--model", "{ckpt}", "--temperature", "nan"],
        1,
        r"^error: .*temperature",
    ),
    Case(  # a temperature that rounds to 0 in float32 (0/0 = NaN probabilities before the bound)
        "7-sample-temperature-tiny",
        ["sample", "--model", "{ckpt}", "--temperature", "1e-300"],
        1,
        r"^error: temperature must be 0 \(greedy\) or at least 0.01, got 1e-300$",
    ),
    Case(
        "7-sample-repetition-penalty-tiny",
        ["sample", "--model", "{ckpt}", "--repetition-penalty", "1e-300"],
        1,
        r"^error: repetition_penalty must be between 0.1 and 10.0, got 1e-300$",
    ),
    Case(
        "7-nan-weights-sample",
        ["sample", "--model", "{ckpt}", "--max-new-tokens", "2"],
        1,
        r"^error: .*ckpt/model.safetensors: transformer.wte.weight holds NaN/inf values \(the model diverged or the "
        r"file is corrupt\)$",
        setup=set_weight("transformer.wte.weight", float("nan")),
    ),
    Case(
        "7-finite-but-diverged-outputs-sample",  # weights of 1e30 (trained with --lr 1e30): the outputs are NaN
        ["sample", "--model", "{ckpt}", "--max-new-tokens", "2"],
        1,
        r"^error: the model's outputs are NaN/inf: its weights have diverged \(train it with a lower --lr\)$",
        setup=lambda w: edit_weights(w.ckpt, lambda s: [t.mul_(1e30) for t in s.values()]),
    ),
    Case(
        "7-finite-but-diverged-eval-loss",
        ["eval", "loss", "--model", "{ckpt}", "--data", "{data}", "--seq-len", "32", "--device", "cpu"],
        1,
        r"^error: the loss is nan: the model's weights have diverged \(NaN/inf outputs\)$",
        setup=lambda w: edit_weights(w.ckpt, lambda s: [t.mul_(1e30) for t in s.values()]),
    ),
    Case(
        "7-nan-weights-pt-import",  # import would write a NaN checkpoint: the load check refuses it first
        ["import", "nanogpt", "{case}/model.pt", "--out", "{case}/out"],
        1,
        r"^error: .*model.pt: transformer.wpe.weight holds NaN/inf values",
        setup=lambda w: (set_weight("transformer.wpe.weight", float("inf"))(w), nanogpt_pt(w)),
        after=lambda w, _: not (w.case_dir / "out").exists() or pytest.fail("import wrote an output"),
    ),
    Case(
        "7-nan-weights-refused-at-save",  # the trainer's checkpoint writer, given a model that diverged to NaN
        [],
        1,
        r"^error: refusing to save the checkpoint: transformer.wte.weight holds NaN/inf values \(the model diverged; "
        r"lower --lr\)$",
        call=save_nan_model,
        after=lambda w, _: not (w.case_dir / "step_000009").exists() or pytest.fail("wrote the checkpoint"),
    ),
    # 8. options validated by us
    train_option_case("8-beta1", "--beta1", "2", r"in \[0, 1\)", "2.0"),
    train_option_case("8-seed-negative", "--seed", "-1", ">= 0"),
    train_option_case("8-num-samples-zero", "--num-samples", "0", "positive"),
    train_option_case("8-hellaswag-limit-zero", "--hellaswag-limit", "0", "positive"),
    train_option_case("8-sample-every-negative", "--sample-every", "-5", ">= 0"),
    config_file_case("8-config-beta2", '{"beta2": 5}', r"^error: --beta2 must be in \[0, 1\), got 5.0$"),
    config_file_case(
        "8-config-lr-string", '{"lr": "abc"}', r"^error: --config .*c.json: --lr must be a number, got 'abc'$"
    ),
    config_file_case(
        "8-config-recipe-unknown", '{"recipe": "fast"}', r"^error: --recipe fast: unknown recipe; known: 124M"
    ),
    config_file_case(  # TRAIN says --size tiny
        "8-config-recipe-other-size",
        '{"recipe": "mini"}',
        r"^error: --size tiny and --recipe mini name different models",
    ),
    Case(
        "8-prepare-max-tokens-inf",
        ["prepare", "demo", "--out", "{case}/d", "--max-tokens", "inf"],
        2,
        r"^usage: gpt2 prepare",
        after=lambda w, err: "argument --max-tokens: not a count: 'inf' (at most 1e+15)" in err or pytest.fail(err),
    ),
    Case(
        "8-prepare-max-tokens-1e400",
        ["prepare", "demo", "--out", "{case}/d", "--max-tokens", "1e400"],
        2,
        r"^usage: gpt2 prepare",
        after=lambda w, err: "not a count: '1e400'" in err or pytest.fail(err),
    ),
    # 9. bad checkpoint contents
    Case(
        "9-format-version-string",
        ["sample", "--model", "{ckpt}"],
        1,
        r"^error: .*ckpt/config.json: format_version must be a whole number, got 'x'$",
        setup=lambda w: edit_json(w.ckpt / "config.json", format_version="x"),
    ),
    Case(
        "9-int64-weights",
        ["info", "{ckpt}"],
        1,
        r"^error: .*model.safetensors: transformer.wpe.weight is stored as I64; model weights must be floating point$",
        setup=set_weight("transformer.wpe.weight", torch.int64),
    ),
    Case(
        "9-bool-weights-sample",
        ["sample", "--model", "{ckpt}"],
        1,
        r"^error: .*model.safetensors: transformer.wpe.weight is stored as BOOL; model weights must be floating",
        setup=set_weight("transformer.wpe.weight", torch.bool),
    ),
    Case(
        "9-inf-weights-eval",
        ["eval", "loss", "--model", "{ckpt}", "--data", "{data}", "--seq-len", "32", "--device", "cpu"],
        1,
        r"^error: .*ckpt/model.safetensors: transformer.wte.weight holds NaN/inf values",
        setup=set_weight("transformer.wte.weight", float("inf")),
    ),
    # issue 28.12: --force replaces only a directory gpt2 wrote (a checkpoint or an export), never anything else
    *(
        Case(
            f"28.12-{argv[0]}-force-over-a-directory-not-ours",
            [*argv, "--out", "{case}/home", "--force"],
            1,
            r"^error: --out .*/home already exists and holds files gpt2 did not write \(not a checkpoint or export of "
            r"ours\); --force replaces only those: choose a new directory$",
            setup=lambda w: (home_dir(w), hf_dir(w)),
            unchanged=["{case}/home"],
        )
        for argv in (["export", "{ckpt}"], ["import", "hf", "{case}/hf"])
    ),
    # issue 28.13: `latest` is untrusted: a few bytes read, only step_N accepted, never echoed, no link out of RUN_DIR
    Case(
        "28.13-latest-links-to-a-file-outside-info",
        ["info", "{case}/run"],
        1,
        r"^error: .*/run/latest is a link out of the run directory; not following it$",
        setup=latest_links_out,
        after=lambda w, err: "SECRET" not in err or pytest.fail(err),
    ),
    Case(
        "28.13-latest-garbage-bytes-sample",
        ["sample", "--model", "{case}/run", "--max-new-tokens", "2"],
        1,
        r"^error: .*/run/latest is corrupt: it must hold the name of a checkpoint directory \(step_N\)$",
        setup=lambda w: (copy_run(w), (w.case_dir / "run" / "latest").write_bytes(b"\xff\xfe\x00 SECRET\n")),
        after=lambda w, err: "SECRET" not in err or pytest.fail(err),
    ),
    Case(
        "28.13-latest-50-mb-train",
        [*TRAIN, "--out", "{case}/run", "--steps", "3"],
        1,
        r"^error: .*/run/latest is corrupt: it must hold the name of a checkpoint directory \(step_N\)$",
        setup=huge_latest,
        unchanged=["{case}/run/step_000002"],
        after=lambda w, err: (len(err) < 1000 and "SECRET" not in err) or pytest.fail(err[:1000]),
    ),
    Case(
        "28.13-step-dir-links-outside-sample",
        ["sample", "--model", "{case}/run", "--max-new-tokens", "2"],
        1,
        r"^error: .*/run/latest points to step_000002, a link out of the run directory; not following it$",
        setup=step_links_out,
    ),
    # issue 28.10: one gpt2 train per run directory
    Case(
        "28.10-second-train-on-a-busy-run",
        [*TRAIN, "--out", "{case}/run", "--steps", "5"],
        1,
        r"^error: --out .*/run is in use by gpt2 train \(pid \d+ on [\w.-]+\); wait for it or choose another --out$",
        setup=busy_run,
        after=first_goes_on,
    ),
    # issue 28.16: one line, not a traceback, for JSON nested 100,000 deep, wrongly typed metrics, a sparse checkpoint
    Case(
        "28.16-nested-json-prepare",
        ["prepare", "files", "{case}/docs.jsonl", "--out", "{case}/d", "--quiet"],
        1,
        r"^error: .*/docs.jsonl:2: malformed JSON \(nested too deeply\)$",
        setup=lambda w: nested_json(w.case_dir / "docs.jsonl", before='{"text": "the river and the city."}\n'),
    ),
    Case(
        "28.16-nested-json-hellaswag",
        ["eval", "hellaswag", "--model", "{ckpt}", "--data", "{case}/hellaswag.jsonl", "--device", "cpu"],
        1,
        r"^error: .*/hellaswag.jsonl:1: malformed JSON \(nested too deeply\)$",
        setup=lambda w: nested_json(w.case_dir / "hellaswag.jsonl"),
    ),
    Case(
        "28.16-nested-run-json-report",
        ["report", "{case}/run"],
        1,
        r"^error: corrupt run info .*/run/run.json: not valid JSON \(nested too deeply\)$",
        setup=lambda w: (copy_run(w), nested_json(w.case_dir / "run" / "run.json")),
    ),
    Case(
        "28.16-metrics-row-wrong-type-report",
        ["report", "{case}/run"],
        1,
        r'^error: .*/run/metrics.jsonl:3: "loss" must be a number or null, got str$',
        setup=lambda w: (
            copy_run(w),
            (w.case_dir / "run" / "metrics.jsonl").open("a").write('{"type": "train", "step": 3, "loss": "low"}\n'),
        ),
    ),
    *(
        Case(
            f"28.16-sparse-checkpoint-{argv[0]}",
            argv,
            1,
            r"^error: .*/sparse/model.safetensors: only 0.\d MB of its \d+\.\d GB are on disk \(a sparse file, not "
            r"saved weights\); refusing to load it$",
            setup=sparse_checkpoint(*shape),
        )
        for argv, shape in (
            (["info", "{case}/sparse"], (32, 3200)),  # 4.1B parameters by its header, 16 KB on disk
            (["sample", "--model", "{case}/sparse", "--max-new-tokens", "2"], (8, 1024)),  # 0.6 GB if allocated
        )
    ),
    # issue 28.17: a manifest's shard names stay inside the dataset directory
    Case(
        "28.17-manifest-shard-outside-the-dataset",
        [*TRAIN[:-1], "{case}/data", "--out", "{case}/run", "--steps", "2"],
        1,
        r"^error: .*/data/manifest.json: shard entry 0: 'file' must name a file in the dataset directory, not a path$",
        setup=manifest_shard_outside,
        after=lambda w, _: not (w.case_dir / "run").exists() or pytest.fail("created the run directory"),
    ),
    # 10. an output over its source
    *(
        Case(
            f"10-export-out-{name}",
            ["export", source, "--out", out, "--force"],
            1,
            rf"^error: --out {out_pattern} overlaps the source {source_pattern}; writing there would destroy it",
            setup=copy_run,
            unchanged=["{case}/run"],
        )
        for name, source, out, out_pattern, source_pattern in (
            ("is-source", "{case}/run", "{case}/run", ".*/run", ".*/run"),
            ("inside-source", "{case}/run", "{case}/run/step_000001", ".*/run/step_000001", ".*/run"),
            ("contains-source", "{case}/run/step_000002", "{case}", ".*", ".*/run/step_000002"),
        )
    ),
    Case(
        "10-export-out-dot",
        ["export", "{run}/step_000002", "--out", ".", "--force"],
        1,
        r"^error: --out \. is or contains the current directory; choose a new directory$",
        unchanged=["{run}"],
    ),
    Case(
        "10-import-hf-over-source",
        ["import", "hf", "{case}/hf", "--out", "{case}/hf", "--force"],
        1,
        r"^error: --out .*/hf overlaps the source",
        setup=lambda w: hf_dir(w),
        unchanged=["{case}/hf"],
    ),
    # 11. leftovers of a crash are cleaned at the next start (only ours)
    Case(
        "11-leftovers-cleaned-on-resume",
        [*TRAIN, "--out", "{case}/run", "--steps", "3"],
        0,
        None,
        setup=leftovers,
        unchanged=["{case}/run/step_000001"],
        after=lambda w, _: (
            no_temporaries(w.case_dir / "run", keep=(".notes.tmp",)),
            latest_is(w.case_dir / "run", "step_000003"),
            (w.case_dir / "run" / ".notes.tmp").is_file() or pytest.fail("removed a file that is not ours"),
        ),
    ),
    # 12. permissions follow the umask
    Case(
        "12-modes-after-resume",
        [*TRAIN, "--out", "{case}/run", "--steps", "3"],
        0,
        None,
        setup=copy_run,
        after=lambda w, _: follows_umask(
            *(w.case_dir / "run" / n for n in ("step_000003", "latest", "metrics.jsonl", "run.json")),
            *(w.case_dir / "run" / "step_000003").iterdir(),
        ),
    ),
    Case(
        "12-modes-hf-export",
        ["export", "{ckpt}", "--out", "{case}/hf"],
        0,
        None,
        after=lambda w, _: follows_umask(w.case_dir / "hf", *(w.case_dir / "hf").iterdir()),
    ),
    Case(
        "12-modes-prepared-shards",
        ["prepare", "files", "{case}/text.txt", "--out", "{case}/d", "--val-tokens", "100", "--quiet"],
        0,
        None,
        setup=lambda w: (w.case_dir / "text.txt").write_text("the river and the city. " * 200),
        after=lambda w, _: follows_umask(w.case_dir / "d", *(w.case_dir / "d").iterdir()),
    ),
    # 13. small ones
    Case(
        "13-legacy-pt-no-weights-only-advice",
        ["import", "nanogpt", "{case}/legacy.pt", "--out", "{case}/out"],
        1,
        r"^error: .*legacy.pt: cannot load safely \(Unsupported global: GLOBAL bad_input_helpers.Opaque was not an "
        r"allowed global by default\)$",
        setup=lambda w: torch.save(
            {"model": {}, "x": Opaque()}, w.case_dir / "legacy.pt", _use_new_zipfile_serialization=False
        ),
        after=lambda w, err: "weights_only" not in err or pytest.fail(err),
    ),
    Case(
        "13-hf-hostile-pytorch-model-bin",
        ["sample", "--model", "{case}/hf"],
        1,
        r"^error: .*pytorch_model.bin: refusing to load, the pickle references '(posix|os).system'",
        setup=hostile_hf_dir,
        after=lambda w, _: not (w.case_dir / "pwned").exists() or pytest.fail("the payload ran"),
    ),
    Case(
        "13-zip-bomb-pt",
        ["info", "{case}/bomb.pt"],
        1,
        r"^error: .*bomb.pt: refusing to load, its entries inflate to 0.10 GB from 0.1 MB on disk",
        setup=zip_bomb,
    ),
    Case(
        "13-huge-batch-warns-and-sigterm-stops-mid-step",
        [*TRAIN, "--out", "{case}/run", "--steps", "3", "--batch-tokens", str(64 * 10**8)],
        0,
        r"^warning: world size or batch differs",
        setup=copy_run,
        unchanged=["{case}/run/step_000001"],
        process=sigterm_after_slow_step_warning,
        after=lambda w, err: (
            re.search(r"warning: one optimizer step will take ~\d+\.\d h at the measured rate", err)
            or pytest.fail(err),
            latest_is(w.case_dir / "run", "step_000002"),
            no_temporaries(w.case_dir / "run"),
            same_state_as_before_the_dropped_step(w),
        ),
    ),
    Case(
        "13-val-shards-negative",
        ["prepare", "demo", "--out", "{case}/d", "--val-shards", "-1"],
        1,
        r"^error: --val-shards must be >= 0, got -1$",
    ),
    train_option_case("13-eval-tokens-zero", "--eval-tokens", "0", "positive"),
    # 24. a malformed CORE eval bundle: one line naming the file (and row / task)
    *(
        Case(
            f"24-core-{name}",
            ["eval", "core", "--model", "{ckpt}", "--bundle", "{case}/bundle", "--device", "cpu"],
            1,
            stderr,
            setup=core_bundle(edit),
        )
        for name, edit, stderr in (
            (
                "no-meta-csv",
                lambda d: (d / "eval_meta_data.csv").unlink(),
                r"^error: CORE eval bundle .*/bundle: "
                r"eval_meta_data.csv is missing$",
            ),
            (
                "no-data-file",
                lambda d: (d / "eval_data/commonsense_reasoning/copa.jsonl").unlink(),
                r"^error: CORE task data not found: .*/bundle/eval_data/commonsense_reasoning/copa.jsonl$",
            ),
            (
                "bad-row",
                lambda d: (d / "eval_data/commonsense_reasoning/copa.jsonl").write_text('{"query": 1}\n'),
                r"^error: .*/copa.jsonl:1: field 'query' must be a string$",
            ),
            (
                "bad-json",
                lambda d: (d / "eval_data/commonsense_reasoning/copa.jsonl").write_text("{oops\n"),
                r"^error: .*/copa.jsonl:1: malformed JSON \(.*\)$",
            ),
            (
                "unknown-type",
                lambda d: (d / "core.yaml").write_text(
                    (d / "core.yaml").read_text().replace("icl_task_type: schema", "icl_task_type: ranking")
                ),
                r"^error: .*/core.yaml task 'winograd': unknown icl_task_type 'ranking' \(expected one of "
                r"multiple_choice, schema, language_modeling\)$",
            ),
        )
    ),  # fmt: skip
    Case(
        "24-core-bundle-not-a-directory",
        ["eval", "core", "--model", "{ckpt}", "--bundle", "{case}/nothing", "--device", "cpu"],
        1,
        r"^error: --bundle .*/nothing: not a directory \(expected core.yaml, eval_meta_data.csv, eval_data/\)$",
    ),
    # 14. GGUF export (compression issue)
    Case(
        "14-gguf-unknown-quant",
        ["export", "{ckpt}", "--format", "gguf", "--quant", "q4_k", "--out", "{case}/m.gguf"],
        1,
        r"^error: unknown GGUF quantisation 'q4_k'; choose one of f32, f16, q8_0$",
        after=lambda w, _: not (w.case_dir / "m.gguf").exists() or pytest.fail("wrote a file"),
    ),
    Case(
        "14-quant-without-gguf",
        ["export", "{ckpt}", "--quant", "q8_0", "--out", "{case}/hf"],
        1,
        r"^error: --quant applies to --format gguf only$",
    ),
    Case(
        "14-gguf-out-over-the-source",
        ["export", "{case}/model.pt", "--format", "gguf", "--out", "{case}/model.pt", "--force"],
        1,
        r"^error: --out .*/model.pt overlaps the source .*/model.pt; writing there would destroy it",
        setup=lambda w: nanogpt_pt(w),
        unchanged=["{case}/model.pt"],
    ),
    Case(
        "14-gguf-out-is-a-directory",
        ["export", "{ckpt}", "--format", "gguf", "--out", "{case}/models", "--force"],
        1,
        r"^error: --out .*/models is a directory or another non-file; choose a file path such as model.gguf$",
        setup=lambda w: (w.case_dir / "models").mkdir(),
        after=lambda w, _: list((w.case_dir / "models").iterdir()) == [] or pytest.fail("wrote into it"),
    ),
    Case(
        "14-distill-teacher-with-another-vocabulary",
        [*TRAIN, "--out", "{case}/run", "--steps", "1", "--distill-from", "{case}/teacher"],
        1,
        r"^error: --distill-from .*/teacher: the teacher's vocabulary has 50,400 rows, the student's 50,304; "
        r"distillation needs the same tokenizer",
        setup=other_vocabulary_model,
        after=lambda w, _: not (w.case_dir / "run").exists() or pytest.fail("created the run directory"),
    ),
    # issue 23: a mistyped local --model path fails at once (it waited 28 s on Hugging Face Hub retries)
    Case(
        "23-mistyped-local-model-path",
        ["sample", "--model", "runs/dmeo", "--max-new-tokens", "2"],
        1,
        r"^error: model not found: runs/dmeo \(no such file or directory\)$",
        setup=lambda w: (w.case_dir / "runs" / "demo").mkdir(parents=True),
        within=5.0,
    ),
    # 27. Hugging Face sources, ready-made shards and mixtures (issue 27): nothing is written but checked shards
    Case(
        "27-prepare-hf-hub-unreachable",
        ["prepare", "hf", "openwebtext", "--out", "{case}/d"],
        1,
        r"^error: cannot open dataset 'Skylion007/openwebtext' \(split 'train'\): the Hugging Face Hub is "
        r"unreachable \(HF_HUB_OFFLINE is set\); use a local copy \(docs/data.md\)$",
        setup=hub_offline,
        after=lambda w, _: not (w.case_dir / "d").exists() or pytest.fail("created --out"),
    ),
    Case(
        "27-prepare-hf-wrong-field",
        ["prepare", "hf", "{case}/ds", "--out", "{case}/d", "--text-field", "content"],
        1,
        r"^error: dataset '.*/ds' \(split 'train'\) has no column 'content' \(columns: text, id\); set --text-field$",
        setup=hub_dataset,
        after=lambda w, _: not (w.case_dir / "d").exists() or pytest.fail("created --out"),
    ),
    Case(
        "27-prepare-hf-wrong-split",
        ["prepare", "hf", "{case}/ds", "--out", "{case}/d", "--split", "validation"],
        1,
        r"^error: cannot open dataset '.*/ds' \(split 'validation'\): Bad split: validation\. Available splits: "
        r"\['train'\]$",
        setup=hub_dataset,
    ),
    Case(
        "27-prepare-hf-two-names",
        ["prepare", "hf", "{case}/ds", "tinystories", "--out", "{case}/d"],
        1,
        r"^error: the hf source takes one dataset NAME \(e.g. `gpt2 prepare hf roneneldan/TinyStories`\)$",
    ),
    Case(
        "27-pretokenized-hub-unreachable",
        ["prepare", "fineweb-edu", "--pretokenized", "--out", "{case}/d"],
        1,
        r"^error: cannot list kjj0/finewebedu10B-gpt2: the Hugging Face Hub is unreachable \(HF_HUB_OFFLINE is set\)",
        setup=hub_offline,
        after=lambda w, _: not (w.case_dir / "d").exists() or pytest.fail("created --out"),
    ),
    *(
        Case(
            f"27-pretokenized-{name}",
            ["prepare", "fineweb-edu", "--pretokenized", "--data-files", "{case}/hub", "--out", "{case}/d", "--quiet"],
            1,
            rf"^error: .*/d/\.download/finewebedu_train_000001\.bin: {message}",
            setup=setup,
            unchanged=["{case}/hub"],
            after=lambda w, _: (  # the val shard before it is kept, the bad one is not
                sorted(p.name for p in (w.case_dir / "d").glob("[!.]*"))
                == ["finewebedu_val_000000.bin", "manifest.json"]
                or pytest.fail(str(list((w.case_dir / "d").iterdir())))
            ),
        )
        for name, setup, message in (
            ("wrong-header", published_shards(magic=7), r"bad magic number 7 \(expected 20240520\)"),
            ("token-out-of-range", published_shards(token=50257), r"token id 50257 at offset 100 is outside"),
            ("other-tokenizer", published_shards(shift=True), r"the document at token \d+ does not re-tokenize"),
        )
    ),
    Case(
        "27-pretokenized-with-val-tokens",
        ["prepare", "fineweb-edu", "--pretokenized", "--val-tokens", "5M", "--out", "{case}/d"],
        1,
        r"^error: --pretokenized takes the published shards as they are; drop --val-tokens$",
    ),
    Case(
        "27-train-mix-weight",
        [*TRAIN, "--out", "{case}/run", "--mix", "{data}:1.5"],
        1,
        r"^error: --mix '.*:1\.5' is not DIR:WEIGHT with a weight in \(0, 1\), e\.g\. data/mine:0\.1$",
        after=lambda w, _: not (w.case_dir / "run").exists() or pytest.fail("created the run directory"),
    ),
    Case(
        "27-train-mix-sum",
        [*TRAIN, "--out", "{case}/run", "--mix", "{data}:0.6,{data}:0.5"],
        1,
        r"^error: --mix weights add up to 1\.1; they must stay below 1 to leave --data a share$",
        after=lambda w, _: not (w.case_dir / "run").exists() or pytest.fail("created the run directory"),
    ),
    Case(
        "27-train-mix-missing-dataset",
        [*TRAIN, "--out", "{case}/run", "--mix", "{case}/nothing:0.1"],
        1,
        r"^error: dataset directory not found: .*/nothing \(create it with `gpt2 prepare",
        after=lambda w, _: not (w.case_dir / "run").exists() or pytest.fail("created the run directory"),
    ),
]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    base = tmp_path_factory.mktemp("bad-input")
    data = prepared_dataset(base)
    run = base / "run"
    argv = [*TRAIN, "--out", str(run), "--steps", "2", "--save-every", "1", "--keep-last", "0"]
    assert main([a.format(data=data) for a in argv]) == 0
    return World(base, data, run)


def run_case(case: Case, world: World, capsys) -> tuple[int, str]:
    argv = [world.fill(a) for a in case.argv]
    if case.call is not None:
        capsys.readouterr()
        try:
            case.call(world)
            code = 0
        except GPT2Error as exc:
            print(f"error: {exc}", file=sys.stderr)
            code = 1
        return code, capsys.readouterr().err
    if case.process is None:
        capsys.readouterr()
        try:
            code = main(argv)
        except SystemExit as exc:  # argparse rejected an argument (usage line + error, exit 2)
            code = exc.code
        return code, capsys.readouterr().err
    log = world.case_dir / "stderr.txt"
    with log.open("w") as err:
        env = {**subprocess_env(), "PYTHONPATH": str(SRC)}  # the cwd is the case's directory: an absolute path
        proc = subprocess.Popen([*GPT2, *argv], stdout=subprocess.DEVNULL, stderr=err, env=env)
        try:
            case.process(world, proc)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    return proc.returncode, log.read_text()


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_bad_input(case: Case, world: World, capsys, monkeypatch, one_torch_thread):
    if case.root and os.geteuid() != 0:
        pytest.skip("needs root to mount a tmpfs")
    world.new_case(case.id)
    monkeypatch.chdir(world.case_dir)
    try:
        check_case(case, world, capsys)
    finally:
        while PROCESSES:
            PROCESSES.pop().kill()
        while MOUNTS:
            subprocess.run(["umount", str(MOUNTS.pop())], check=False)


def check_case(case: Case, world: World, capsys) -> None:
    if case.setup is not None:
        case.setup(world)
    before = {path: tree_hashes(Path(world.fill(path))) for path in case.unchanged}
    start = time.monotonic()
    code, stderr = run_case(case, world, capsys)
    seconds = time.monotonic() - start
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert code == case.code, stderr
    if case.stderr is None:
        assert lines == [], stderr
    else:
        assert lines and re.search(case.stderr, lines[0]), stderr
        assert "Traceback" not in stderr, stderr
    for path, hashes in before.items():
        assert tree_hashes(Path(world.fill(path))) == hashes, f"{path} changed"
    assert case.within is None or seconds < case.within, f"took {seconds:.1f} s"
    if case.after is not None:
        case.after(world, stderr)
