#!/usr/bin/env bash
# The CUDA paths on a GPU machine, end to end (the results are in docs/gpu.md):
#   bash benchmarks/gpu_check.sh [OUT]          # about 5 minutes on one H100
# 1. tests/test_cuda.py: fp16 AMP + GradScaler (checkpointed and resumed), an fp16-autocast teacher, the
#    teacher cache built and read on the GPU (skipped where there is no GPU, as in CI);
# 2. the demo pair (configs/fmnist/, 60k images, 5 epochs): teacher, baseline, and KD in fp32, bf16 AMP and
#    fp16 AMP, and KD under torchrun (NCCL, one process per GPU);
# 3. what the teacher cache buys on the GPU: benchmarks/cache.py's interleaved epoch timing.
# Fashion-MNIST is looked up as usual ($KDFORGE_DATA, /usr/share/datasets/fashion-mnist, ./data/fashion-mnist).
set -euo pipefail
OUT=${1:-runs/gpu}
PY=${PY:-python3}
NGPU=$($PY -c "import torch; print(torch.cuda.device_count())")
[ "$NGPU" -ge 1 ] || { echo "gpu_check: no CUDA device is visible; this script checks the GPU paths" >&2; exit 1; }
mkdir -p "$OUT"
$PY -c "import torch; print('torch', torch.__version__, 'CUDA', torch.version.cuda, torch.cuda.get_device_name(0))" \
  | tee "$OUT/env.txt"
$PY -m pytest -q -p no:cacheprovider tests/test_cuda.py -rA | tee "$OUT/test_cuda.txt"

run() { $PY -m kdforge train "$@" --quiet --overwrite; }
run configs/fmnist/teacher.yaml --out "$OUT/teacher"
T="$OUT/teacher/best.pt"
run configs/fmnist/baseline.yaml --out "$OUT/baseline"
run configs/fmnist/kd.yaml --out "$OUT/kd_fp32" --set teachers.teacher.weights="$T"
run configs/fmnist/kd.yaml --out "$OUT/kd_bf16" --set teachers.teacher.weights="$T" --set train.amp=bf16
run configs/fmnist/kd.yaml --out "$OUT/kd_fp16" --set teachers.teacher.weights="$T" --set train.amp=fp16
$PY -m torch.distributed.run --standalone --nproc_per_node "$NGPU" -m kdforge train configs/fmnist/kd.yaml \
  --out "$OUT/kd_torchrun" --quiet --overwrite --set teachers.teacher.weights="$T"
$PY benchmarks/cache.py --teacher "$T" --out "$OUT/cache" --parts build:1:all,epochs --repeats 3

$PY - "$OUT" <<'PY' | tee "$OUT/summary.md"
import csv, json, statistics, sys
from pathlib import Path
out = Path(sys.argv[1])
print("| run | device | processes | AMP | final top-1 % | median epoch s |")
print("|---|---|---|---|---|---|")
for name in ["teacher", "baseline", "kd_fp32", "kd_bf16", "kd_fp16", "kd_torchrun"]:
    d = out / name
    s = json.loads((d / "summary.json").read_text())
    with open(d / "metrics.csv", newline="") as f:
        t = statistics.median(float(r["epoch_time"]) for r in csv.DictReader(f))
    amp = name.split("_")[1] if name.startswith("kd_") and name != "kd_torchrun" else "off"
    print(f"| {name} | {s['device']} | {s['world_size']} | {amp} | {s['final']['top1']:.2f} | {t:.2f} |")
print()
print("cache epochs:", json.dumps(json.loads((out / "cache" / "results.json").read_text()).get("epochs"), indent=1))
PY
