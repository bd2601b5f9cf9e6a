#!/usr/bin/env bash
# The Python packages noodlebox needs that a bare CUDA image (torch, transformers, accelerate, aiohttp,
# numpy... already there) may lack, as wheels for its Python, into .gpu-wheels/ (git-ignored): a GPU
# machine that cannot reach a package index installs them from there (bench/gpu.sh does).
#   scripts/gpu_wheels.sh [PYTHON_VERSION]     # default 3.12
set -euo pipefail
cd "$(dirname "$0")/.."
version=${1:-3.12}
mkdir -p .gpu-wheels
# the versions this checkout's venv runs (make install), so the GPU run uses the same code
pin() { .venv/bin/pip list --format=freeze 2>/dev/null | grep -i -E "^$1==" | head -1; }
pure=""
for name in diffusers pydantic annotated-types typing-inspection openai-clip ftfy wcwidth torchsde trampoline; do
    pure="$pure $(pin "${name//-/[-_]}")"
done
# the one compiled package, for the target's Python; the rest are pure Python (built here if only an sdist exists)
.venv/bin/pip download -q --dest .gpu-wheels --only-binary=:all: --no-deps --python-version "$version" \
    --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 "$(pin 'pydantic[-_]core')"
# shellcheck disable=SC2086  # $pure is a list of pins
.venv/bin/pip wheel -q --wheel-dir .gpu-wheels --no-deps $pure "diffsynth==1.1.8"
ls .gpu-wheels
