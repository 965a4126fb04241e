#!/usr/bin/env bash
# Every benchmark of docs/BENCHMARKS.md, run with two builds of uqa alternately on this machine,
# so that a change can be checked for CPU regressions (issue 13: none over 3%). The host's speed
# drifts by 10% or more within an hour, so only runs made side by side compare; each pair runs
# the two builds back to back, the first of the pair alternating.
#
# Usage:
#   scripts/bench_compare.sh BEFORE_UQA AFTER_UQA [BENCH...]
# BENCH names (default: all, in this order):
#   synth scan validate sampler allreduce launch pretrain_ml1m sasrec_epochs step_default
#   step_paper step_1_2b generate quickstart eval align smollm2 ddp
# Environment:
#   BEFORE_TREE    checkout whose configs and scripts the BEFORE build reads (default: this one)
#   BEFORE_EXAMPLES, AFTER_EXAMPLES   folders holding each build's allreduce_bench and barrier
#                  examples (`cargo build --release -p uqa-comm --features mpi --examples`)
#   PAIRS          pairs for the short benchmarks (default 2); the long ones run one pair
#   OUT            results folder (default runs/bench_compare); raw.jsonl gets one line per run
#   PYTHON         torch venv for the transformers side of `smollm2` (skipped when unset)
# Needs GNU time, python3, mpirun for the mpi all-reduce, and the cached assets
# (scripts/fetch-assets.sh): the Qwen2 tokenizer, MovieLens-1M and SmolLM2.
# The summary (scripts/bench_compare_summary.py) prints one row per benchmark and metric.
# Status: run end to end on 2026-12-07 (docs/BENCHMARKS.md, "Every benchmark re-run"; raw lines
# in docs/bench/compare_2026-12-07*.jsonl).
set -euo pipefail
cd "$(dirname "$0")/.."
after_tree=$PWD
[ $# -ge 2 ] || { sed -n 2,22p "$0"; exit 2; }
before_uqa=$(realpath "$1"); after_uqa=$(realpath "$2"); shift 2
before_tree=$(realpath "${BEFORE_TREE:-$after_tree}")
pairs=${PAIRS:-2}
out=$(realpath -m "${OUT:-runs/bench_compare}")
cache=${UQA_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/uqa}
raw=$out/raw.jsonl
mkdir -p "$out"
benches=("$@")
[ ${#benches[@]} -gt 0 ] || benches=(synth scan validate sampler allreduce launch pretrain_ml1m
  sasrec_epochs step_default step_paper step_1_2b generate quickstart eval align smollm2 ddp)
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}

bin() { [ "$1" = before ] && echo "$before_uqa" || echo "$after_uqa"; }
tree() { [ "$1" = before ] && echo "$before_tree" || echo "$after_tree"; }
examples() { [ "$1" = before ] && echo "${BEFORE_EXAMPLES:-}" || echo "${AFTER_EXAMPLES:-}"; }
# The two builds in the order of pair $1: before first in odd pairs, after first in even ones.
order() { if [ $(($1 % 2)) = 1 ]; then echo before after; else echo after before; fi; }

# record BENCH IMPL PAIR LOG TIMEFILE [RUN]: one raw line (scripts/bench_record.py), with a
# training RUN folder's metrics when given.
record() {
  scripts/bench_record.py "$4" "$5" ${6:+--run "$6"} "bench=$1" "impl=$2" "pair=$3" >> "$raw"
}

# timed BENCH IMPL PAIR DIR CMD...: runs CMD in DIR under GNU time, log in $out, then records it
# (with the training run folder $RUN's metrics when RUN is set).
timed() {
  local bench=$1 impl=$2 pair=$3 dir=$4; shift 4
  local log=$out/$bench.$impl.$pair.log
  echo "== $bench $impl (pair $pair): $*" >&2
  (cd "$dir" && /usr/bin/time -f '%e %M' -o "$log.time" "$@") > "$log" 2>&1 ||
    { echo "failed: $bench $impl, see $log" >&2; tail -5 "$log" >&2; return 1; }
  record "$bench" "$impl" "$pair" "$log" "$log.time" ${RUN:+"$RUN"}
}

taobao=$out/taobao
ml1m=$out/ml1m
ddp_data=$out/ddp_data

for b in "${benches[@]}"; do
  case $b in
    synth) # 184,520 users, 9.9 GB: one build's copy at a time on a small disk
      for impl in $(order 1); do
        rm -rf "$taobao"
        timed synth "$impl" 1 "$(tree "$impl")" "$(bin "$impl")" data synth --preset taobao \
          --out "$taobao" --force
      done ;;
    scan) # warm page cache
      [ -f "$taobao/pretrain_data_train.arrow" ] || { echo "scan: run synth first" >&2; exit 1; }
      cat "$taobao/pretrain_data_train.arrow" > /dev/null
      for p in $(seq "$pairs"); do for impl in $(order "$p"); do
        timed scan "$impl" "$p" . "$(bin "$impl")" bench scan "$taobao/pretrain_data_train.arrow"
      done; done ;;
    validate)
      for p in $(seq "$pairs"); do for impl in $(order "$p"); do
        timed validate "$impl" "$p" . "$(bin "$impl")" data validate \
          "$taobao/pretrain_data_train.arrow"
      done; done ;;
    sampler)
      for p in $(seq "$pairs"); do for impl in $(order "$p"); do
        timed sampler "$impl" "$p" . "$(bin "$impl")" bench sampler "$taobao" --batch 256 \
          --max-len 512 --batches 200
        timed sampler_keep_pages "$impl" "$p" . "$(bin "$impl")" bench sampler "$taobao" \
          --batch 256 --max-len 512 --batches 200 --keep-pages
      done; done ;;
    allreduce)
      for p in $(seq "$pairs"); do for impl in $(order "$p"); do
        ex=$(examples "$impl"); [ -n "$ex" ] || { echo "allreduce: set ${impl^^}_EXAMPLES" >&2; exit 1; }
        timed allreduce_tcp "$impl" "$p" . "$ex/allreduce_bench"
        timed allreduce_mpi "$impl" "$p" . mpirun --allow-run-as-root -np 2 \
          "$ex/allreduce_bench" --backend mpi
      done; done ;;
    launch) # 8 ranks spawned, communicator formed, one barrier and all-reduce; five runs each
      for p in $(seq "$pairs"); do for impl in $(order "$p"); do
        for i in 1 2 3 4 5; do
          timed launch_barrier "$impl" "$p" . "$(bin "$impl")" launch --standalone \
            --nproc-per-node 8 -- "$(examples "$impl")/barrier"
        done
      done; done ;;
    pretrain_ml1m) # 6 steps + setup: the allocator settings' benchmark
      [ -d "$ml1m" ] || "$after_uqa" data import movielens "$cache/movielens/ml-1m" \
        --tokenizer builtin --out "$ml1m" > /dev/null
      for p in $(seq "$pairs"); do for impl in $(order "$p"); do
        rm -rf "$out/pretrain_ml1m_$impl"  # a run folder with checkpoints would resume
        RUN=$out/pretrain_ml1m_$impl timed pretrain_ml1m "$impl" "$p" "$(tree "$impl")" \
          "$(bin "$impl")" pretrain \
          --config configs/movielens/sasrec_ml1m.toml --set "data.dir=\"$ml1m\"" \
          --set train.max_steps=6 --set eval.max_users=10 \
          --set "train.out=\"$out/pretrain_ml1m_$impl\""
      done; done ;;
    sasrec_epochs) # the anchor's first 5 epochs: seconds per epoch and the (deterministic) HR@10
      [ -d "$ml1m" ] || "$after_uqa" data import movielens "$cache/movielens/ml-1m" \
        --tokenizer builtin --out "$ml1m" > /dev/null
      for impl in $(order 1); do
        rm -rf "$out/sasrec_$impl"
        RUN=$out/sasrec_$impl timed sasrec_epochs "$impl" 1 "$(tree "$impl")" "$(bin "$impl")" \
          pretrain \
          --config configs/movielens/sasrec_ml1m.toml --set "data.dir=\"$ml1m\"" \
          --set train.epochs=5 --set "train.out=\"$out/sasrec_$impl\""
      done ;;
    step_default)
      for p in $(seq "$pairs"); do for impl in $(order "$p"); do
        timed step_default "$impl" "$p" . "$(bin "$impl")" bench step --steps 5 --warmup 2
        timed step_default_ckpt "$impl" "$p" . "$(bin "$impl")" bench step --steps 5 --warmup 2 \
          --activation-checkpointing
      done; done ;;
    step_paper)
      for impl in $(order 1); do
        timed step_paper_b4 "$impl" 1 . "$(bin "$impl")" bench step --items 994447 --seq 512 \
          --batch 4 --steps 2 --warmup 1
        timed step_paper_b4_ckpt "$impl" 1 . "$(bin "$impl")" bench step --items 994447 \
          --seq 512 --batch 4 --steps 2 --warmup 1 --activation-checkpointing
      done ;;
    step_1_2b)
      for impl in $(order 1); do
        timed step_1_2b "$impl" 1 . "$(bin "$impl")" bench step --layers 24 --dim 2048 \
          --heads 16 --seq 32 --batch 1 --steps 1 --warmup 1
      done ;;
    generate)
      for impl in $(order 1); do
        timed generate "$impl" 1 . "$(bin "$impl")" bench generate
      done ;;
    quickstart) # each build's own run, in its own checkout (runs/quickstart there)
      for impl in $(order 1); do
        timed quickstart "$impl" 1 "$(tree "$impl")" "$(bin "$impl")" quickstart
      done ;;
    eval) # each build's aligned model from its quickstart, 420 questions
      for p in $(seq "$pairs"); do for impl in $(order "$p"); do
        run=runs/quickstart/align_trained
        rm -rf "$out/eval_$impl" "$out/eval2_$impl"
        timed eval_1x2 "$impl" "$p" "$(tree "$impl")" "$(bin "$impl")" eval --run "$run" \
          --out "$out/eval_$impl" --max-new-tokens 32
        rm -rf "$out/eval_$impl"
        OMP_NUM_THREADS=1 timed eval_1x1 "$impl" "$p" "$(tree "$impl")" "$(bin "$impl")" eval \
          --run "$run" --out "$out/eval_$impl" --max-new-tokens 32
        OMP_NUM_THREADS=1 timed eval_2x1 "$impl" "$p" "$(tree "$impl")" "$(bin "$impl")" launch \
          --standalone --nproc-per-node 2 -- "$(bin "$impl")" eval --run "$run" \
          --out "$out/eval2_$impl" --max-new-tokens 32
      done; done ;;
    align) # scripts/bench_align.sh of each checkout (its quickstart's encoder and questions)
      for impl in $(order 1); do
        log=$out/align.$impl.1.log
        echo "== align $impl: scripts/bench_align.sh 8" >&2
        (cd "$(tree "$impl")" && UQA=$(bin "$impl") scripts/bench_align.sh 8) > "$log" 2>&1 ||
          { echo "failed: align $impl, see $log" >&2; exit 1; }
        python3 - align "$impl" "$log" >> "$raw" <<'EOF'
