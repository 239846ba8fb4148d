#!/usr/bin/env bash
# Prepare .gpu/ (ignored by git) for scripts/gpu-check.sh on a lent GPU machine, whose image
# has Python 3.12 with torch, transformers, pluggy, safetensors, tensorboard, triton and
# pytest but not the packages below, and cannot reach a package index. Run here, once:
#
#   bash scripts/gpu-carry.sh
#
# .gpu/wheels   the missing dependencies as CPython 3.12 manylinux wheels, at the versions
#               this checkout's .venv uses (gramx and its plugins are installed from the
#               source tree there, so they are always the code that travels)
# .gpu/tokenizer  all-MiniLM-L6-v2's tokenizer files (~0.7 MB): the 90 MB weights exceed what
#               a call may carry, so the check builds a small random text model around them
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
[ -x "$PY" ] || { echo "run 'make test' (or scripts/setup.sh) first: no .venv" >&2; exit 1; }
PACKAGES="pydantic pydantic-core annotated-types typing-inspection pytorch-metric-learning soundfile cffi pycparser symile webdataset braceexpand"

rm -rf .gpu && mkdir -p .gpu/wheels .gpu/tokenizer
for name in $PACKAGES; do
    version=$("$PY" -m pip show "$name" | sed -n 's/^Version: //p')
    "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
        --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d .gpu/wheels "$name==$version"
done
model=$("$PY" -c 'from gramx_text.encoder import bundled_model_dir; print(bundled_model_dir())')
cp "$model"/{config.json,tokenizer.json,tokenizer_config.json,special_tokens_map.json,vocab.txt} .gpu/tokenizer/
du -sh .gpu/wheels .gpu/tokenizer
