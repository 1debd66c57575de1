#!/usr/bin/env bash
# Samples/s of `gpumlp train --distributed` on the fast CPU backend for 1, 2 and 4 MPI ranks on
# this machine (BENCHMARKS.md, "Replicas across processes (MPI)"). Each rank takes its share of
# the cores (cores / ranks threads, at least 1). Prints, per shape and rank count, each epoch's
# samples/s after the first (rank 0's epoch lines; no validation, so an epoch is pure training),
# and rank 0's report of the gradient all-reduce (bytes and milliseconds per step).
# Usage: scripts/mpi-scaling.sh [EPOCHS]   (needs target/release/gpumlp built with --features mpi)
set -euo pipefail
cd "$(dirname "$0")/.."
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-/tmp}"
epochs="${1:-4}"
bin=target/release/gpumlp
for shape in "784,128,10 128" "784,512,512,10 1024"; do
  set -- $shape
  for np in 1 2 4; do
    log=$(mpirun --allow-run-as-root --oversubscribe -np "$np" "$bin" train --distributed \
      --data fashion-mnist --normalize unit --layers "$1" --batch "$2" --optimizer momentum \
      --lr 0.05 --epochs "$epochs" --val-split 0 --device cpu 2>&1)
    rates=$(sed -n 's/^epoch *\([0-9]*\)\/.* \([0-9]*\) samples\/s$/\1 \2/p' <<<"$log" |
      awk '$1 > 1 { print $2 }' | paste -sd' ')
    echo "$1 b$2 ranks=$np samples/s: $rates"
    grep -F 'all-reduce:' <<<"$log" || true
  done
done
