#!/usr/bin/env bash
# The test suite, as CI runs it: installs the Debian packages some tests need (OpenMPI, Slurm,
# Prometheus; see scripts/ci-deps.sh) when it can, runs clippy with warnings as errors, then
# every test of the workspace, then checks the `cuda` build (scripts/cuda-build-check.sh).
# The MPI and NCCL backends are compiled in when their build needs are present (OpenMPI and
# libclang for `mpi`; nothing for `nccl`, which loads NCCL at run time).
#
# A test whose asset or program is missing skips through uqa-testkit: it passes, and its skip is
# appended to $UQA_SKIP_LOG, which this script points at a fresh file and prints at the end as
# `N skipped:` and one `  test [category]: reason` line each, whatever the outcome. With
# UQA_REQUIRE (e.g. `all`, or `assets,mpi`; see testkit/src/category.rs) those skips fail
# instead. Arguments go to `cargo test`, e.g. `scripts/test.sh -- NAME` runs matching tests only.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/ci-deps.sh || echo "warning: scripts/ci-deps.sh failed; tests needing its packages will skip (fail under UQA_REQUIRE)"

features="uqa-comm/nccl"
if command -v mpicc >/dev/null 2>&1 && ldconfig -p 2>/dev/null | grep -q libclang; then
  features="$features,uqa-comm/mpi"
else
  echo "note: OpenMPI or libclang missing: building without the mpi backend (its tests skip, fail under UQA_REQUIRE=mpi)"
fi

# A fresh log for this run only (kept where the caller asked for it, else removed at exit).
if [ -n "${UQA_SKIP_LOG:-}" ]; then
  : >"$UQA_SKIP_LOG"
else
  UQA_SKIP_LOG=$(mktemp "${TMPDIR:-/tmp}/uqa-skips.XXXXXX")
  trap 'rm -f "$UQA_SKIP_LOG"' EXIT
fi
export UQA_SKIP_LOG

# Lints first (the workspace's [lints] table, warnings as errors); a lint failure still lets
# the tests run and report, and fails the script at the end.
status=0
if ! cargo clippy --version >/dev/null 2>&1; then
  rustup component add clippy || echo "warning: clippy is not installed and rustup could not add it"
fi
echo "== cargo clippy --workspace --all-targets --features $features -- -D warnings"
cargo clippy --workspace --all-targets --features "$features" -- -D warnings || status=$?

# --no-fail-fast: one failing test binary must not hide the results of the others.
echo "== cargo test --workspace --no-fail-fast --features $features $*${UQA_REQUIRE:+ (UQA_REQUIRE=$UQA_REQUIRE)}"
cargo test --workspace --no-fail-fast --features "$features" "$@" || status=$?

# The GPU build, on every full run (CI's included): clippy with `--features cuda`, the GPU
# bundle, its GPU tests (they skip here, naming the missing device) and gpu-check.sh's fast
# stop; scripts/cuda-build-check.sh. It installs the CUDA 13.0 wheels (about 1.6 GB, cached) and
# takes 10-15 minutes cold. A run given test arguments, or UQA_SKIP_CUDA_BUILD=1, leaves it out.
if [ $# -gt 0 ] || [ "${UQA_SKIP_CUDA_BUILD:-0}" = 1 ]; then
  echo "note: the cuda build is not checked in this run (test arguments or UQA_SKIP_CUDA_BUILD=1)"
else
  echo "== scripts/cuda-build-check.sh"
  scripts/cuda-build-check.sh || status=$?
fi

# Sorted: parallel tests append in any order.
echo "$(wc -l <"$UQA_SKIP_LOG" | tr -d ' ') skipped:"
sort "$UQA_SKIP_LOG" | sed 's/^/  /'
exit "$status"
