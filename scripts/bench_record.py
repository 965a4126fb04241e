#!/usr/bin/env python3
"""One raw benchmark line for the bench scripts (bench_compare.sh, bench_vs_pytorch.sh): the
log's last JSON line as `result`, GNU time's wall seconds and peak RSS, the given KEY=VALUE
labels (integers stay integers), and with --run DIR a training run's metrics.jsonl summary: the
median step time from step 3 on and the last evaluation's HR@10.

Usage: bench_record.py LOG TIMEFILE [--rss-key NAME] [--run DIR] KEY=VALUE...
"""
import json
import sys


def last_json(path):
    for line in reversed(open(path, errors="replace").read().splitlines()):
        if line.startswith("{"):
            try:
                return json.loads(line)
            except ValueError:
                pass
    return None


def run_metrics(folder):
    lines = [json.loads(l) for l in open(folder + "/metrics.jsonl")]
    steps = sorted(l["step_seconds"] for l in lines if "step_seconds" in l and l["step"] >= 3)
    metrics = {"step_s_median": steps[len(steps) // 2] if steps else None,
               "steps": max((l["step"] for l in lines if "step" in l), default=0)}
    evals = [l for l in lines if "eval" in l]
    if evals:
        e = evals[-1]["eval"]
        metrics["epoch"] = evals[-1].get("epoch")
        metrics["hr10_sampled"] = e["sampled"]["10"]["hr"]
        metrics["hr10_full"] = e["full"]["10"]["hr"]
    return metrics


def main(argv):
    if len(argv) < 2:
        sys.exit(__doc__)
    log, timefile, rest = argv[0], argv[1], argv[2:]
    rss_key, run, labels = "peak_rss_mb", None, {}
    while rest:
        arg = rest.pop(0)
        if arg in ("--rss-key", "--run"):
            if not rest:
                sys.exit(f"bench_record.py: {arg} needs a value")
            value = rest.pop(0)
            if arg == "--run":
                run = value
            else:
                rss_key = value
        elif "=" in arg:
            key, value = arg.split("=", 1)
            labels[key] = int(value) if value.isdigit() else value
        else:
            sys.exit(f"bench_record.py: expected KEY=VALUE, got {arg!r}")
    wall, rss = open(timefile).read().split()[-2:]
    row = dict(labels)
    row.update({"wall_s": float(wall), rss_key: int(rss) / 1024, "result": last_json(log)})
    if run:
        row["metrics"] = run_metrics(run)
    print(json.dumps(row))


if __name__ == "__main__":
    main(sys.argv[1:])
