#!/usr/bin/env bash
# Semi-supervised MNIST on one GPU, in resumable chunks (issue 31), from the presets in configs/:
# every run trains for --time-budget SECONDS a call and leaves a checkpoint; calling the script
# again with the same OUT_DIR goes on where each stopped (--resume). M1 trains in the first call
# only: M1+M2 starts in the second, on M1 as it then is (a run on M1's latents refuses them once
# M1 is trained on again), and one M1 (OUT_DIR/m1) serves every row.
#
#   benchmarks/semisupervised_gpu.sh OUT_DIR SECONDS    # start, or go on, for SECONDS each
#   benchmarks/semisupervised_gpu.sh OUT_DIR eval       # dgm eval every run (the test error of
#                                                       # q(y|x) on all 10000 test labels), and the
#                                                       # mean +- sd of each row over its subsets
# LABELS (default 100) picks the row: at 100, M2, the ADGM, the SDGM and M1+M2 (the papers report
# the ADGM and SDGM at 100 labels only); at 600, 1000 or 3000, M2 (its 100-label preset with
# --labels) and M1+M2 (configs/m1m2-mnist-600.toml, the authors' settings for 600 and more, with
# --labels). SUBSETS (default "0"): the labelled subsets (--labels-seed), "0 1 2" for a row's
# spread. Each (model, labels, subset) is the run OUT_DIR/MODEL-LABELS-sSUBSET; all of a call's
# runs train side by side. MNIST comes from $DGMKIT_DATA (the IDX files under mnist/). The exit
# status is 1 where any run failed (its OUT_DIR/RUN.log says why). DEVICE=cpu and PYTHON (a
# Python with torch) for a smoke test of the script (tests/test_run_scripts.py, --run-slow):
# SECONDS 25, enough for M1 to have active units, whose latents M1+M2 keeps.
set -u
out=${1:?OUT_DIR}; what=${2:?SECONDS or eval}
mkdir -p "$out"
py=${PYTHON:-python3}  # a Python with torch
dgm() { PYTHONPATH=src${PYTHONPATH:+:$PYTHONPATH} "$py" -c 'import sys; from dgmkit.cli.main import main; sys.exit(main())' "$@"; }
export OMP_NUM_THREADS=2 PYTHONUNBUFFERED=1
device=${DEVICE:-cuda}  # DEVICE=cpu: a smoke test of the script itself
# on a GPU every run trains compiled (--compile with CUDA graphs: 2x to 6x a plain eager loop on the
# H200, benchmarks/RESULTS.md); COMPILE= (empty) trains eagerly, COMPILE=--compile on the CPU too
compile=${COMPILE-$(case "$device" in cuda*) echo --compile ;; esac)}

# the exit status: 1 where any of the background commands failed (its log says why)
pids=()
finish() { local status=0 p; for p in "${pids[@]}"; do wait "$p" || status=1; done; return $status; }

if [ "$what" = eval ]; then
  runs=()
  for run in "$out"/*-s[0-9]*/; do
    run=${run%/}
    [ -f "$run/config.json" ] || continue
    dgm eval "$run" --device "$device" --iw-samples 100 ${EVAL_EXTRA:-} > "$run.eval.log" 2>&1 &
    pids+=($!); runs+=("$run")
  done
  status=0; scored=()  # the runs whose evaluation succeeded in this call: only their eval.json is this call's
  for i in "${!pids[@]}"; do
    if wait "${pids[$i]}"; then scored+=("${runs[$i]}"); else status=1; echo "failed: dgm eval ${runs[$i]} (${runs[$i]}.eval.log)"; fi
  done
  "$py" - "${scored[@]}" <<'PY' || status=1
import json, pathlib, re, statistics, sys
rows = {}
for run in sorted(sys.argv[1:]):
    ev = pathlib.Path(run) / "eval.json"
    m = re.fullmatch(r"(.+)-(\d+)-s(\d+)", ev.parent.name)
    if not m:
        continue
    r = json.loads(ev.read_text())
    acc = next(t["value"] for t in r["terms"] if t["name"] == "accuracy")
    of = "M1's latents z1" if str(r.get("dataset", "")).startswith("latents:") else "the images"  # M1+M2 models z1
    print(f"{ev.parent.name}: test error {100 * (1 - acc):.2f}% on {r['n']} test images, "
          f"NLL of {of} (k = {r['iw_samples']}) {r['nll']:.2f} nats")
    rows.setdefault((m[1], int(m[2])), []).append(100 * (1 - acc))
for (model, labels), errors in sorted(rows.items()):
    sd = f" +- {statistics.stdev(errors):.2f}" if len(errors) > 1 else ""
    print(f"{model} at {labels} labels: {statistics.fmean(errors):.2f}%{sd} over {len(errors)} labelled subset(s)")
PY
  exit $status
fi

# train RUN_NAME PRESET [flags]: a new run from the preset, or the run in OUT_DIR/RUN_NAME resumed
train() {
  local name=$1 preset=$2; shift 2
  if [ -f "$out/$name/config.json" ]; then
    dgm train --resume --out "$out/$name" --device "$device" $compile --time-budget "$what" --quiet >> "$out/$name.log" 2>&1
  else
    dgm train --config "configs/$preset.toml" "$@" --out "$out/$name" --device "$device" $compile --time-budget "$what" --quiet \
      >> "$out/$name.log" 2>&1
  fi
}

labels=${LABELS:-100}
case "$labels" in 100|600|1000|3000) ;; *) echo "LABELS must be 100, 600, 1000 or 3000, got '$labels'" >&2; exit 1 ;; esac
m1m2=$([ "$labels" = 100 ] && echo m1m2-mnist-100 || echo m1m2-mnist-600)
subsets=" "
for s in ${SUBSETS:-0}; do  # all checked before any run starts
  case "$s" in ''|*[!0-9]*) echo "SUBSETS are whole numbers, got '$s'" >&2; exit 1 ;; esac
  case "$subsets" in *" $s "*) echo "SUBSETS names $s twice" >&2; exit 1 ;; esac
  subsets="$subsets$s "
done
for s in $subsets; do
  flags=(--labels "$labels" --labels-seed "$s")
  train "m2-$labels-s$s" m2-mnist-100 "${flags[@]}" & pids+=($!)
  if [ "$labels" = 100 ]; then
    train "adgm-$labels-s$s" adgm-mnist-100 "${flags[@]}" & pids+=($!)
    train "sdgm-$labels-s$s" sdgm-mnist-100 "${flags[@]}" & pids+=($!)
  fi
  if [ -f "$out/m1/config.json" ]; then
    train "m1m2-$labels-s$s" "$m1m2" --codes-of "$out/m1" "${flags[@]}" & pids+=($!)
  fi
done
if [ ! -f "$out/m1/config.json" ]; then
  train m1 m1-mnist & pids+=($!)
fi
finish; status=$?
tail -n 2 "$out"/*.log
exit $status
