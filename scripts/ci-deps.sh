#!/usr/bin/env bash
# Installs the Debian 12 packages the tests need beyond Rust itself, quietly and idempotently
# (a no-op when everything is present). Called by .ci/run; safe to run by hand.
#
#   libopenmpi-dev openmpi-bin libclang-dev pkg-config   uqa-comm's `mpi` feature (rsmpi's
#                                                         build uses mpicc and bindgen) and
#                                                         the mpirun tests (comm/tests/mpi.rs)
#   slurm-wlm munge                                       the local Slurm cluster and the sbatch
#                                                         template test (comm/tests/slurm.rs)
#   prometheus                                            a real Prometheus server and promtool
#                                                         for tests/prometheus_scrape.rs
#
# Tests that need these packages skip when they are absent (counted by scripts/test.sh), or fail
# under UQA_REQUIRE (CI), naming what is missing; so a failure here is a warning, not an error.
# Installing needs root or passwordless sudo.
set -uo pipefail

PACKAGES=(libopenmpi-dev openmpi-bin libclang-dev pkg-config slurm-wlm munge prometheus)

missing=()
for p in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
    missing+=("$p")
  fi
done
[ ${#missing[@]} -eq 0 ] && exit 0

if ! command -v apt-get >/dev/null 2>&1; then
  echo "ci-deps: apt-get not found; missing ${missing[*]} (their tests will skip, or fail under UQA_REQUIRE)" >&2
  exit 0
fi
SUDO=()
if [ "$(id -u)" != 0 ]; then
  if command -v sudo >/dev/null 2>&1; then
    SUDO=(sudo -n)
  else
    echo "ci-deps: not root and no sudo; missing ${missing[*]} (their tests will skip, or fail under UQA_REQUIRE)" >&2
    exit 0
  fi
fi

echo "ci-deps: installing ${missing[*]}"
log=$(mktemp)
export DEBIAN_FRONTEND=noninteractive
if "${SUDO[@]}" apt-get update -qq >"$log" 2>&1 &&
  "${SUDO[@]}" apt-get install -y -qq "${missing[@]}" >>"$log" 2>&1; then
  rm -f "$log"
else
  echo "ci-deps: warning: apt-get failed (their tests will skip, or fail under UQA_REQUIRE); last lines:" >&2
  tail -n 20 "$log" >&2
  rm -f "$log"
fi
exit 0
