#!/usr/bin/env bash
# Ren et al.'s likelihood ratio on Fashion-MNIST (in) against MNIST (out) on one GPU, in
# resumable chunks (issue 31), from configs/ood-fashion-pixelcnn.toml and its background model
# (configs/ood-fashion-pixelcnn-background.toml, trained on mutated inputs): both models train
# side by side for --time-budget SECONDS and leave checkpoints; call again with the same OUT_DIR
# to go on (--resume; each preset stops after its 32 epochs), then `ood` scores all 10000 test
# images of each set: AUROC, AUPRC and FPR at 95% TPR of -log p(x), the likelihood ratio,
# typicality and input complexity, written to OUT_DIR/ood-fashion-mnist.json.
#
#   benchmarks/ood_gpu.sh OUT_DIR SECONDS    # start, or go on, for SECONDS each
#   benchmarks/ood_gpu.sh OUT_DIR ood        # dgm ood with the background model (more flags
#                                            # after it go to dgm ood, e.g. --limit 200)
#
# Data from $DGMKIT_DATA: fashion-mnist/ (the four IDX files of the Debian package
# dataset-fashion-mnist, /usr/share/datasets/fashion-mnist) and mnist/. The exit status is 1
# where either training failed (its log says why). DEVICE=cpu and PYTHON (a Python with torch;
# default python3) for a smoke test of the script itself (tests/test_run_scripts.py, --run-slow:
# SECONDS 10, then `ood --limit 40 --fit-limit 60`).
set -u
out=${1:?OUT_DIR}; what=${2:?SECONDS or ood}; shift 2
mkdir -p "$out"
py=${PYTHON:-python3}
dgm() { PYTHONPATH=src${PYTHONPATH:+:$PYTHONPATH} "$py" -c 'import sys; from dgmkit.cli.main import main; sys.exit(main())' "$@"; }
export OMP_NUM_THREADS=4 PYTHONUNBUFFERED=1
device=${DEVICE:-cuda}
# on a GPU every run trains compiled (--compile with CUDA graphs: 2x to 6x a plain eager loop on the
# H200, benchmarks/RESULTS.md); COMPILE= (empty) trains eagerly, COMPILE=--compile on the CPU too
compile=${COMPILE-$(case "$device" in cuda*) echo --compile ;; esac)}

if [ "$what" = ood ]; then
  dgm ood "$out/fashion" --in test --ood mnist --background "$out/fashion-bg" --device "$device" \
    --json "$out/ood-fashion-mnist.json" --out "$out/ood-fashion-mnist.png" --force "$@"
  exit $?
fi

train() {  # train RUN_NAME PRESET: a new run from the preset, or the run in OUT_DIR/RUN_NAME resumed
  local name=$1 preset=$2
  if [ -f "$out/$name/config.json" ]; then
    dgm train --resume --out "$out/$name" --device "$device" $compile --time-budget "$what" --quiet >> "$out/$name.log" 2>&1
  else
    dgm train --config "configs/$preset.toml" --out "$out/$name" --device "$device" $compile --time-budget "$what" --quiet \
      >> "$out/$name.log" 2>&1
  fi
}

train fashion ood-fashion-pixelcnn & a=$!
train fashion-bg ood-fashion-pixelcnn-background & b=$!
status=0
wait $a || status=1  # 1 where either training failed (its log says why)
wait $b || status=1
tail -n 2 "$out"/fashion*.log
exit $status
