#!/usr/bin/env bash
# The official `openai` Python SDK against `agent serve`'s POST /v1/responses on every
# runtime. Sets up e2e/responses/.venv (idempotent), builds the CLI once, runs check.py for
# tokio, smol and blocking, and exits non-zero if any fails.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
venv="$here/.venv"
python="${PYTHON:-python3}"

if [ ! -x "$venv/bin/python" ]; then
    "$python" -m venv "$venv"
fi
# Reinstall only when requirements.txt changed since the last install.
stamp="$venv/.requirements.installed"
if [ ! -f "$stamp" ] || ! cmp -s "$here/requirements.txt" "$stamp"; then
    "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$here/requirements.txt"
    cp "$here/requirements.txt" "$stamp"
fi

(cd "$root" && cargo build --quiet -p agent-cli)
target_dir="$(cd "$root" && cargo metadata --format-version 1 --no-deps | "$venv/bin/python" -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')"
agent="$target_dir/debug/agent"
[ -x "$agent" ] || { echo "run.sh: $agent was not built" >&2; exit 1; }

# Run from a scratch directory so that nothing the server writes lands in the tree.
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
cd "$scratch"
timeout 300 "$venv/bin/python" "$here/check.py" "$agent" tokio smol blocking
