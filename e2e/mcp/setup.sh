#!/usr/bin/env bash
# Installs the official MCP Python SDK (pinned in requirements.txt) into e2e/mcp/.venv, for
# the real-server tests (test-support/tests/mcp_real_server.rs). Idempotent: reinstalls only
# when requirements.txt changed since the last install.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
venv="$here/.venv"
python="${PYTHON:-python3}"

if [ ! -x "$venv/bin/python" ]; then
    "$python" -m venv "$venv"
fi
stamp="$venv/.requirements.installed"
if [ ! -f "$stamp" ] || ! cmp -s "$here/requirements.txt" "$stamp"; then
    "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$here/requirements.txt"
    cp "$here/requirements.txt" "$stamp"
fi
"$venv/bin/python" -c 'import mcp.server.fastmcp, uvicorn, anyio' 
echo "e2e/mcp: $("$venv/bin/python" -c 'import importlib.metadata as m; print("mcp", m.version("mcp"))') ready in $venv"
