#!/usr/bin/env bash
# Semi-supervised MNIST at 100 labels on one GPU, in resumable chunks (issue 31), from the presets
# in configs/: M2, the ADGM and the SDGM side by side, and M1 then M1+M2. Every training runs for
# --time-budget SECONDS and leaves a checkpoint; calling the script again with the same OUT_DIR
# goes on where each stopped (--resume). M1 trains in the first call only: M1+M2 starts in the
# second, on M1 as it then is (a run on M1's latents refuses them once M1 is trained on again).
#
#   benchmarks/semisupervised_gpu.sh OUT_DIR SECONDS    # start, or go on, for SECONDS each
#   benchmarks/semisupervised_gpu.sh OUT_DIR eval       # dgm eval every run: the test error of
#                                                       # q(y|x) on all 10000 test labels
# MNIST comes from $DGMKIT_DATA (the IDX files under mnist/). Other rows: the same presets with
# --labels 600 / 1000 / 3000 and --labels-seed 1, 2 (docs/uses/semi-supervised.md). The exit
# status is 1 where any run failed (its OUT_DIR/RUN.log says why). DEVICE=cpu and PYTHON (a Python
# with torch) for a smoke test of the script (tests/test_run_scripts.py, --run-slow): SECONDS 25,
# enough for M1 to have active units, whose latents M1+M2 keeps.
set -u
out=${1:?OUT_DIR}; what=${2:?SECONDS or eval}
mkdir -p "$out"
py=${PYTHON:-python3}  # a Python with torch
dgm() { PYTHONPATH=src${PYTHONPATH:+:$PYTHONPATH} "$py" -c 'import sys; from dgmkit.cli.main import main; sys.exit(main())' "$@"; }
export OMP_NUM_THREADS=2 PYTHONUNBUFFERED=1
device=${DEVICE:-cuda}  # DEVICE=cpu: a smoke test of the script itself

# the exit status: 1 where any of the background commands failed (its log says why)
pids=()
finish() { local status=0 p; for p in "${pids[@]}"; do wait "$p" || status=1; done; return $status; }

if [ "$what" = eval ]; then
  for run in m2-100 adgm-100 sdgm-100 m1m2-100; do
    if [ -d "$out/$run" ]; then
      dgm eval "$out/$run" --device "$device" --iw-samples 100 > "$out/$run.eval.log" 2>&1 &
      pids+=($!)
    fi
  done
  finish; status=$?
  grep -H "accuracy\|NLL\|error" "$out"/*.eval.log
  exit $status
fi

# train RUN_NAME PRESET [flags]: a new run from the preset, or the run in OUT_DIR/RUN_NAME resumed
train() {
  local name=$1 preset=$2; shift 2
  if [ -f "$out/$name/config.json" ]; then
    dgm train --resume --out "$out/$name" --device "$device" --time-budget "$what" --quiet >> "$out/$name.log" 2>&1
  else
    dgm train --config "configs/$preset.toml" "$@" --out "$out/$name" --device "$device" --time-budget "$what" --quiet \
      >> "$out/$name.log" 2>&1
  fi
}

train m2-100 m2-mnist-100 & pids+=($!)
train adgm-100 adgm-mnist-100 & pids+=($!)
train sdgm-100 sdgm-mnist-100 & pids+=($!)
if [ -f "$out/m1/config.json" ]; then
  train m1m2-100 m1m2-mnist-100 --codes-of "$out/m1" & pids+=($!)
else
  train m1 m1-mnist & pids+=($!)
fi
finish; status=$?
tail -n 2 "$out"/*.log
exit $status