import json, sys
bench, impl, log = sys.argv[1:4]
for line in open(log):
    cells = [c.strip() for c in line.strip().strip("|").split("|")]
    if len(cells) == 5 and cells[2] == "16":
        print(json.dumps({"bench": f"align_{cells[0]}_{cells[1]}", "impl": impl, "pair": 1,
              "result": {"questions_per_s": float(cells[3]), "peak_rss_mb": float(cells[4])}}))
    elif len(cells) == 2 and cells[0] in ("text20", "text50", "soft1", "soft16"):
        print(json.dumps({"bench": f"input_tokens_{cells[0]}", "impl": impl, "pair": 1,
              "result": {"input_tokens": float(cells[1])}}))
EOF
      done ;;
    smollm2) # the after build beside transformers (the script exists from 2026-12-03 on)
      log=$out/smollm2.after.1.log
      echo "== smollm2: scripts/bench_align_smollm2.sh 1" >&2
      UQA=$after_uqa scripts/bench_align_smollm2.sh 1 > "$log" 2>&1 ||
        { echo "failed: smollm2, see $log" >&2; exit 1; }
      ;;
    ddp) # 1 rank x 1 thread against 2 ranks x 1 thread, same per-rank batch, 12 steps
      [ -d "$ddp_data" ] || "$after_uqa" data synth --config configs/bench/ddp_data.toml \
        --out "$ddp_data" > /dev/null
      for impl in $(order 1); do
        common=(--config configs/bench/trmpp_ddp.toml --set "data.dir=\"$ddp_data\""
          --set train.max_steps=12 --set train.log_every=1)
        rm -rf "$out/ddp1_$impl" "$out/ddp2_$impl"
        OMP_NUM_THREADS=1 RUN=$out/ddp1_$impl timed ddp_1x1 "$impl" 1 "$(tree "$impl")" \
          "$(bin "$impl")" pretrain \
          "${common[@]}" --set train.batch_size=8 --set "train.out=\"$out/ddp1_$impl\""
        OMP_NUM_THREADS=1 RUN=$out/ddp2_$impl timed ddp_2x1 "$impl" 1 "$(tree "$impl")" \
          "$(bin "$impl")" launch \
          --standalone --nproc-per-node 2 -- "$(bin "$impl")" pretrain "${common[@]}" \
          --set train.batch_size=16 --set "train.out=\"$out/ddp2_$impl\""
      done ;;
    *) echo "unknown benchmark: $b" >&2; exit 2 ;;
  esac
done
python3 scripts/bench_compare_summary.py "$out"
