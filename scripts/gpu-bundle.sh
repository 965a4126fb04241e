#!/usr/bin/env bash
# The CPU half of the GPU check. On a machine without a GPU, builds with `--features cuda`
# against the CUDA 13.0 wheels (scripts/cuda-toolchain.sh; 13.0 matches the GPU machines'
# driver 580) what scripts/gpu-check.sh runs on a GPU machine, stripped, in one folder:
#
#   uqa.gz          the release binary, gzipped (the CUDA kernels' PTX inside it makes it 77 MB
#                   stripped, about 20 MB gzipped)
#   gpu-tests.gz    the test binary of tests/gpu.rs (CPU-vs-CUDA parity, runs on cuda:0)
#   encoder_step.py PyTorch's side of the step benchmark, when ../shared/bench/ has it
#   BUILD.txt       what was built, from which commit, with which toolchain
#
# Usage: scripts/gpu-bundle.sh [OUT]      (default target/gpu-bundle; at most 60 MiB)
# Then, with the device tool: run `scripts/gpu-check.sh target/gpu-bundle "$OUT"`, carrying
# target/gpu-bundle. The build reuses UQA_CUDA_TARGET_DIR (default ~/.cache/uqa/cargo-target-cuda):
# about 10-15 minutes cold on 2 cores, seconds when nothing changed.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-target/gpu-bundle}
limit_mib=60

eval "$(scripts/cuda-toolchain.sh)"
export CARGO_TARGET_DIR=${UQA_CUDA_TARGET_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/uqa/cargo-target-cuda}

echo "== cargo build --release --features cuda (uqa and tests/gpu.rs)" >&2
cargo build --release --features cuda --bin uqa
tests=$(cargo test --release --features cuda --test gpu --no-run --message-format=json |
  python3 -c '
import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "gpu" and m.get("executable"):
        print(m["executable"])
')
[ -n "$tests" ] || { echo "gpu-bundle: no test executable for tests/gpu.rs" >&2; exit 1; }

tmp="$out.partial"
rm -rf "$tmp"
mkdir -p "$tmp"
for pair in "$CARGO_TARGET_DIR/release/uqa:uqa" "$tests:gpu-tests"; do
  src=${pair%%:*} name=${pair##*:}
  cp "$src" "$tmp/$name"
  strip "$tmp/$name"
  gzip -6 "$tmp/$name"
done
if [ -f ../shared/bench/encoder_step.py ]; then
  cp ../shared/bench/encoder_step.py "$tmp/"
else
  echo "gpu-bundle: ../shared/bench/encoder_step.py not found: gpu-check.sh will run uqa's side of the benchmark only" >&2
fi
{
  echo "commit: $(git rev-parse HEAD 2>/dev/null || echo unknown)$(git diff --quiet 2>/dev/null || echo ' (with uncommitted changes)')"
  echo "built: $(date -u +%Y-%m-%dT%H:%M:%SZ) on $(uname -m)"
  echo "toolchain: $(cargo --version); $(nvcc --version | tail -n 1)"
  echo "CUDA_COMPUTE_CAP=$CUDA_COMPUTE_CAP"
} > "$tmp/BUILD.txt"

size=$(du -sb "$tmp" | cut -f1)
mib=$(( (size + 1048575) / 1048576 ))
if [ "$mib" -gt "$limit_mib" ]; then
  echo "gpu-bundle: $tmp is $mib MiB, over the $limit_mib MiB a device run carries" >&2
  ls -l "$tmp" >&2
  exit 1
fi
rm -rf "$out"
mv "$tmp" "$out"
echo "gpu-bundle: $out ($mib MiB):" >&2
ls -l "$out" >&2
