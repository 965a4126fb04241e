#!/usr/bin/env bash
# Alignment benchmarks of docs/BENCHMARKS.md (issue 5): step throughput (questions/s) and peak
# RSS of `uqa align` on one process, for the tiny LLM and SmolLM2-135M (when cached), adapter and
# full strategies; and LLM input tokens per question for Text20, Text50, one soft token
# (mean pool) and 16 soft tokens (Q-Former).
#
# Needs the quickstart's artefacts (runs/quickstart; made if missing), GNU time (/usr/bin/time),
# and for SmolLM2 `scripts/fetch-assets.sh llm`. Usage: scripts/bench_align.sh [STEPS]
set -euo pipefail
cd "$(dirname "$0")/.."
steps=${1:-8}
uqa=${UQA:-${CARGO_TARGET_DIR:-target}/release/uqa}
out=runs/bench_align
qs=runs/quickstart
[ -x "$uqa" ] || cargo build --release
[ -d "$qs/encoder/checkpoints" ] || "$uqa" quickstart
rm -rf "$out" && mkdir -p "$out"
cache=${UQA_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/uqa}
smollm="$cache/llm/smollm2-135m-instruct-q4_1.gguf"

common=(--config configs/quickstart/align_trmpp.toml
  --set "data.dataset=\"$qs/data\"" --set "data.qa_dir=\"$qs/qa\""
  --set "prompt.encoder=\"$qs/encoder\"" --set train.log_every=1)

echo "| LLM | strategy | batch | questions/s (median of steps 3..$steps) | peak RSS MB |"
echo "|---|---|---|---|---|"
for llm in tiny smollm2; do
  src=tiny
  if [ $llm = smollm2 ]; then
    [ -f "$smollm" ] || { echo "| SmolLM2-135M | (not cached: run scripts/fetch-assets.sh llm) | | | |"; continue; }
    src=$smollm
  fi
  for strategy in adapter full; do
    run=$out/${llm}_$strategy
    strat='{kind = "adapter"}'
    [ $strategy = full ] && strat='{kind = "full", llm_lr = 1e-4}'
    /usr/bin/time -f '%M' -o "$run.rss" "$uqa" align "${common[@]}" \
      --set "llm.source=\"$src\"" --set "strategy=$strat" \
      --set "train.max_steps=$steps" --set "train.out=\"$run\"" > "$run.log" 2>&1
    qps=$(python3 - "$run/metrics.jsonl" <<'EOF'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if '"questions_per_second"' in l]
print(f"{statistics.median(r['questions_per_second'] for r in rows if r['step'] >= 3):.2f}")
EOF
)
    echo "| $llm | $strategy | 16 | $qps | $(( $(tail -1 "$run.rss") / 1024 )) |"
  done
done

echo
echo "| prompt | average LLM input tokens per question (70 evaluation questions) |"
echo "|---|---|"
for p in text20 text50 soft1 soft16; do
  run=$out/tokens_$p
  case $p in
    text20) extra=(--set 'prompt={kind = "text", last_k = 20}' --set 'strategy={kind = "full"}') ;;
    text50) extra=(--set 'prompt={kind = "text", last_k = 50}' --set 'strategy={kind = "full"}' --set data.max_text_len=4096) ;;
    soft1) extra=() ;;
    soft16) extra=(--set "prompt={kind = \"soft\", encoder = \"$qs/encoder\", adapter = {kind = \"q_former\"}}") ;;
  esac
  [ $p = text20 ] && extra+=(--set data.max_text_len=2048)
  "$uqa" align "${common[@]}" "${extra[@]}" --set train.max_steps=1 --set "train.out=\"$run\"" > "$run.log" 2>&1
  "$uqa" eval --run "$run" --limit 70 --max-new-tokens 1 >> "$run.log" 2>&1
  avg=$(python3 -c "import json,sys; r=[json.loads(l) for l in open('$run/eval/predictions.jsonl')]; print(f'{sum(x[\"input_tokens\"] for x in r)/len(r):.1f}')")
  echo "| $p | $avg |"
done
