#!/usr/bin/env bash
# Muon vs AdamW (--recipe muon vs --recipe gpt2) on the Wikipedia stand-in, on a CPU: the measurement behind
# docs/training.md ("Muon vs AdamW"). Same model shape, data, seed and token budget for every run:
# Muon runs name --muon-qkv: the lr sweep uses fused (one Newton-Schulz per matrix, stock torch.optim.Muon).
#   1. lr sweeps, run in pairs (one AdamW + one Muon at a time, so both see the same machine load):
#      AdamW --lr in ADAMW_LRS, Muon --muon-lr in MUON_LRS (its AdamW groups at --lr MUON_ADAMW_LR);
#   2. at the best Muon lr: c_attn orthogonalised as one matrix (fused, the sweep's run) vs three (split);
#   3. Muon with 60% and 50% of the token budget (its own full schedule): does it reach AdamW's final loss?
#   4. fused vs split again with a second seed, and split with 60% of the tokens;
# then a summary table (scripts/compare_recipes.py) and the plot. Finished runs are skipped, so a rerun resumes.
#
#   scripts/compare_recipes.sh [OUT_DIR]        # default runs/compare; about 40 CPU-minutes in all
#
# Environment: WIKI (the JSONL to prepare, default ../shared/data/wiki/enwiki_sample.jsonl), DATA (prepared
# dataset, default data/wiki), STEPS (default 80 steps of 1,024 tokens), GPT2 (the command, default gpt2),
# PYTHON (an interpreter with gpt2 importable, default python).
set -euo pipefail
OUT=${1:-runs/compare}
WIKI=${WIKI:-../shared/data/wiki/enwiki_sample.jsonl}
DATA=${DATA:-data/wiki}
STEPS=${STEPS:-80}
GPT2=${GPT2:-gpt2}
PYTHON=${PYTHON:-python}
ADAMW_LRS=(1e-3 2e-3 4e-3)
MUON_LRS=(0.01 0.02 0.04)
MUON_ADAMW_LR=4e-3
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1  # one core per run, two runs at a time

mkdir -p "$OUT"
if [ ! -f "$DATA/manifest.json" ]; then
  $GPT2 prepare files "$WIKI" --out "$DATA" --max-tokens 6000000 --val-tokens 500000 --quiet
fi
# 4 layers x 128 channels (7.3M parameters, 6.4M of them the tied token embedding), context 128
echo '{"model": {"n_layer": 4, "n_head": 4, "n_embd": 128, "block_size": 128}}' > "$OUT/shape.json"
COMMON=(--config "$OUT/shape.json" --data "$DATA" --seq-len 128 --batch-tokens 1024 --micro-batch 8
  --warmup-steps 10 --eval-every 10 --eval-tokens 8192 --hellaswag-every 0 --sample-every 0
  --save-every 0 --keep-last 1 --device cpu --seed 1337)

run() {  # run NAME STEPS [gpt2 train options...]: one training, CPU seconds to NAME.cpu
  local name=$1 steps=$2
  shift 2
  if [ -f "$OUT/$name.cpu" ]; then return; fi
  rm -rf "${OUT:?}/$name"
  /usr/bin/time -f "%U %S %e" -o "$OUT/$name.time" \
    $GPT2 train "${COMMON[@]}" --steps "$steps" --out "$OUT/$name" "$@" > "$OUT/$name.log" 2>&1
  mv "$OUT/$name.time" "$OUT/$name.cpu"
}

for i in 0 1 2; do
  run "adamw_lr${ADAMW_LRS[$i]}" "$STEPS" --recipe gpt2 --lr "${ADAMW_LRS[$i]}" &
  run "muon_lr${MUON_LRS[$i]}" "$STEPS" --recipe muon --muon-qkv fused --lr "$MUON_ADAMW_LR" --muon-lr "${MUON_LRS[$i]}" &
  wait
done
BEST=$($PYTHON scripts/compare_recipes.py best "$OUT" muon_lr)
short=$((STEPS * 6 / 10))
half=$((STEPS / 2))
run "muon_split_lr$BEST" "$STEPS" --recipe muon --lr "$MUON_ADAMW_LR" --muon-lr "$BEST" --muon-qkv split &
run "muon_${short}steps_lr$BEST" "$short" --recipe muon --muon-qkv fused --lr "$MUON_ADAMW_LR" --muon-lr "$BEST" &
wait
run "muon_${half}steps_lr$BEST" "$half" --recipe muon --muon-qkv fused --lr "$MUON_ADAMW_LR" --muon-lr "$BEST"
# fused vs split once more with another seed (init and data order), and split with 60% of the tokens
run "muon_seed2_lr$BEST" "$STEPS" --recipe muon --muon-qkv fused --lr "$MUON_ADAMW_LR" --muon-lr "$BEST" --seed 1338 &
run "muon_split_seed2_lr$BEST" "$STEPS" --recipe muon --lr "$MUON_ADAMW_LR" --muon-lr "$BEST" --muon-qkv split \
  --seed 1338 &
wait
run "muon_split_${short}steps_lr$BEST" "$short" --recipe muon --lr "$MUON_ADAMW_LR" --muon-lr "$BEST" --muon-qkv split
$PYTHON scripts/compare_recipes.py summary "$OUT" | tee "$OUT/summary.md"
ADAMW_BEST=$($PYTHON scripts/compare_recipes.py best "$OUT" adamw_lr)
$GPT2 plot "$OUT/adamw_lr$ADAMW_BEST" "$OUT/muon_lr$BEST" "$OUT/muon_split_lr$BEST" \
  "$OUT/muon_split_${short}steps_lr$BEST" --out "$OUT/muon_vs_adamw.png"
$PYTHON scripts/compare_recipes.py overhead "$OUT" | tee -a "$OUT/summary.md"
