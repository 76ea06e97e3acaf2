#!/usr/bin/env bash
# Headless Chromium (Debian's package) on one origin against `agent serve` on another, on
# every runtime: fetch streaming, EventSource resume after forced disconnects, cancel, and
# a refused origin. Exits non-zero on any failure. Idempotent: installs Chromium with apt
# and the pinned playwright-core with `npm ci` when missing.
#
# usage: e2e/browser/run.sh [runtime…]     (default: tokio smol blocking)
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
runtimes=("$@")
[ ${#runtimes[@]} -gt 0 ] || runtimes=(tokio smol blocking)

command -v node >/dev/null || { echo "e2e/browser: node is required" >&2; exit 1; }
if ! command -v chromium >/dev/null 2>&1; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
fi
chromium --version
if [ ! -d "$here/node_modules" ]; then
  (cd "$here" && npm ci --no-audit --no-fund)
fi

(cd "$root" && cargo build -q -p agent-cli)
agent="$root/target/debug/agent"

failed=0
for runtime in "${runtimes[@]}"; do
  echo "e2e/browser [$runtime]"
  if ! (cd "$here" && timeout 150 node check.mjs "$agent" "$runtime" | sed "s/^/  [$runtime] /"; exit "${PIPESTATUS[0]}"); then
    echo "e2e/browser [$runtime]: FAILED" >&2
    failed=1
  fi
done
exit "$failed"
