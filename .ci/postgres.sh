#!/usr/bin/env bash
# Install (Debian package `postgresql`) and start a private PostgreSQL cluster for the tests:
# listening on 127.0.0.1 only, trust authentication, its own data directory and port, so it
# never touches a system cluster. Idempotent: a cluster already running is left as it is.
# Prints the DSN the tests read from AGENT_TEST_POSTGRES_URL:
#   export AGENT_TEST_POSTGRES_URL=$(bash .ci/postgres.sh)
set -euo pipefail
PORT=${AGENT_TEST_POSTGRES_PORT:-54329}
DATA=${AGENT_TEST_POSTGRES_DATA:-/tmp/agent-test-postgres}
DSN="postgres://postgres@127.0.0.1:${PORT}/postgres"

bin_dir() {
  local dir
  dir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
  echo "$dir"
}

BIN=$(bin_dir)
if [ -z "$BIN" ] || [ ! -x "$BIN/initdb" ]; then
  echo "postgres.sh: installing PostgreSQL (apt)" >&2
  apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >&2
  BIN=$(bin_dir)
fi

as_postgres() {
  if [ "$(id -u)" = 0 ]; then
    runuser -u postgres -- "$@"
  else
    "$@"
  fi
}

if "$BIN/pg_isready" -q -h 127.0.0.1 -p "$PORT" 2>/dev/null; then
  echo "$DSN"
  exit 0
fi
if [ ! -f "$DATA/PG_VERSION" ]; then
  mkdir -p "$DATA"
  [ "$(id -u)" = 0 ] && chown postgres "$DATA"
  as_postgres "$BIN/initdb" -D "$DATA" -U postgres -A trust --no-sync >/dev/null
fi
as_postgres "$BIN/pg_ctl" -D "$DATA" -l "$DATA/server.log" -w -t 60 \
  -o "-h 127.0.0.1 -p $PORT -k $DATA -c fsync=off -c max_connections=200" start >&2
echo "$DSN"
