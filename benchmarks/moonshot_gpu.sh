#!/usr/bin/env bash
# Issue 29 on one GPU, in resumable chunks: configs/moonshot-masked-bmnist.toml trained for
# --time-budget SECONDS a call (calling again with the same OUT_DIR goes on with --resume), the
# bound scored on all 10000 static test images after every chunk (4 times per image; each
# eval.json kept as OUT_DIR/curve/bound-epoch-E.json and a line of OUT_DIR/curve/points.jsonl with
# the training commands' wall seconds so far), and at the end the exact NLL of the mixture of M orders
# (dgm eval --orders M), on all 10000 images. benchmarks/moonshot_curve.py OUT_DIR: the table and
# the figure of the bound against training minutes.
#
#   benchmarks/moonshot_gpu.sh OUT_DIR SECONDS     # start, or go on, for SECONDS; then the bound
#   benchmarks/moonshot_gpu.sh OUT_DIR orders M    # the exact NLL of a mixture of M orders (each
#                                                  # order kept as done: call again to go on)
#   benchmarks/moonshot_gpu.sh OUT_DIR bound K     # the bound with K times per image
#   benchmarks/moonshot_gpu.sh OUT_DIR pack DEST    # OUT_DIR as parts of at most 15 MiB in DEST,
#                                                  # with their SHA-256 (benchmarks/carry.py)
#   benchmarks/moonshot_gpu.sh OUT_DIR unpack SRC   # a new OUT_DIR from SRC's parts, checked first
#
# Carrying a run between machines (a device session's files come back as at most 8 files of 16
# MiB, 64 MiB together, and at most 64 MiB travels to the next one, the repository and the data
# included): checkpoint.safetensors holds 16 bytes a parameter (fp32 weights, their moving
# average, Adam's two moments) and best.safetensors 4 more; gzip takes off about 8%. The preset's
# U-Net (64/128/128, 4.37M parameters) makes 83 MiB: it trains within one machine's session but
# does not travel. A network of at most about 2.8M parameters does (for example --unet-channels
# 64 96 96: 2.75M, 52 MiB before gzip). `pack` says when its parts would not come back.
#
# SEED (default 0) seeds the run (a second seed: SEED=1 and another OUT_DIR); EVAL_SEED (default 0)
# the orders or times of the evaluation. Data from $DGMKIT_DATA (binarized-mnist/, the .amat
# files). DEVICE=cpu and PYTHON (a Python with torch; default python3) with EXTRA training flags and
# EVAL_EXTRA evaluation flags for a smoke test of the script itself, e.g. (2026-11-24, 2 CPU cores:
# under 30 s a call) EXTRA="--unet-channels 8 8 --epochs 1 --no-compile" EVAL_EXTRA="--limit 64"
# with SECONDS 5 to 20 (tests/test_run_scripts.py, --run-slow).
set -u
out=${1:?OUT_DIR}; what=${2:?SECONDS, orders, bound, pack or unpack}
py=${PYTHON:-python3}
dgm() { PYTHONPATH=src${PYTHONPATH:+:$PYTHONPATH} "$py" -c 'import sys; from dgmkit.cli.main import main; sys.exit(main())' "$@"; }
export PYTHONUNBUFFERED=1
device=${DEVICE:-cuda}
run="$out/run"
evalflags=(--device "$device" --seed "${EVAL_SEED:-0}" ${EVAL_EXTRA:-})

case "$what" in
  pack)
    [ -f "$run/config.json" ] || { echo "no run in $run to pack" >&2; exit 1; }
    "$py" benchmarks/carry.py pack "$out" "${3:?DEST}"; exit $?
    ;;
  unpack)
    "$py" benchmarks/carry.py unpack "${3:?SRC}" "$out" || exit 1
    echo "go on with: benchmarks/moonshot_gpu.sh $out SECONDS"
    exit 0
    ;;
  orders|bound)
    n=${3:?how many}
    flag=$([ "$what" = orders ] && echo --orders || echo --time-samples)
    dgm eval "$run" $flag "$n" "${evalflags[@]}" | tee "$out/$what-$n.log"
    [ "${PIPESTATUS[0]}" -eq 0 ] || exit 1  # (else eval.json is still the last chunk's bound)
    cp "$run/eval.json" "$out/$what-$n-seed${EVAL_SEED:-0}.eval.json"
    exit 0
    ;;
esac

mkdir -p "$out/curve"
start=$SECONDS
if [ -f "$run/config.json" ]; then
  dgm train --resume --out "$run" --device "$device" --time-budget "$what" --quiet >> "$out/train.log" 2>&1
else
  dgm train --config configs/moonshot-masked-bmnist.toml --seed "${SEED:-0}" ${EXTRA:-} --out "$run" \
    --device "$device" --time-budget "$what" --quiet >> "$out/train.log" 2>&1
fi
code=$?
took=$((SECONDS - start))  # the training command's wall time, start-up and compilation included
tail -n 3 "$out/train.log"
[ $code -eq 0 ] || exit $code
dgm eval "$run" --time-samples 4 "${evalflags[@]}" > "$out/curve.log" 2>&1 || { cat "$out/curve.log"; exit 1; }
"$py" - "$run" "$out/curve" "$took" <<'PY'
import json, pathlib, shutil, sys
run, curve, took = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2]), float(sys.argv[3])
r = json.loads((run / "eval.json").read_text())
log = run / "metrics.jsonl"  # (none before the first epoch ends)
rows = [json.loads(line) for line in log.read_text().splitlines() if line.strip()] if log.exists() else []
seconds = sum(row.get("time_s", 0.0) for row in rows)  # per epoch, validation included
t = r.get("trained") or {"epochs": len(rows), "steps_into_next": 0}
name = f"bound-epoch-{t['epochs']}" + (f"-step-{t['steps_into_next']}" if t["steps_into_next"] else "")
shutil.copy(run / "eval.json", curve / f"{name}.json")
points = curve / "points.jsonl"  # one line a chunk: the training commands' wall seconds so far and the bound
before = [json.loads(line) for line in points.read_text().splitlines() if line.strip()] if points.exists() else []
spent = (before[-1]["train_s"] if before else 0.0) + took
point = {"name": name, **t, "train_s": spent, "epoch_seconds": seconds, "nll": r["nll"], "stderr": r["nll_stderr"], "n": r["n"]}
with points.open("a") as f:
    f.write(json.dumps(point) + "\n")
print(f"{name}: -ELBO {r['nll']:.3f} +- {r['nll_stderr']:.3f} nats on {r['n']} test images; {seconds:.0f} s of training in {len(rows)} finished epochs")
PY
