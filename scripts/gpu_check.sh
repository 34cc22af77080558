#!/usr/bin/env bash
# The GPU check: runs, on one CUDA GPU, the paths the CPU test suite cannot, in at most about 8 minutes,
# and prints a Markdown table (the GPU's name first) for docs/benchmarks.md.
#
#   scripts/gpu_check.sh [OUT_DIR]        (default runs/gpu_check; each step's log is OUT_DIR/STEP.log)
#
# Steps: the CUDA unit tests (tests/gpu: fp16 with its gradient scaler and an exact resume, bf16 where the GPU
# has it natively, cudnn.benchmark, channels_last, torch.compile, a 1-process torchrun on NCCL, predict and ONNX
# export of a CUDA run); 1 epoch of the original preset (the seed README's recipe, 224 px) on MNIST with the final
# evaluation, and its 20 epochs projected from it; googlenet benchmark against torchvision at 32 and 224 px, with and
# without --compile. A failed step is a row that says FAILED, and the script exits 1 at the end.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:-runs/gpu_check}
mkdir -p "$out"
export PYTHONUNBUFFERED=1
failed=0
rows=()

# step NAME SECONDS COMMAND...: run it under a time limit, log it, add a row with its last line
step() {
  local name=$1 limit=$2 start end status
  shift 2
  start=$(date +%s)
  if timeout "$limit" "$@" >"$out/$name.log" 2>&1; then status=ok; else status="FAILED (exit $?)"; failed=1; fi
  end=$(date +%s)
  rows+=("| $name | $status | $((end - start)) | $(grep -v '^\s*$' "$out/$name.log" | tail -n 1 | tr '|' '/') |")
}

gpu=$(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null | head -n 1)
torch_line=$(python -c "import torch; print(f'PyTorch {torch.__version__}, CUDA {torch.version.cuda}, bf16 native: {torch.cuda.is_bf16_supported(including_emulation=False)}')")

step unit-tests 240 python -m pytest -q -n 0 -m gpu tests/gpu -p no:cacheprovider  # one process: one module, one GPU
step seed-1-epoch 180 googlenet train --preset original --epochs 1 --device cuda --project "$out" --name seed --exist-ok
step seed-20-epochs-projected 30 python - "$out/seed" <<'PY'
import csv, json, sys
from pathlib import Path
run = Path(sys.argv[1])
epoch = float(next(csv.DictReader(open(run / "results.csv")))["epoch_time"])
acc = json.loads((run / "metrics.json").read_text())["splits"]["test"]["accuracy"]
print(f"1 epoch {epoch:.0f} s (test {100 * acc:.2f}% after it): 20 epochs about {20 * epoch / 60:.0f} min plus the final evaluation")
PY
for size in 32 224; do
  step "benchmark-${size}px" 150 googlenet benchmark --device cuda --image-size "$size" --batch-size 128 --compare torchvision --steps 10 --repeats 3
  step "benchmark-${size}px-compile" 240 googlenet benchmark --device cuda --image-size "$size" --batch-size 128 --compare torchvision --steps 10 --repeats 3 --compile
done

echo
echo "GPU: ${gpu:-unknown}; $torch_line; $(date -u +%Y-%m-%d); commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
echo
echo "| step | result | seconds | last line |"
echo "|---|---|---|---|"
printf '%s\n' "${rows[@]}"
exit $failed
