#!/usr/bin/env bash
# Start a throwaway Redis on 127.0.0.1 (Debian's package) and print its URL.
# Usage: eval "$(scripts/start_redis.sh)"   -> exports CLOUDEASYML_TEST_REDIS_URL and REDIS_TMP
set -euo pipefail
if ! command -v redis-server >/dev/null 2>&1; then
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends redis-server) >&2
fi
REDIS_TMP=$(mktemp -d)
REDIS_PORT=$(python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])')
redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --dir "$REDIS_TMP" --save '' --appendonly no \
  --daemonize yes --pidfile "$REDIS_TMP/redis.pid" --logfile "$REDIS_TMP/redis.log" >&2
for _ in $(seq 50); do
  redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1 && break
  sleep 0.1
done
echo "export REDIS_TMP=$REDIS_TMP"
echo "export CLOUDEASYML_TEST_REDIS_URL=redis://127.0.0.1:$REDIS_PORT/0"
