#!/usr/bin/env bash
# The device check: everything we want to know from the first run on a real GPU, in one go,
# within 9 minutes, every result under one output folder.
#
#   scripts/device-check.sh OUT           from an unpacked bundle (scripts/device-bundle.sh):
#                                         bin/gpumlp, tests/*, debs/*.deb, peers/torch_mlp.py
#   scripts/device-check.sh --local OUT   on this machine's adapters, from target/release (run
#                                         `cargo test --release --no-run` first)
#
# Steps: adapter info and nvidia-smi; the GPU-vs-CPU kernel tests; --verify at the bench
# shapes; the bench suite as JSON with --profile; PyTorch fp32 (TF32 off) on the same shapes
# where torch imports. Writes OUT/summary.json: adapter, tests_passed, tests_failed,
# verify_max_abs_dev, bench (the bench JSON lines), torch (the same for PyTorch, or null).
# DEVICE_CHECK_QUICK=1 runs small shapes and one test binary (for testing this script);
# DEVICE_CHECK_TEST_FILTER narrows the tests; GPUMLP_BIN and GPUMLP_TESTS_DIR point --local
# at another build.
set -uo pipefail

local_mode=0
if [ "${1:-}" = "--local" ]; then
  local_mode=1
  shift
fi
out="${1:?usage: device-check.sh [--local] OUT}"
mkdir -p "$out"
out="$(cd "$out" && pwd)"
here="$(cd "$(dirname "$0")" && pwd)"
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-/tmp}"
quick="${DEVICE_CHECK_QUICK:-0}"
log() { echo "== $*" | tee -a "$out/log.txt"; }

if [ "$local_mode" = 1 ]; then
  root="$(cd "$here/.." && pwd)"
  gpumlp="${GPUMLP_BIN:-$root/target/release/gpumlp}"
  tests_dir="${GPUMLP_TESTS_DIR:-$root/target/release/deps}"
  torch_script="/work/shared/peers/torch_mlp.py"
  [ -f "$torch_script" ] || torch_script="$root/scripts/peers/torch_mlp.py"
  device=gpu
else
  root="$here"
  gpumlp="$root/bin/gpumlp"
  tests_dir="$root/tests"
  torch_script="$root/peers/torch_mlp.py"
  device=gpu
  # The Vulkan loader may be missing on a bare GPU machine: unpack the bundled packages.
  if ! ldconfig -p | grep -F libvulkan.so.1 >/dev/null && compgen -G "$root/debs/*.deb" >/dev/null; then
    log "no Vulkan loader: unpacking the bundled packages"
    for f in "$root"/debs/*.deb; do dpkg -x "$f" /; done
    ldconfig
  fi
  if [ -z "${VK_DRIVER_FILES:-}" ] && [ -f /usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json ]; then
    export VK_DRIVER_FILES=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
  fi
fi
[ -x "$gpumlp" ] || { echo "no gpumlp binary at $gpumlp" >&2; exit 2; }

log "adapters"
"$gpumlp" info >"$out/info.txt" 2>&1
cat "$out/info.txt"
if command -v nvidia-smi >/dev/null; then nvidia-smi >"$out/nvidia-smi.txt" 2>&1; fi
"$gpumlp" plan --json >"$out/plan.json" 2>&1 || true

log "GPU-vs-CPU kernel tests"
# The newest build of each test binary (cargo names them NAME-HASH).
test_names="kernels step fused gemm"
[ "$quick" = 1 ] && test_names="kernels"
passed=0
failed=0
for name in $test_names; do
  bin="$(ls -t "$tests_dir/$name"-* 2>/dev/null | grep -v '\.d$' | head -1)"
  if [ -z "$bin" ]; then
    log "no test binary '$name' in $tests_dir"
    failed=$((failed + 1))
    continue
  fi
  # shellcheck disable=SC2086 # the filter is a list of test-name words
  timeout 240 "$bin" --test-threads 4 ${DEVICE_CHECK_TEST_FILTER:-} >"$out/test-$name.txt" 2>&1
  p="$(grep -o '[0-9]* passed' "$out/test-$name.txt" | tail -1 | cut -d' ' -f1)"
  f="$(grep -o '[0-9]* failed' "$out/test-$name.txt" | tail -1 | cut -d' ' -f1)"
  passed=$((passed + ${p:-0}))
  failed=$((failed + ${f:-1}))
  tail -3 "$out/test-$name.txt"
done

# The bench suite: (layers, batch, steps).
if [ "$quick" = 1 ]; then
  suite="2,16,2:256:5 64,32,10:128:5"
else
  suite="784,512,512,10:1024:20 64,128,128,10:4096:20 2,16,2:256:50 784,128,10:128:50 1024,4096,4096,1024:8192:10"
fi

log "--verify at the bench shapes"
verify_max=0
for entry in $suite; do
  layers="${entry%%:*}"
  rest="${entry#*:}"
  batch="${rest%%:*}"
  case "$layers" in 1024,4096,*) continue ;; esac # the CPU reference would take minutes
  inputs="${layers%%,*}"
  csv="$out/verify-$inputs.csv"
  awk -v n="$batch" -v d="$inputs" -v k="${layers##*,}" 'BEGIN { srand(1); for (r = 0; r < n; r++) { line = ""; for (c = 0; c < d; c++) line = line sprintf("%.4f,", rand()); print line (r % k) } }' >"$csv"
  timeout 120 "$gpumlp" train --data "csv:$csv" --layers "$layers" --batch "$batch" \
    --epochs 1 --val-split 0 --verify 3 --device "$device" --quiet >"$out/verify-$inputs.txt" 2>&1
  dev="$(sed -n 's/.*largest parameter deviation \([0-9.e+-]*\).*/\1/p' "$out/verify-$inputs.txt")"
  rm -f "$csv"
  if [ -z "$dev" ]; then
    log "verify at $layers b$batch failed: $(tail -2 "$out/verify-$inputs.txt")"
    verify_max=null
  elif [ "$verify_max" != null ]; then
    verify_max="$(awk -v a="$verify_max" -v b="$dev" 'BEGIN { print (b > a) ? b : a }')"
  fi
