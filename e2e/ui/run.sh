#!/usr/bin/env bash
# Real front-end clients (the Vercel AI SDK, @ag-ui/client) against `agent serve` on every
# runtime. Exits non-zero on any failure. Idempotent: installs the pinned packages with
# `npm ci` when node_modules is missing.
#
# usage: e2e/ui/run.sh [runtime…]     (default: tokio smol blocking)
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
runtimes=("$@")
[ ${#runtimes[@]} -gt 0 ] || runtimes=(tokio smol blocking)

command -v node >/dev/null || { echo "e2e/ui: node is required" >&2; exit 1; }
command -v npm >/dev/null || { echo "e2e/ui: npm is required" >&2; exit 1; }
if [ ! -d "$here/node_modules" ]; then
  (cd "$here" && npm ci --no-audit --no-fund)
fi

(cd "$root" && cargo build -q -p agent-cli)
agent="$root/target/debug/agent"

pid=""
log=""
cleanup() {
  if [ -n "$pid" ]; then kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi
  if [ -n "$log" ]; then rm -f "$log"; fi
}
trap cleanup EXIT

failed=0
for runtime in "${runtimes[@]}"; do
  log="$(mktemp)"
  "$agent" serve --runtime "$runtime" --addr 127.0.0.1:0 2>"$log" &
  pid=$!
  base=""
  for _ in $(seq 1 200); do
    base="$(grep -o 'serving on http://[0-9.:]*' "$log" | head -n1 | sed 's/serving on //' || true)"
    [ -n "$base" ] && break
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.05
  done
  if [ -z "$base" ]; then
    echo "e2e/ui [$runtime]: agent serve did not start:" >&2
    cat "$log" >&2
    failed=1
  else
    echo "e2e/ui [$runtime]: $base"
    if ! (cd "$here" && timeout 60 node check.mjs "$base" | sed "s/^/  [$runtime] /"); then
      echo "e2e/ui [$runtime]: FAILED" >&2
      failed=1
    fi
  fi
  kill "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  pid=""
  rm -f "$log"
  log=""
done
exit "$failed"
