#!/usr/bin/env bash
# Alignment of a real LLM at practical cost on the CPU (docs/BENCHMARKS.md): `uqa align` with
# SmolLM2-135M-Instruct (the GGUF, dequantised to f32), the adapter strategy (LLM frozen), 16
# questions per step and one mean-pooled soft token, on the quickstart's questions and encoder;
# beside ../shared/bench/align_step.py (transformers, random weights of the same shape, one soft
# token, 16 rows, 12 target tokens per row) on the same machine, alternating.
#
# transformers pads every row to the batch's longest and computes logits at every position, as
# `LlamaForCausalLM(labels=...)` does; uqa runs the projections on the real tokens only and the
# logits on the target tokens only. So align_step.py runs twice per pair:
#   - `--min-len 34 --max-len 81`: its one batch padded to about 80, the width of uqa's batches
#     here (their longest questions were 55 to 82 tokens; `uqa align` prints the training file's
#     distribution, 35 to 110, mean 53.4);
#   - `--min-len 49 --max-len 50`: no padding, at the mean length of uqa's timed questions
#     (50.4 input tokens with the soft token, in the uqa lines).
#
# Needs runs/quickstart (made if missing), GNU time, `scripts/fetch-assets.sh llm`, and for the
# PyTorch side a Python with torch 2.4.1 and transformers (PYTHON=...; skipped when unset).
# Usage: PYTHON=venv/bin/python scripts/bench_align_smollm2.sh [PAIRS]   (prints raw lines)
set -euo pipefail
cd "$(dirname "$0")/.."
pairs=${1:-2}
uqa=${UQA:-${CARGO_TARGET_DIR:-target}/release/uqa}
qs=runs/quickstart
out=runs/bench_align_smollm2
cache=${UQA_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/uqa}
smollm="$cache/llm/smollm2-135m-instruct-q4_1.gguf"
[ -x "$uqa" ] || cargo build --release
[ -d "$qs/encoder/checkpoints" ] || "$uqa" quickstart
[ -f "$smollm" ] || { echo "SmolLM2 not cached: run scripts/fetch-assets.sh llm" >&2; exit 1; }
rm -rf "$out" && mkdir -p "$out"
echo "# $(date -u +%F) $(lscpu | sed -n 's/^Model name: *//p'), $(nproc) cores"

uqa_run() {
  local run=$out/uqa_$1
  /usr/bin/time -f '%M' -o "$run.rss" "$uqa" align --config configs/quickstart/align_trmpp.toml \
    --set "data.dataset=\"$qs/data\"" --set "data.qa_dir=\"$qs/qa\"" \
    --set "prompt.encoder=\"$qs/encoder\"" --set "llm.source=\"$smollm\"" \
    --set 'strategy={kind = "adapter"}' --set 'prompt.adapter={kind = "mean_pool"}' \
    --set train.max_steps=6 --set train.log_every=1 --set "train.out=\"$run\"" > "$run.log" 2>&1
  grep "input tokens per question" "$run.log" | head -1
  python3 - "$run/metrics.jsonl" "$(tail -1 "$run.rss")" <<'EOF'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
timed = [r for r in rows if r["step"] >= 2]
qps = statistics.median(r["questions_per_second"] for r in timed)
tokens = sum(r["input_tokens_per_second"] * r["step_seconds"] for r in rows) / (16 * len(rows))
targets = sum(r["target_tokens"] for r in rows) / (16 * len(rows))
print(json.dumps({"bench": "uqa align smollm2 adapter", "batch": 16,
                  "questions_per_s_median_steps_2_6": round(qps, 3),
                  "fwd_s_median": round(statistics.median(r["forward_seconds"] for r in timed), 3),
                  "bwd_s_median": round(statistics.median(r["backward_seconds"] for r in timed), 3),
                  "input_tokens_per_question": round(tokens, 1),
                  "target_tokens_per_question": round(targets, 2),
                  "peak_rss_mb": int(sys.argv[2]) // 1024}))
EOF
}

torch_run() {
  [ -n "${PYTHON:-}" ] || { echo '{"bench": "align_step", "skipped": "PYTHON unset"}'; return; }
  "$PYTHON" ../shared/bench/align_step.py --llm smollm2-135m --strategy adapter \
    --min-len "$1" --max-len "$2" --answer-len 12 --threads "$(nproc)" --steps 4 --warmup 1 |
    tail -1
}

for i in $(seq "$pairs"); do
  uqa_run "$i"
  torch_run 34 81
  torch_run 49 50
done