done

log "bench suite"
: >"$out/bench.jsonl"
for entry in $suite; do
  layers="${entry%%:*}"
  rest="${entry#*:}"
  batch="${rest%%:*}"
  steps="${rest#*:}"
  timeout 120 "$gpumlp" bench --layers "$layers" --batch "$batch" --steps "$steps" --json \
    --device "$device" >>"$out/bench.jsonl" 2>>"$out/bench-errors.txt"
  [ "$quick" = 1 ] || timeout 60 "$gpumlp" bench --layers "$layers" --batch "$batch" --steps 3 \
    --profile --device "$device" >"$out/profile-${layers//,/-}-b$batch.txt" 2>&1
done
cat "$out/bench.jsonl"

if [ "$quick" = 0 ]; then
  # What the tuner chooses and how long it takes from an empty cache (plan-LAYERS-bBATCH.json:
  # "tuning", "step", each matmul's kernel and tile), then the fused narrow-MLP step against
  # the layered one, forced.
  log "tuner choices and fused against layered"
  : >"$out/bench-steps.jsonl"
  for entry in $suite; do
    layers="${entry%%:*}"
    rest="${entry#*:}"
    batch="${rest%%:*}"
    steps="${rest#*:}"
    GPUMLP_CACHE_DIR="$out/tune-cache-$layers" timeout 60 "$gpumlp" plan --layers "$layers" --batch "$batch" --tune on --json \
      >"$out/plan-${layers//,/-}-b$batch.json" 2>&1
    case "$layers" in 1024,4096,* | 784,*) continue ;; esac # wider than the fused step takes
    for step in --fused-mlp --layered; do
      printf '{"step":"%s","run":' "${step#--}" >>"$out/bench-steps.jsonl"
      timeout 60 "$gpumlp" bench --layers "$layers" --batch "$batch" --steps "$steps" --json \
        "$step" --device "$device" 2>>"$out/bench-errors.txt" | tr -d '\n' >>"$out/bench-steps.jsonl"
      echo '}' >>"$out/bench-steps.jsonl"
    done
  done
  cat "$out/bench-steps.jsonl"
fi

log "PyTorch fp32 (TF32 off), same protocol"
torch=null
if python3 -c 'import torch' 2>/dev/null && [ -f "$torch_script" ]; then
  torch_device=cpu
  python3 -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)' && torch_device=cuda
  : >"$out/torch.jsonl"
  for entry in $suite; do
    layers="${entry%%:*}"
    rest="${entry#*:}"
    timeout 120 python3 "$torch_script" --layers "$layers" --batch "${rest%%:*}" \
      --steps "${rest#*:}" --device "$torch_device" >>"$out/torch.jsonl" 2>>"$out/torch-errors.txt"
  done
  torch="[$(paste -sd, "$out/torch.jsonl")]"
fi

bench="[$(paste -sd, "$out/bench.jsonl")]"
# The adapter the checks ran on (--device gpu): as the bench reports it.
adapter="$(head -1 "$out/bench.jsonl" | sed -n 's/.*"adapter":"\([^"]*\)".*"backend":"\([^"]*\)".*/\2: \1/p')"
cat >"$out/summary.json" <<JSON
{"adapter": "$(printf '%s' "$adapter" | sed 's/["\\]/\\&/g')", "tests_passed": $passed, "tests_failed": $failed, "verify_max_abs_dev": $verify_max, "bench": $bench, "torch": $torch}
JSON
log "summary: $out/summary.json"
cat "$out/summary.json"
[ "$failed" = 0 ] && [ "$verify_max" != null ]
