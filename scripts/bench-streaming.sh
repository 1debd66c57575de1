#!/bin/sh
# Streaming against in-memory training on the same data: Fashion-MNIST's 60000 training images
# (apt-get install dataset-fashion-mnist), decompressed so that they can be memory-mapped, one
# epoch each way, alternating. Prints the samples/s of each run.
#   scripts/bench-streaming.sh [DEVICE] [CAP] [ROUNDS]    (defaults: cpu 8M 2)
set -eu
device=${1:-cpu}
cap=${2:-8M}
rounds=${3:-2}
gpumlp=${GPUMLP:-target/release/gpumlp}
src=/usr/share/datasets/fashion-mnist
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
gunzip -c "$src/train-images-idx3-ubyte.gz" >"$tmp/images"
gunzip -c "$src/train-labels-idx1-ubyte.gz" >"$tmp/labels"
run() {
    "$gpumlp" train --data "idx:$tmp/images,$tmp/labels" --device "$device" --hidden 128 \
        --batch 128 --epochs 1 --val-split 0 --normalize unit "$@" 2>&1 |
        sed -n 's/.*chunks of \([0-9]*\) rows.*/  chunks of \1 rows/p; s/.* \([0-9]*\) samples\/s$/  \1 samples\/s/p'
}
i=0
while [ "$i" -lt "$rounds" ]; do
    echo "in memory:"
    run
    echo "streaming (--max-device-memory $cap):"
    run --max-device-memory "$cap"
    i=$((i + 1))
done
