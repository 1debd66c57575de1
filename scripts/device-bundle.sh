#!/usr/bin/env bash
# Builds the bundle the device check runs from on a machine with a GPU and no Rust toolchain
# or package registry: the release binary, the GPU-vs-CPU test binaries (stripped), the
# Vulkan/EGL loader packages (fetched here with apt-get download), the PyTorch peer script and
# device-check.sh. Usage: scripts/device-bundle.sh [DIR] (default: bundle/, git-ignored);
# the result must stay under 64 MiB.
set -euo pipefail
cd "$(dirname "$0")/.."
dir="${1:-bundle}"
rm -rf "$dir"
mkdir -p "$dir/bin" "$dir/tests" "$dir/debs" "$dir/peers"

cargo build --release --quiet
cp target/release/gpumlp "$dir/bin/"
# Every test binary the check runs, from cargo's own list of what it built.
cargo test --release --no-run --message-format=json --test kernels --test step --test fused --test gemm \
  2>/dev/null |
  sed -n 's/.*"executable":"\([^"]*\)".*/\1/p' |
  while read -r exe; do cp "$exe" "$dir/tests/"; done
strip "$dir/bin/gpumlp" "$dir"/tests/* 2>/dev/null || true

if command -v apt-get >/dev/null; then
  (cd "$dir/debs" && apt-get download libvulkan1 libegl1 libglvnd0 libopengl0 libgl1 libglx0 libgles2 \
    >/dev/null 2>&1) || echo "device-bundle: apt-get download failed: the bundle has no loaders" >&2
fi
peers=/work/shared/peers/torch_mlp.py
[ -f "$peers" ] && cp "$peers" "$dir/peers/"
cp scripts/device-check.sh "$dir/"
size=$(du -sm "$dir" | cut -f1)
echo "device-bundle: $dir is $size MiB"
if [ "$size" -gt 64 ]; then
  echo "device-bundle: over the 64 MiB a device run may carry" >&2
  exit 1
fi
