#!/usr/bin/env bash
# The GPU half of the GPU check, run on a machine with one NVIDIA GPU (Hopper), no Rust and no
# package registry, over the bundle scripts/gpu-bundle.sh built on a CPU machine:
#
#   scripts/gpu-check.sh BUNDLE OUT
#
# 1. The GPU tests (tests/gpu.rs) with UQA_REQUIRE=gpu, so a missing device fails instead of
#    skipping: each encoder's loss and gradients and the LLM's logits on cuda:0 against the CPU,
#    a tiny pre-training run on cuda:0 against the CPU run, alignment and evaluation on cuda:0.
# 2. The Trm++ step benchmark: `uqa bench step --device cuda` (fp32: uqa has no bf16 yet) beside
#    encoder_step.py --device cuda at the same shapes, in fp32 (the like-for-like row) and bf16;
#    step time, TFLOP/s, MFU against the GPU's dense peak, and peak GPU memory (nvidia-smi,
#    sampled every 100 ms, for both sides alike).
#
# Logs and one summary.json go under OUT. Exit: 0 when every test passed, 1 on a failure, 3 at
# once when there is no GPU here. The libraries are the host's own CUDA 13 ones, found under its
# python3's site-packages (nvidia/*/lib); the driver is the host's.
set -uo pipefail
[ $# -eq 2 ] || { sed -n 2,19p "$0"; exit 2; }
bundle=$(cd "$1" && pwd) || { echo "gpu-check: no bundle folder $1" >&2; exit 2; }
out=$2
repo=$(cd "$(dirname "$0")/.." && pwd)
mkdir -p "$out"
out=$(cd "$out" && pwd)
started=$(date +%s)

if ! command -v nvidia-smi >/dev/null 2>&1 || ! nvidia-smi -L >/dev/null 2>&1; then
  echo "gpu-check: no NVIDIA GPU on this machine (nvidia-smi finds none); run it on the GPU machine. Nothing was run." >&2
  exit 3
fi
# The bundle's executables, unpacked outside OUT (it comes back; they need not).
bin=$(mktemp -d)
trap 'rm -rf "$bin"' EXIT
for f in uqa gpu-tests; do
  [ -f "$bundle/$f.gz" ] || { echo "gpu-check: $bundle/$f.gz missing: build the bundle with scripts/gpu-bundle.sh" >&2; exit 2; }
  gzip -dc "$bundle/$f.gz" > "$bin/$f" 2>/dev/null ||
    python3 -c 'import gzip, shutil, sys; shutil.copyfileobj(gzip.open(sys.argv[1]), open(sys.argv[2], "wb"))' \
      "$bundle/$f.gz" "$bin/$f" || { echo "gpu-check: cannot unpack $bundle/$f.gz" >&2; exit 2; }
  chmod +x "$bin/$f"
done
nvidia-smi > "$out/nvidia-smi.txt" 2>&1
gpu_name=$(nvidia-smi --query-gpu=name --format=csv,noheader | head -n 1)

libs=$(python3 - <<'PY'
import glob, os, site, sysconfig
roots = set(site.getsitepackages() + [sysconfig.get_paths()["purelib"]])
dirs = set()
for r in roots:
    for p in glob.glob(os.path.join(r, "nvidia", "**", "lib*.so*"), recursive=True):
        dirs.add(os.path.dirname(p))
print(":".join(sorted(dirs)))
PY
)
export LD_LIBRARY_PATH="${libs}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
echo "gpu-check: $gpu_name; CUDA libraries from $libs" | tee "$out/env.txt"
if ! ldd "$bin/uqa" > "$out/ldd.txt" 2>&1 || grep -q "not found" "$out/ldd.txt"; then
  echo "gpu-check: the bundle's libraries do not all resolve:" >&2
  grep "not found" "$out/ldd.txt" >&2
  exit 1
fi

# 1. Tests, one at a time (one GPU); the skip log names anything that did not run.
export UQA_EXE="$bin/uqa" UQA_REPO="$repo" UQA_REQUIRE=gpu UQA_SKIP_LOG="$out/skips.txt"
: > "$UQA_SKIP_LOG"
(cd "$repo" && timeout 300 "$bin/gpu-tests" --test-threads 1) > "$out/gpu-tests.log" 2>&1
tests_status=$?
tail -n 5 "$out/gpu-tests.log"

# 2. The step benchmark: the default Trm++ shape of `uqa bench step` and encoder_step.py.
shape=(--layers 4 --dim 512 --heads 4 --seq 128 --batch 8 --items 100000 --ce-chunk 16384 --dropout 0.1
  --steps 10 --warmup 3)
sample_memory() { # LOG: peak memory.used of the GPU, MiB, while the caller's command runs
  nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 100 > "$1" 2>/dev/null &
  echo $!
}
bench() { # NAME CMD...: log, exit status and peak GPU memory of one benchmark run
  local name=$1; shift
  local pid
  pid=$(sample_memory "$out/$name.mem")
  timeout 150 "$@" > "$out/$name.log" 2>&1
  echo $? > "$out/$name.status"
  kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null
}
bench uqa_fp32 "$bin/uqa" bench step --device cuda "${shape[@]}"
if [ -f "$bundle/encoder_step.py" ]; then
  bench torch_fp32 python3 "$bundle/encoder_step.py" --device cuda --dtype fp32 --ce chunked --adamw fused "${shape[@]}"
  bench torch_bf16 python3 "$bundle/encoder_step.py" --device cuda --dtype bf16 --ce chunked --adamw fused "${shape[@]}"
fi

python3 - "$out" "$gpu_name" "$tests_status" "$started" <<'PY'
import json, os, sys, time
out, gpu, tests_status, started = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
# Dense peaks (TFLOP/s) of the SXM parts: fp32 on CUDA cores, bf16 on tensor cores.
PEAK = {"fp32": 67.0, "bf16": 989.0} if ("H100" in gpu or "H200" in gpu) else {}
def last_json(path):
    try:
        for line in reversed(open(path, errors="replace").read().splitlines()):
            if line.startswith("{"):
                return json.loads(line)
    except (OSError, ValueError):
        pass
    return None
bench = {}
for name in ("uqa_fp32", "torch_fp32", "torch_bf16"):
    log = os.path.join(out, name + ".log")
    if not os.path.exists(log):
        continue
    r = last_json(log) or {}
    status = int(open(os.path.join(out, name + ".status")).read() or 1)
    mem = [int(x) for x in open(os.path.join(out, name + ".mem")).read().split() if x.isdigit()]
    step = r.get("step_s_median")
    flops = r.get("flops_per_step")
    row = {"status": status, "step_s": step, "peak_gpu_mib": max(mem) if mem else None,
           "result": r}
    if step and flops:
        row["tflops"] = flops / step / 1e12
        dtype = name.split("_")[1]
        if dtype in PEAK:
            row["mfu"] = row["tflops"] / PEAK[dtype]
    bench[name] = row
skips = [l.strip() for l in open(os.path.join(out, "skips.txt")) if l.strip()]
summary = {"gpu": gpu, "tests_passed": tests_status == 0, "tests_status": tests_status,
           "skips": skips, "bench": bench, "seconds": int(time.time()) - started}
if bench.get("uqa_fp32", {}).get("step_s") and bench.get("torch_fp32", {}).get("step_s"):
    summary["uqa_vs_torch_fp32_speed"] = bench["torch_fp32"]["step_s"] / bench["uqa_fp32"]["step_s"]
json.dump(summary, open(os.path.join(out, "summary.json"), "w"), indent=2)
print(json.dumps(summary, indent=2))
PY

bench_status=$(cat "$out/uqa_fp32.status" 2>/dev/null || echo 1)
if [ "$tests_status" != 0 ] || [ "$bench_status" != 0 ]; then
  echo "gpu-check: FAILED (tests exit $tests_status, uqa benchmark exit $bench_status); see $out" >&2
  exit 1
fi
echo "gpu-check: passed in $(( $(date +%s) - started )) s; $out/summary.json"
