#!/usr/bin/env bash
# M1+M2 at LABELS labels on a 2-core CPU, as the committed rows of issue 31 were run
# (benchmarks/RESULTS.md, "M1+M2 at ... labels on the CPU"): M1 (configs/m1-mnist.toml) for the
# 670 epochs those rows' M1 had; then three labelled subsets (--labels-seed 0, 1, 2) side by
# side, one thread each, for 400 epochs (configs/m1m2-mnist-100.toml at 100 labels, else
# configs/m1m2-mnist-600.toml with --labels LABELS); then `dgm eval --iw-samples 100` of each,
# and the test error of every subset with their mean and standard deviation.
#
#   benchmarks/m1m2_cpu.sh OUT_DIR LABELS [SECONDS]
#
# SECONDS (optional): a --time-budget for each training command of this call; calling again
# with the same OUT_DIR and LABELS goes on where each run stopped (--resume, exactly). M1 is
# finished before any M2 run starts (an M2 run refuses M1's latents once M1 trains on). Exit
# status: 0 when everything is done, 2 when a budget ran out (call again), 1 on a failure (the
# run's OUT_DIR/NAME.log says why). Time on 2 idle cores (2026-11-24): M1 about 37 minutes
# (3.1-3.6 s an epoch), each M2 phase about 2 hours (15-19 s an epoch with three side by side),
# each evaluation 37 s: a 180-minute session fits one label count if it starts at once.
# MNIST from $DGMKIT_DATA (mnist/, the IDX files). PYTHON: a Python with torch (default python3).
# M1_EPOCHS and EPOCHS change the two budgets, EVAL_EXTRA adds flags to dgm eval (a smoke test,
# tests/test_run_scripts.py: M1_EPOCHS=2 EPOCHS=1 EVAL_EXTRA="--limit 200").
set -u
out=${1:?OUT_DIR}; labels=${2:?LABELS: 100, 600, 1000 or 3000}; budget=${3:-}
case "$labels" in 100|600|1000|3000) ;; *) echo "LABELS must be 100, 600, 1000 or 3000, got '$labels'" >&2; exit 1 ;; esac
mkdir -p "$out"
py=${PYTHON:-python3}
dgm() { PYTHONPATH=src${PYTHONPATH:+:$PYTHONPATH} "$py" -c 'import sys; from dgmkit.cli.main import main; sys.exit(main())' "$@"; }
export PYTHONUNBUFFERED=1
limit=()
[ -n "$budget" ] && limit=(--time-budget "$budget")
if [ "$labels" = 100 ]; then preset=m1m2-mnist-100; else preset=m1m2-mnist-600; fi

# train NAME FLAGS...: the run OUT_DIR/NAME from FLAGS, or resumed where it stopped. Returns 0
# when it has finished, 2 when this call's budget stopped it, 1 when it failed.
train() {
  local name=$1; shift
  local log="$out/$name.log" said
  said=$(mktemp)
  if [ -f "$out/$name/config.json" ]; then
    dgm train --resume --out "$out/$name" "${limit[@]}" --quiet > "$said" 2>&1
  else
    dgm train "$@" --out "$out/$name" "${limit[@]}" --quiet > "$said" 2>&1
  fi
  local code=$?
  cat "$said" >> "$log"
  if [ $code -ne 0 ]; then rm -f "$said"; return 1; fi
  grep -q "stopped by --time-budget" "$said" && code=2  # what this command said, not an earlier one
  rm -f "$said"
  return $code
}

OMP_NUM_THREADS=2 train m1 --config configs/m1-mnist.toml --epochs "${M1_EPOCHS:-670}"
status=$?
tail -n 2 "$out/m1.log"
[ $status -eq 0 ] || exit $status

pids=()
for s in 0 1 2; do
  OMP_NUM_THREADS=1 train "m1m2-$labels-s$s" --config "configs/$preset.toml" --codes-of "$out/m1" \
    --labels "$labels" --labels-seed "$s" --epochs "${EPOCHS:-400}" &
  pids+=($!)
done
status=0
for p in "${pids[@]}"; do
  wait "$p"
  case $? in 0) ;; 2) [ $status -eq 1 ] || status=2 ;; *) status=1 ;; esac
done
for s in 0 1 2; do tail -n 2 "$out/m1m2-$labels-s$s.log"; done
[ $status -eq 0 ] || exit $status

for s in 0 1 2; do
  run="$out/m1m2-$labels-s$s"
  [ -f "$run/eval.json" ] && [ "$run/eval.json" -nt "$run/best.safetensors" ] && continue
  OMP_NUM_THREADS=2 dgm eval "$run" --iw-samples 100 ${EVAL_EXTRA:-} > "$run.eval.log" 2>&1 || { cat "$run.eval.log"; exit 1; }
done
"$py" - "$out" "$labels" <<'PY'
import json, pathlib, statistics, sys
out, labels = pathlib.Path(sys.argv[1]), sys.argv[2]
errors = []
for s in range(3):
    run = out / f"m1m2-{labels}-s{s}"
    r = json.loads((run / "eval.json").read_text())
    acc = next(t["value"] for t in r["terms"] if t["name"] == "accuracy")
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    best = max(rows, key=lambda row: row["valid_elbo"])["epoch"]  # the best checkpoint's: the validation bound
    errors.append(100 * (1 - acc))
    print(f"{run.name}: test error {errors[-1]:.2f}% on {r['n']} test images; NLL of M1's latents z1 (k = {r['iw_samples']}) "
          f"{r['nll']:.2f} +- {r['nll_stderr']:.2f} nats; best epoch {best}")
print(f"M1+M2 at {labels} labels: {statistics.fmean(errors):.2f}% +- {statistics.stdev(errors):.2f} (mean +- sd over 3 subsets)")
PY
