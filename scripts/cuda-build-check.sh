#!/usr/bin/env bash
# The `cuda` build, checked on a machine without a GPU (scripts/test.sh runs it on every
# submission):
#   1. clippy over every target with `--features cuda`, warnings as errors (release profile, so
#      the CUDA kernels compile once for this and the bundle);
#   2. the GPU bundle (scripts/gpu-bundle.sh, at most 60 MiB);
#   3. the bundle's GPU tests, here: each must skip naming the missing device (the driver stub
#      of scripts/cuda-toolchain.sh answers "no device"); their skips go to UQA_SKIP_LOG;
#   4. `uqa --device cuda` refused by name, and scripts/gpu-check.sh stopping at once (exit 3).
set -euo pipefail
cd "$(dirname "$0")/.."
eval "$(scripts/cuda-toolchain.sh)"
export CARGO_TARGET_DIR=${UQA_CUDA_TARGET_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/uqa/cargo-target-cuda}
bundle=target/gpu-bundle

echo "== cargo clippy --release --workspace --all-targets --features cuda -- -D warnings"
cargo clippy --release --workspace --all-targets --features cuda -- -D warnings

echo "== scripts/gpu-bundle.sh $bundle"
scripts/gpu-bundle.sh "$bundle"

bin=$(mktemp -d)
trap 'rm -rf "$bin"' EXIT
for f in uqa gpu-tests; do gzip -dc "$bundle/$f.gz" > "$bin/$f"; chmod +x "$bin/$f"; done
# The stub driver and the wheels' libraries, for this machine only.
export LD_LIBRARY_PATH="$UQA_CUDA_LIB:$UQA_CUDA_LIB/stubs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
echo "== gpu-tests (no GPU here: every test skips, naming why)"
log=$(mktemp)
UQA_EXE="$bin/uqa" UQA_REPO="$PWD" "$bin/gpu-tests" --test-threads 1 2>&1 | tee "$log"
if ! grep -q "no CUDA device is visible\|does not open" "$log"; then
  echo "cuda-build-check: the GPU tests did not report the missing device" >&2
  exit 1
fi

echo "== uqa bench step --device cuda (refused by name)"
set +e
msg=$("$bin/uqa" bench step --device cuda --steps 1 --warmup 0 2>&1)
code=$?
set -e
echo "$msg" | tail -n 2
if [ "$code" = 0 ] || ! grep -q "runtime.device" <<<"$msg"; then
  echo "cuda-build-check: --device cuda without a GPU must fail naming runtime.device (exit $code)" >&2
  exit 1
fi

echo "== scripts/gpu-check.sh (stops at once without a GPU)"
set +e
scripts/gpu-check.sh "$bundle" "$(mktemp -d)"
code=$?
set -e
if [ "$code" != 3 ]; then
  echo "cuda-build-check: gpu-check.sh exited $code without a GPU (expected 3)" >&2
  exit 1
fi
echo "cuda-build-check: passed"
