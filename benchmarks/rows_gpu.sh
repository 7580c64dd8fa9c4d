#!/usr/bin/env bash
# Issue 30's table rows on one GPU, in resumable chunks: each row is its preset in configs/,
# trained for --time-budget SECONDS a call (calling again with the same OUT_DIR goes on with
# --resume; a row that early stopping has ended trains no more), then scored once by `dgm eval` at
# the preset's protocol (best-validation weights; k = 5000 importance samples on all 10000 static
# test images for the VAE rows, the exact NLL for PixelCNN and the flows, the VDM's bound).
#
#   benchmarks/rows_gpu.sh OUT_DIR SECONDS NAME...  # start, or go on with, the named rows, side by
#                                                   # side, for SECONDS each
#   benchmarks/rows_gpu.sh OUT_DIR status [NAME...] # each row: epochs, best validation, done or not,
#                                                   # the minutes its epochs took
#   benchmarks/rows_gpu.sh OUT_DIR eval NAME...     # dgm eval each: OUT_DIR/NAME.eval.json (copy it
#                                                   # to benchmarks/rows/ once the row is done)
#   benchmarks/rows_gpu.sh OUT_DIR pack DEST        # OUT_DIR as checked parts of at most 15 MiB
#   benchmarks/rows_gpu.sh OUT_DIR unpack SRC       # (benchmarks/carry.py), to go on in a later session
#
# NAME: vampprior, hvae-vampprior, convhvae-vampprior, pixelhvae-vampprior, iwae-2layer-k50,
# pixelcnn, realnvp-mnist, glow-mnist, vdm-mnist (the names of benchmarks/rows/NAME.eval.json).
# Each row is the run OUT_DIR/NAME with its log OUT_DIR/NAME.log. Data from $DGMKIT_DATA
# (binarized_mnist/ and mnist/). The exit status is 1 where any row's command failed (its log
# says why). DEVICE=cpu, PYTHON (a Python with torch; default python3), EXTRA (training flags)
# and EVAL_EXTRA (evaluation flags) for a smoke test of the script itself (tests/test_run_scripts.py,
# --run-slow).
set -u
out=${1:?OUT_DIR}; what=${2:?SECONDS, status, eval, pack or unpack}
shift 2
py=${PYTHON:-python3}
dgm() { PYTHONPATH=src${PYTHONPATH:+:$PYTHONPATH} "$py" -c 'import sys; from dgmkit.cli.main import main; sys.exit(main())' "$@"; }
export PYTHONUNBUFFERED=1
device=${DEVICE:-cuda}
# on a GPU every run trains compiled (--compile with CUDA graphs: 2x to 6x a plain eager loop on the
# H200, benchmarks/RESULTS.md); COMPILE= (empty) trains eagerly, COMPILE=--compile on the CPU too
compile=${COMPILE-$(case "$device" in cuda*) echo --compile ;; esac)}

preset() {
  case "$1" in
    vampprior) echo configs/vampprior-paper-vampprior.toml ;;
    hvae-vampprior) echo configs/hvae-vampprior-paper.toml ;;
    convhvae-vampprior) echo configs/convhvae-vampprior-paper.toml ;;
    pixelhvae-vampprior) echo configs/pixelhvae-vampprior-paper.toml ;;
    iwae-2layer-k50) echo configs/iwae-2layer-k50.toml ;;
    pixelcnn) echo configs/arm-bmnist-pixelcnn.toml ;;
    realnvp-mnist) echo configs/flow-mnist-realnvp.toml ;;
    glow-mnist) echo configs/flow-mnist-glow.toml ;;
    vdm-mnist) echo configs/diffusion-mnist-vdm.toml ;;
    *) return 1 ;;
  esac
}

case "$what" in
  pack)
    "$py" benchmarks/carry.py pack "$out" "${1:?DEST}"; exit $?
    ;;
  unpack)
    "$py" benchmarks/carry.py unpack "${1:?SRC}" "$out" || exit 1
    echo "go on with: benchmarks/rows_gpu.sh $out SECONDS NAME..."
    exit 0
    ;;
  status)
    names=("$@")
    [ ${#names[@]} -gt 0 ] || for run in "$out"/*/; do run=${run%/}; [ -f "$run/config.json" ] && names+=("${run##*/}"); done
    "$py" - "$out" "${names[@]}" <<'PY'
import json, pathlib, re, sys
out = pathlib.Path(sys.argv[1])
for name in sys.argv[2:]:
    run, log = out / name, out / f"{name}.log"
    metrics = run / "metrics.jsonl"
    rows = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()] if metrics.exists() else []
    if not rows:
        print(f"{name}: no finished epoch")
        continue
    valid = [(r["valid_elbo"], r["epoch"]) for r in rows if r.get("valid_elbo") is not None]
    best = f"best valid ELBO {max(valid)[0]:.3f} at epoch {max(valid)[1]}" if valid else "no validation"
    chunks = [c for c in re.split(r"^run folder:.*$", log.read_text() if log.exists() else "", flags=re.M) if c.strip()]
    last = chunks[-1] if chunks else ""  # the last training command's output
    done = "done" if "trained " in last and "stopped by --time-budget" not in last else "going on"
    minutes = sum(r.get("time_s", 0.0) for r in rows) / 60
    print(f"{name}: {rows[-1]['epoch']} epochs, {best}, {done}; {minutes:.1f} minutes of epochs")
PY
    exit $?
    ;;
esac

[ $# -gt 0 ] || { echo "name at least one row" >&2; exit 2; }
for name in "$@"; do
  preset "$name" > /dev/null || { echo "unknown row $name: see the list at the top of $0" >&2; exit 2; }
done
mkdir -p "$out"
pids=(); names=()
for name in "$@"; do
  run="$out/$name"
  if [ "$what" = eval ]; then
    dgm eval "$run" --device "$device" ${EVAL_EXTRA:-} > "$out/$name.eval.log" 2>&1 \
      && cp "$run/eval.json" "$out/$name.eval.json" &
  elif [ -f "$run/config.json" ]; then
    dgm train --resume --out "$run" --device "$device" $compile --time-budget "$what" --quiet >> "$out/$name.log" 2>&1 &
  else
    dgm train --config "$(preset "$name")" ${EXTRA:-} --out "$run" --device "$device" $compile --time-budget "$what" \
      --quiet >> "$out/$name.log" 2>&1 &
  fi
  pids+=($!); names+=("$name")
done
status=0
for i in "${!pids[@]}"; do
  wait "${pids[$i]}" || { status=1; echo "failed: ${names[$i]} (see $out/${names[$i]}$([ "$what" = eval ] && echo .eval).log)"; }
done
if [ "$what" = eval ]; then
  "$py" - "$out" "${names[@]}" <<'PY'
import json, pathlib, sys
out = pathlib.Path(sys.argv[1])
for name in sys.argv[2:]:
    ev = out / f"{name}.eval.json"
    if not ev.exists():
        continue
    r = json.loads(ev.read_text())
    bpd = f", {r['bpd']:.4f} bits/dim" if r.get("bpd") is not None else ""
    k = f" (k = {r['iw_samples']})" if r["estimate"] == "importance-sampled" else ""
    print(f"{name}: {r['estimate']} NLL {r['nll']:.3f} +- {r['nll_stderr']:.3f} nats{bpd} on {r['n']} test images{k}")
PY
else
  "$0" "$out" status "${names[@]}"
fi
exit $status
