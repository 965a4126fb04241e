#!/usr/bin/env bash
# uqa's benchmarks beside the PyTorch reference scripts of ../shared/bench, like for like: the
# same workload on both sides (sizes, vocabularies, dropout, batch, loss and its chunk), run on
# this machine in alternating pairs (the host's speed drifts by 10% or more within an hour, so
# only runs made side by side compare). 2 threads a side unless stated.
#
# Usage: PYTHON=/path/to/venv/bin/python scripts/bench_vs_pytorch.sh [BENCH...]
# BENCH (default: all, in this order):
#   step     encoder_step.py's defaults (Trm++ 4 x 512, seq 128, batch 8, 100,000 items, full
#            side information, dropout 0.1, no clipping on either side): uqa's chunked loss
#            (chunk 2,048) beside PyTorch's chunked loss with the same chunk, and beside its
#            default full softmax; fused and stock AdamW.
#   paper    994,447 items, seq 512, batch 4, chunked loss with chunk 2,048 on both sides,
#            no activation checkpointing on either (PyTorch's script has none); then uqa with
#            checkpointing on its own (no PyTorch counterpart, so no ratio).
#   1.2b     uqa only: the 1.2B preset's blocks (24 x 2048, 16 heads) at the preset's sequence
#            length with what fits 24 GB (SHAPE_1_2B = "SEQ BATCH ITEMS", default "512 1 100000",
#            activation checkpointing). The preset itself (batch 4 per rank, 989k items) needs
#            about 22 GB for parameters, gradients and AdamW moments before any activation.
#   generate generate.py's defaults, its reference loop computing the last position's logits
#            only (--reference-last-logits), as uqa's does.
#   ddp      1 rank x 1 thread against 2 ranks x 1 thread: uqa's configs/bench/trmpp_ddp.toml on
#            configs/bench/ddp_data.toml, beside encoder_ddp.py at that dataset's vocabularies,
#            dropout 0 and the same chunked loss.
#   allreduce  tcp and mpi all-reduce beside allreduce.py (gloo), 2 ranks.
# Environment: PYTHON (required), UQA (default: the release build), PAIRS (step pairs,
# default 2), OUT (default runs/bench_vs_pytorch; raw.jsonl gets each run's JSON line with the
# run's name and pair), EXAMPLES (folder of allreduce_bench: `cargo build --release -p uqa-comm
# --features mpi --examples`).
# Status: run end to end on 2026-12-07 (17 minutes); docs/BENCHMARKS.md, "Like for like beside
# PyTorch", has its figures and docs/bench/vs_pytorch_2026-12-07.jsonl its raw lines.
set -euo pipefail
cd "$(dirname "$0")/.."
uqa=$(realpath "${UQA:-${CARGO_TARGET_DIR:-target}/release/uqa}")
ref=$(realpath ../shared/bench)
: "${PYTHON:?set PYTHON to an interpreter with torch 2.4.1 (../shared/bench/README.md)}"
pairs=${PAIRS:-2}
out=$(realpath -m "${OUT:-runs/bench_vs_pytorch}")
examples=${EXAMPLES:-$(dirname "$uqa")/examples}
raw=$out/raw.jsonl
mkdir -p "$out"
benches=("$@")
[ ${#benches[@]} -gt 0 ] || benches=(step paper 1.2b generate ddp allreduce)

# run NAME PAIR CMD...: CMD's output in $out/NAME.PAIR.log, its last JSON line (with GNU time's
# wall seconds and peak RSS, and the training run folder $RUN's step times when RUN is set)
# appended to raw.jsonl.
run() {
  local name=$1 pair=$2; shift 2
  local log=$out/$name.$pair.log
  echo "== $name (pair $pair): $*" >&2
  /usr/bin/time -f '%e %M' -o "$log.time" "$@" > "$log" 2>&1 ||
    { echo "failed: $name, see $log" >&2; tail -5 "$log" >&2; return 1; }
  scripts/bench_record.py "$log" "$log.time" --rss-key peak_rss_mb_gnu_time ${RUN:+--run "$RUN"} \
    "run=$name" "pair=$pair" >> "$raw"
}
ours() { local name=$1 pair=$2; shift 2; OMP_NUM_THREADS=${THREADS:-2} run "$name" "$pair" "$uqa" "$@"; }
theirs() { local name=$1 pair=$2 script=$3; shift 3; run "$name" "$pair" "$PYTHON" "$ref/$script" "$@"; }

# A run folder with checkpoints would resume, so every training run gets a fresh one.
ddp_data=$out/ddp_data
for b in "${benches[@]}"; do
  case $b in
    step)  # uqa first in odd pairs, last in even ones, so that the host's drift cancels
      for p in $(seq "$pairs"); do
        if [ $((p % 2)) = 1 ]; then ours uqa_step "$p" bench step --clip 0 --steps 5 --warmup 2; fi
        theirs torch_step_chunked_fused "$p" encoder_step.py --threads 2 --steps 5 --warmup 2 \
          --ce chunked --ce-chunk 2048 --adamw fused
        theirs torch_step_full_fused "$p" encoder_step.py --threads 2 --steps 5 --warmup 2 \
          --adamw fused
        theirs torch_step_full_stock "$p" encoder_step.py --threads 2 --steps 5 --warmup 2
        if [ $((p % 2)) = 0 ]; then ours uqa_step "$p" bench step --clip 0 --steps 5 --warmup 2; fi
      done ;;
    paper)
      big=(--items 994447 --seq 512 --batch 4 --steps 2 --warmup 1)
      ours uqa_paper_b4 1 bench step "${big[@]}" --clip 0
      theirs torch_paper_b4_chunked 1 encoder_step.py --threads 2 "${big[@]}" --ce chunked \
        --ce-chunk 2048 --adamw fused
      ours uqa_paper_b4_ckpt 1 bench step "${big[@]}" --clip 0 --activation-checkpointing ;;
    1.2b)
      read -r seq batch items <<< "${SHAPE_1_2B:-512 1 100000}"
      ours uqa_1_2b 1 bench step --layers 24 --dim 2048 --heads 16 --seq "$seq" \
        --batch "$batch" --items "$items" --steps 1 --warmup 1 --activation-checkpointing ;;
    generate)
      ours uqa_generate 1 bench generate
      theirs torch_generate 1 generate.py --threads 2 --mode both --reference-last-logits ;;
    ddp)
      [ -d "$ddp_data" ] || "$uqa" data synth --config configs/bench/ddp_data.toml \
        --out "$ddp_data" > /dev/null
      vocab=$(python3 -c 'import json,sys; v=json.load(open(sys.argv[1]))["vocab"]; print(v["items"], v["cates"], v["brands"], v["shops"])' "$ddp_data/dataset.json")
      read -r items cates brands shops <<< "$vocab"
      common=(--config configs/bench/trmpp_ddp.toml --set "data.dir=\"$ddp_data\""
        --set train.max_steps=12 --set train.log_every=1 --set optim.clip_norm=0)
      rm -rf "$out/ddp1" "$out/ddp2"
      RUN=$out/ddp1 THREADS=1 ours uqa_ddp_1x1 1 pretrain "${common[@]}" \
        --set train.batch_size=8 --set "train.out=\"$out/ddp1\""
      RUN=$out/ddp2 THREADS=1 ours uqa_ddp_2x1 1 launch --standalone --nproc-per-node 2 -- \
        "$uqa" pretrain \
        "${common[@]}" --set train.batch_size=16 --set "train.out=\"$out/ddp2\""
      theirs torch_ddp 1 encoder_ddp.py --threads 1 --procs 2 --steps 10 --warmup 2 \
        --adamw fused --ce chunked --ce-chunk 2048 --dropout 0 --items "$items" \
        --cates "$cates" --brands "$brands" --shops "$shops" ;;
    allreduce)
      run uqa_allreduce_tcp 1 "$examples/allreduce_bench"
      run uqa_allreduce_mpi 1 mpirun --allow-run-as-root -np 2 "$examples/allreduce_bench" \
        --backend mpi
      theirs torch_allreduce_gloo 1 allreduce.py ;;
    *) echo "unknown benchmark $b" >&2; exit 2 ;;
  esac
done
echo "raw lines: $raw" >&2
