#!/usr/bin/env bash
# Where LI is lost in the quickstart (issue 12; docs/RESULTS.md, "Where it falls short: LI").
#
#   1. questions with a validation split (`uqa qa-gen --valid-per-task 60`) from the quickstart's
#      data: a tenth of the users give their training questions to align_data_valid.arrow;
#   2. the quickstart's alignment recipe (configs/quickstart/align_trmpp.toml) on those training
#      questions with token-level unlikelihood weights 0 (the recipe), 1 and 4 (`[loss]
#      unlikelihood`), each scored on the validation questions: accuracy per sub-task, and for
#      LI the lists whose first value is right and the lists that repeat a value;
#   3. the linear probe (examples/li_probe.rs) of what the adapter reads, for the trained and
#      the untrained encoder: can the ranked top 3 be read from the soft prompt at all?
#
# Needs the quickstart's data and encoder (`cargo run --release -- quickstart` first). Every
# stage is skipped when its output exists. Usage: scripts/li_diagnosis.sh [OUT] (default runs/li)
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-runs/li}
target=${CARGO_TARGET_DIR:-target}
uqa=${UQA:-$target/release/uqa}
probe=$target/release/examples/li_probe
base=configs/quickstart/align_trmpp.toml
[ -f runs/quickstart/encoder/config.toml ] || {
  echo "no quickstart run: run \`cargo run --release -- quickstart\` first" >&2
  exit 1
}
[ -x "$uqa" ] || cargo build --release
[ -x "$probe" ] || cargo build --release --example li_probe
mkdir -p "$out"
log() { echo "[$(date -u +%T)] $*" >&2; }

if [ ! -f "$out/qa/qa.json" ]; then
  log "questions with a validation split -> $out/qa"
  "$uqa" qa-gen --data runs/quickstart/data --out "$out/qa" --train-per-task 2000 \
    --eval-per-task 60 --valid-per-task 60 >&2
fi

for weight in 0 1 4; do
  run=$out/ul$weight
  if [ ! -f "$run/valid/predictions.jsonl" ]; then
    log "align with unlikelihood $weight -> $run"
    "$uqa" launch --standalone --nproc-per-node 2 -- "$uqa" align --config "$base" \
      --set "data.qa_dir=\"$out/qa\"" --set "train.out=\"$run\"" \
      --set "loss.unlikelihood=$weight" > "$run.log" 2>&1
    "$uqa" launch --standalone --nproc-per-node 2 -- "$uqa" eval --run "$run" \
      --questions "$out/qa/align_data_valid.arrow" --out "$run/valid" >> "$run.log" 2>&1
  fi
done

echo "| unlikelihood | DF | MF | IP | AP | LI | SI | IT | All | LI: first value right | LI: lists with a repeat |"
echo "|---|---|---|---|---|---|---|---|---|---|---|"
for weight in 0 1 4; do
  python3 - "$out/ul$weight/valid/predictions.jsonl" "$weight" <<'PY'
import collections, json, sys
rows = [json.loads(line) for line in open(sys.argv[1])]
right = collections.defaultdict(list)
for r in rows:
    right[r["task"]].append(r["prediction"].startswith(r["answer"]))
split = lambda s: [x.strip() for x in s.split(";")]
li = [r for r in rows if r["task"] == "LI"]
first = sum(split(r["prediction"])[0] == split(r["answer"])[0] for r in li)
repeat = sum(len(set(split(r["prediction"]))) < len(split(r["prediction"])) for r in li)
pct = lambda v: f"{100 * sum(v) / len(v):.1f}"
cells = [pct(right[t]) for t in ["DF", "MF", "IP", "AP", "LI", "SI", "IT"]]
every = [x for v in right.values() for x in v]
print(f"| {sys.argv[2]} | {' | '.join(cells)} | {pct(every)} | {first}/{len(li)} | {repeat}/{len(li)} |")
PY
done

for untrained in false true; do
  echo
  "$probe" "$base" "$out/qa/align_data_train.arrow" "$out/qa/align_data_valid.arrow" \
    --set "prompt.untrained=$untrained"
done
