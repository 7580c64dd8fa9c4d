#!/usr/bin/env bash
# The semi-supervised MNIST runs of benchmarks/RESULTS.md, on one GPU within a few minutes:
# M2 at 100/600/1000/3000 labels, the hybrid flow and M1 (a VAE) at once, then M1+M2 on M1's
# features; every training is stopped by SIGINT after its time (its checkpoints stay whole), then
# evaluated. Usage: benchmarks/semisupervised_gpu.sh OUT_DIR [SECONDS]
set -u
out=${1:?OUT_DIR}; secs=${2:-300}
mkdir -p "$out"
dgm() { python3 -c 'import sys; from dgmkit.cli.main import main; sys.exit(main())' "$@"; }
export OMP_NUM_THREADS=2 PYTHONUNBUFFERED=1
common="--dataset mnist --device cuda --precision fp32 --seed 0 --quiet"
for n in 100 600 1000 3000; do
  timeout -s INT "$secs" python3 -c 'import sys; from dgmkit.cli.main import main; sys.exit(main())' train $common \
    --model m2 --labels $n --hidden 500 --latent-dim 50 --batch-size 256 --labelled-batch 100 --lr 1e-3 \
    --epochs 3000 --out "$out/m2-$n" > "$out/m2-$n.log" 2>&1 &
done
timeout -s INT "$secs" python3 -c 'import sys; from dgmkit.cli.main import main; sys.exit(main())' train $common \
  --model hybrid --flow glow --hidden 64 --flow-layers 4 --flow-levels 2 --px-weight 1 --batch-size 128 --lr 1e-3 \
  --epochs 3000 --out "$out/hybrid" > "$out/hybrid.log" 2>&1 &
m1=$((secs / 2))
timeout -s INT "$m1" python3 -c 'import sys; from dgmkit.cli.main import main; sys.exit(main())' train $common \
  --hidden 600 600 --latent-dim 50 --warmup 10 --batch-size 256 --epochs 3000 --out "$out/m1" > "$out/m1.log" 2>&1
python3 benchmarks/semisupervised.py m1m2 "$out/m1" --labels 100 --seconds $((secs - m1 - 30)) --device cuda \
  --out "$out/m1m2-100.json" > "$out/m1m2-100.log" 2>&1
wait
for n in 100 600 1000 3000; do dgm eval "$out/m2-$n" --iw-samples 100 > "$out/m2-$n.eval.log" 2>&1 & done
dgm eval "$out/hybrid" > "$out/hybrid.eval.log" 2>&1 &
dgm eval "$out/m1" --iw-samples 100 > "$out/m1.eval.log" 2>&1 &
wait
