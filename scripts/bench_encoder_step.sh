#!/usr/bin/env bash
# Encoder step benchmarks of docs/BENCHMARKS.md (issue 3), ours beside
# ../shared/bench/encoder_step.py on the same machine, one run at a time:
#   default   its defaults (Trm++ 4 x 512, 4 heads, seq 128, batch 8, 100,000 items, full side);
#   paper     994,447 items, seq 512, batch 4 (PyTorch: chunked CE; full CE at batch 2);
#   1.2b      the (24, 2048, 16) preset, batch 1, seq 32: one full optimizer step (ours only).
# Each run's JSON line goes to runs/bench_step/NAME.json. PyTorch runs need PYTHON pointing at
# an interpreter with torch 2.4.1 (see ../shared/bench/README.md); without it they are skipped.
# Threads: 2 (OMP_NUM_THREADS for ours, --threads for PyTorch). Usage:
#   PYTHON=/path/to/venv/bin/python scripts/bench_encoder_step.sh [default] [paper] [1.2b]
set -euo pipefail
cd "$(dirname "$0")/.."
uqa=${UQA:-${CARGO_TARGET_DIR:-target}/release/uqa}
ref=../shared/bench/encoder_step.py
out=runs/bench_step
what=("$@")
[ ${#what[@]} -gt 0 ] || what=(default paper 1.2b)
[ -x "$uqa" ] || cargo build --release
mkdir -p "$out"

ours() { # NAME ARGS...
  local name=$1; shift
  echo "== uqa bench step $* ($name)" >&2
  OMP_NUM_THREADS=2 "$uqa" bench step "$@" | tail -1 > "$out/$name.json"
  cat "$out/$name.json"
}
theirs() { # NAME ARGS...
  local name=$1; shift
  if [ -z "${PYTHON:-}" ]; then echo "== $name: PYTHON not set, PyTorch run skipped" >&2; return; fi
  echo "== encoder_step.py $* ($name)" >&2
  "$PYTHON" "$ref" --threads 2 "$@" | tail -1 > "$out/$name.json"
  cat "$out/$name.json"
}

for w in "${what[@]}"; do
  case $w in
    default)
      ours uqa_default --steps 5 --warmup 2
      ours uqa_default_ckpt --steps 5 --warmup 2 --activation-checkpointing
      theirs torch_default --steps 5 --warmup 2
      theirs torch_default_fused --steps 5 --warmup 2 --adamw fused
      ;;
    paper)
      big=(--items 994447 --seq 512)
      ours uqa_paper_b4 "${big[@]}" --batch 4 --steps 2 --warmup 1
      ours uqa_paper_b4_ckpt "${big[@]}" --batch 4 --steps 2 --warmup 1 --activation-checkpointing
      theirs torch_paper_b4_chunked "${big[@]}" --batch 4 --ce chunked --adamw fused --steps 2 --warmup 1
      theirs torch_paper_b2_full "${big[@]}" --batch 2 --ce full --adamw fused --steps 2 --warmup 1
      ;;
    1.2b)
      ours uqa_1_2b --layers 24 --dim 2048 --heads 16 --batch 1 --seq 32 --steps 1 --warmup 1
      ;;
    *) echo "unknown benchmark $w (default, paper, 1.2b)" >&2; exit 2 ;;
  esac
done
