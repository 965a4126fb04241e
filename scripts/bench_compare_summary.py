#!/usr/bin/env python3
"""Summary of scripts/bench_compare.sh's raw.jsonl: one Markdown row per benchmark and metric,
each build's mean over its pairs, and the change of `after` against `before` in percent, signed
so that a positive change is better (faster, smaller) and a negative one a regression.

Usage: scripts/bench_compare_summary.py OUT_DIR
"""
import json
import statistics
import sys
from collections import defaultdict

HIGHER, LOWER, SAME = "higher", "lower", "same"


def dig(row, path):
    value = row
    for key in path.split("."):
        if isinstance(value, list):
            value = value[int(key)] if int(key) < len(value) else None
        elif isinstance(value, dict):
            value = value.get(key)
        else:
            return None
    return value


def busbw(row, size):
    for r in dig(row, "result.results") or []:
        if r["bytes"] == size:
            return r["busbw_gbps"]
    return None


# bench -> [(metric label, extractor, which direction is better)]
STEP = [("positions/s", lambda r: dig(r, "result.pos_per_s"), HIGHER),
        ("peak RSS MB", lambda r: dig(r, "result.peak_rss_mb"), LOWER),
        ("last loss", lambda r: dig(r, "result.loss_last"), SAME)]
WALL = [("wall s", lambda r: r.get("wall_s"), LOWER)]
WALL_RSS = WALL + [("peak RSS MB", lambda r: r.get("peak_rss_mb"), LOWER)]
TRAIN = [("median step s (from step 3)", lambda r: dig(r, "metrics.step_s_median"), LOWER)]
ALLREDUCE = [(f"busbw GB/s, {label}", (lambda size: lambda r: busbw(r, size))(size), HIGHER)
             for label, size in (("64 KiB", 64 << 10), ("1 MiB", 1 << 20),
                                 ("16 MiB", 16 << 20), ("256 MiB", 256 << 20))]
METRICS = {
    "synth": WALL_RSS,
    "scan": [("open + scan s", lambda r: dig(r, "result.total_s"), LOWER),
             ("peak RSS MB", lambda r: dig(r, "result.peak_rss_mb"), LOWER)],
    "validate": WALL_RSS,
    "sampler": [("batches/s", lambda r: dig(r, "result.batches_per_s"), HIGHER),
                ("peak RSS MB", lambda r: dig(r, "result.peak_rss_mb"), LOWER)],
    "allreduce_tcp": ALLREDUCE,
    "allreduce_mpi": ALLREDUCE,
    "launch_barrier": WALL,
    "pretrain_ml1m": WALL_RSS + TRAIN,
    "sasrec_epochs": WALL + TRAIN + [
        ("HR@10, 100 sampled (epoch 5)", lambda r: dig(r, "metrics.hr10_sampled"), SAME),
        ("HR@10, full ranking (epoch 5)", lambda r: dig(r, "metrics.hr10_full"), SAME)],
    "generate": [
        ("reference QA/s", lambda r: dig(r, "result.reference.qas_per_s"), HIGHER),
        ("batched QA/s", lambda r: dig(r, "result.batched.qas_per_s"), HIGHER),
        ("peak RSS MB", lambda r: r.get("peak_rss_mb"), LOWER)],
    "quickstart": WALL_RSS,
    "eval_1x1": WALL, "eval_1x2": WALL, "eval_2x1": WALL,
    "ddp_1x1": TRAIN, "ddp_2x1": TRAIN,
}
for name in ("step_default", "step_default_ckpt", "step_paper_b4", "step_paper_b4_ckpt",
             "step_1_2b"):
    METRICS[name] = STEP
METRICS["sampler_keep_pages"] = METRICS["sampler"]


def metrics_for(bench):
    if bench in METRICS:
        return METRICS[bench]
    if bench.startswith("align_"):
        return [("questions/s", lambda r: dig(r, "result.questions_per_s"), HIGHER),
                ("peak RSS MB", lambda r: dig(r, "result.peak_rss_mb"), LOWER)]
    if bench.startswith("input_tokens_"):
        return [("input tokens per question", lambda r: dig(r, "result.input_tokens"), SAME)]
    return WALL


def fmt(x):
    return f"{x:,.4g}" if abs(x) < 100 else f"{x:,.1f}"


def main(out):
    rows = [json.loads(line) for line in open(f"{out}/raw.jsonl") if line.strip()]
    by = defaultdict(lambda: defaultdict(list))
    order = []
    for r in rows:
        if r["bench"] not in order:
            order.append(r["bench"])
        by[r["bench"]][r["impl"]].append(r)
    print("| benchmark | metric | before (mean) | after (mean) | runs | change |")
    print("|---|---|---|---|---|---|")
    for bench in order:
        for label, get, better in metrics_for(bench):
            vals = {impl: [v for v in map(get, by[bench][impl]) if v is not None]
                    for impl in ("before", "after")}
            if not vals["before"] and not vals["after"]:
                continue
            mean = {k: statistics.mean(v) if v else None for k, v in vals.items()}
            change = ""
            if mean["before"] and mean["after"] is not None:
                ratio = mean["after"] / mean["before"]
                if better == HIGHER:
                    change = f"{(ratio - 1) * 100:+.1f}%"
                elif better == LOWER:
                    change = f"{(1 / ratio - 1) * 100:+.1f}%"
                else:
                    change = "equal" if mean["after"] == mean["before"] else \
                        f"{(ratio - 1) * 100:+.2f}% (different)"
            cells = [fmt(mean[k]) if mean[k] is not None else "" for k in ("before", "after")]
            runs = f"{len(vals['before'])} + {len(vals['after'])}"
            print(f"| {bench} | {label} | {cells[0]} | {cells[1]} | {runs} | {change} |")
    eff = {}
    for impl in ("before", "after"):
        one = [dig(r, "metrics.step_s_median") for r in by["ddp_1x1"][impl]]
        two = [dig(r, "metrics.step_s_median") for r in by["ddp_2x1"][impl]]
        if one and two and None not in one + two:
            eff[impl] = statistics.mean(one) / statistics.mean(two)
    if eff:
        print()
        print("Data-parallel efficiency (1 x 1 step time / 2 x 1 step time, same per-rank batch): "
              + ", ".join(f"{k} {v:.3f}" for k, v in eff.items()))


if __name__ == "__main__":
    main(sys.argv[1])
