#!/usr/bin/env bash
# The CIFAR-100 table on a GPU machine: mdistiller's recipe (configs/cifar100/, 240 epochs, batch 64)
# for the reference pair resnet32x4 → resnet8x4. Trains the teacher once (seed 0), then the baseline
# and every method for each seed, then prints a table (per-seed top-1, mean ± std, delta vs baseline).
#
#   benchmarks/cifar100.sh --data DIR [--seeds "1 2 3"] [--methods "kd dkd crd"] [--out runs/cifar100]
#                          [--set KEY=VALUE ...]    # passed to every run, e.g. --set train.amp=bf16
#
# DIR: the folder holding cifar-100-python/ (train, test, meta from cifar-100-python.tar.gz), the
# folder itself, or the archive. Env vars SEEDS, METHODS, OUT, KDFORGE (the command that runs
# kdforge, default "python -m kdforge") do the same as the flags. Resumable: a finished run
# (summary.json) is skipped, an interrupted one continues from its last.pt; rerun the same command.
# The full table is 1 + 14 × 3 runs of 240 epochs (not timed yet: no GPU was available when this was
# written); pass --methods / --seeds to split it over machines or days.
set -euo pipefail
cd "$(dirname "$0")/.."

DATA="${DATA:-}"
SEEDS="${SEEDS:-1 2 3}"
METHODS="${METHODS:-baseline kd dkd dist logit_std fitnet at nst sp ofd vid rkd pkt crd}"
OUT="${OUT:-runs/cifar100}"
KDFORGE="${KDFORGE:-python -m kdforge}"
SETS=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --data) DATA="$2"; shift 2 ;;
    --seeds) SEEDS="$2"; shift 2 ;;
    --methods) METHODS="$2"; shift 2 ;;
    --out) OUT="$2"; shift 2 ;;
    --set) SETS+=(--set "$2"); shift 2 ;;
    -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
    *) echo "cifar100.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
if [[ -z "$DATA" ]]; then
  echo "cifar100.sh: give --data DIR, the folder holding cifar-100-python/ (see docs/cifar100.md)" >&2
  exit 2
fi
for m in $METHODS; do
  [[ -f "configs/cifar100/$m.yaml" ]] || { echo "cifar100.sh: no configs/cifar100/$m.yaml" >&2; exit 2; }
done

run() {  # run CONFIG RUN_DIR [--set ...]: train, continue, or skip when finished
  local config="$1" dir="$2"; shift 2
  if [[ -f "$dir/summary.json" ]]; then echo "done: $dir"; return; fi
  local resume=()
  [[ -f "$dir/last.pt" ]] && resume=(--resume)
  echo "=== $config → $dir"
  $KDFORGE train "$config" --data "$DATA" --out "$dir" "${resume[@]}" "${SETS[@]}" "$@"
}

TEACHER="$OUT/teacher/seed0"
run configs/cifar100/teacher.yaml "$TEACHER" --set seed=0
for seed in $SEEDS; do
  for m in $METHODS; do
    extra=(--set "seed=$seed")
    [[ "$m" != baseline ]] && extra+=(--set "teachers.teacher.weights=$TEACHER/best.pt")
    run "configs/cifar100/$m.yaml" "$OUT/$m/seed$seed" "${extra[@]}"
  done
done

python - "$OUT" $METHODS <<'PY'
"""Table: final-epoch top-1 per seed (the honest number) and the best epoch's (what mdistiller reports)."""
import json, statistics, sys
from pathlib import Path

out, methods = Path(sys.argv[1]), sys.argv[2:]
def runs(m):
    rows = []
    for f in sorted((out / m).glob("seed*/summary.json")):
        s = json.loads(f.read_text())
        rows.append((f.parent.name, s["final"][s["main_metric"]], s["best"]["value"], s["train_time_s"] / s["epochs"]))
    return rows
def ms(v):
    return f"{statistics.mean(v):.2f} ± {statistics.stdev(v):.2f}" if len(v) > 1 else (f"{v[0]:.2f}" if v else "–")
t = runs("teacher")
print(f"\nteacher resnet32x4: final top-1 {ms([r[1] for r in t])}\n")
base = [r[1] for r in runs("baseline")]
print("| method | final top-1 (mean ± std) | per seed | Δ vs baseline | best-epoch top-1 | s/epoch |")
print("|---|---|---|---|---|---|")
for m in methods:
    r = runs(m)
    if not r:
        print(f"| {m} | not run | | | | |"); continue
    final = [x[1] for x in r]
    delta = f"{statistics.mean(final) - statistics.mean(base):+.2f}" if base and m != "baseline" else ""
    seeds = ", ".join(f"{x[0]}: {x[1]:.2f}" for x in r)
    print(f"| {m} | {ms(final)} | {seeds} | {delta} | {ms([x[2] for x in r])} | {statistics.median(x[3] for x in r):.1f} |")
PY
