#!/usr/bin/env bash
# Start a throwaway PostgreSQL on 127.0.0.1 (as the postgres user: initdb refuses root) and print its URL.
# Usage: eval "$(scripts/start_postgres.sh)"   -> exports CLOUDEASYML_TEST_POSTGRES_URL and PG_TMP
set -euo pipefail
if ! ls -d /usr/lib/postgresql/*/bin >/dev/null 2>&1; then
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql) >&2
fi
PGBIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
PG_TMP=$(mktemp -d)
chown postgres:postgres "$PG_TMP"
PGPORT=$(python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])')
runuser -u postgres -- "$PGBIN/initdb" -D "$PG_TMP/data" -U postgres -A trust -E UTF8 --no-sync >&2
runuser -u postgres -- "$PGBIN/pg_ctl" -D "$PG_TMP/data" -l "$PG_TMP/server.log" -w -t 30 \
  -o "-c listen_addresses=127.0.0.1 -p $PGPORT -k $PG_TMP -c fsync=off -c max_connections=200" start >&2
runuser -u postgres -- "$PGBIN/createdb" -h 127.0.0.1 -p "$PGPORT" -U postgres app >&2
echo "export PG_TMP=$PG_TMP"
echo "export CLOUDEASYML_TEST_POSTGRES_URL=postgresql+asyncpg://postgres@127.0.0.1:$PGPORT/app"
