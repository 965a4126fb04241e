#!/usr/bin/env bash
# Table 2 rows for a real pretrained LLM (issue 12 item 3; docs/RESULTS.md): SmolLM2-135M-Instruct
# aligned by the paper's recipe on the `small` preset, beside the prior and an untrained encoder.
#
#   1. data: `uqa data synth --preset small` (6,000 users), questions for the seven sub-tasks
#      (the reference's Chinese templates; TRAIN_PER_TASK training and EVAL_PER_TASK evaluation
#      questions per sub-task);
#   2. Trm++ pre-trained on it (configs/smollm2/pretrain_trmpp.toml);
#   3. alignment, LLM frozen, adapter only (configs/smollm2/align_adapter.toml): trained encoder,
#      untrained encoder; then the trained encoder with LoRA on q and v (`strategy = lora`);
#      with TEXT20=1 also Text20 (the last 20 clicks as text, LoRA: nothing else can train;
#      TEXT20_MAX_STEPS caps its steps, since each of its questions costs about ten soft-prompt
#      ones: 0, the default, runs the whole epoch);
#   4. `uqa eval` of each (greedy, at most MAX_NEW_TOKENS tokens), then `uqa report` with the
#      prior and history rows, distinct answers and paired bootstrap verdicts.
#
# Every stage is skipped when its output exists, so an interrupted run continues. Needs
# `scripts/fetch-assets.sh llm`. Usage: scripts/smollm2_table2.sh [OUT] (default runs/smollm2)
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-runs/smollm2}
uqa=${UQA:-${CARGO_TARGET_DIR:-target}/release/uqa}
train_per_task=${TRAIN_PER_TASK:-300}
eval_per_task=${EVAL_PER_TASK:-40}
max_new_tokens=${MAX_NEW_TOKENS:-32}
cache=${UQA_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/uqa}
smollm="$cache/llm/smollm2-135m-instruct-q4_1.gguf"
[ -x "$uqa" ] || cargo build --release
[ -f "$smollm" ] || { echo "SmolLM2 not cached: run scripts/fetch-assets.sh llm" >&2; exit 1; }
mkdir -p "$out"
log() { echo "[$(date -u +%T)] $*"; }

if [ ! -f "$out/data/dataset.json" ]; then
  log "data: small preset -> $out/data"
  "$uqa" data synth --preset small --seed 0 --out "$out/data" --tokenizer builtin --force
fi
if [ ! -f "$out/qa/qa.json" ]; then
  log "questions: $train_per_task training, $eval_per_task evaluation per sub-task"
  "$uqa" qa-gen --data "$out/data" --out "$out/qa" --lang zh --seed 0 \
    --train-per-task "$train_per_task" --eval-per-task "$eval_per_task"
fi
if [ ! -e "$out/encoder/checkpoints/latest" ]; then
  log "pre-training Trm++"
  "$uqa" pretrain --config configs/smollm2/pretrain_trmpp.toml \
    --set "data.dir=\"$out/data\"" --set "train.out=\"$out/encoder\""
fi

paths=(--set "data.dataset=\"$out/data\"" --set "data.qa_dir=\"$out/qa\""
  --set "prompt.encoder=\"$out/encoder\"" --set "llm.source=\"$smollm\"")
align() {
  local name=$1; shift
  if [ ! -e "$out/$name/checkpoints/latest" ]; then
    log "aligning $name"
    "$uqa" align --config configs/smollm2/align_adapter.toml "${paths[@]}" \
      --set "train.out=\"$out/$name\"" "$@"
  fi
  if [ ! -f "$out/$name/eval/eval.json" ]; then
    log "evaluating $name"
    "$uqa" eval --run "$out/$name" --name "$name" --max-new-tokens "$max_new_tokens"
  fi
}
align trained
align untrained --set prompt.untrained=true
align trained_lora --set 'strategy={kind = "lora", rank = 8, alpha = 16.0}'
runs=("$out/trained/eval" "$out/untrained/eval" "$out/trained_lora/eval")
if [ "${TEXT20:-0}" = 1 ]; then
  align text20_lora --set 'prompt={kind = "text", last_k = 20}' \
    --set 'strategy={kind = "lora", rank = 8, alpha = 16.0}' --set data.max_text_len=2048 \
    --set train.batch_size=4 --set "train.max_steps=${TEXT20_MAX_STEPS:-0}"
  runs+=("$out/text20_lora/eval")
fi

log "report -> $out/report"
"$uqa" report "${runs[@]}" --out "$out/report" --compare trained,untrained \
  --compare trained_lora,untrained $([ "${TEXT20:-0}" = 1 ] && echo --compare trained_lora,text20_lora)
