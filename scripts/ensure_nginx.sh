#!/usr/bin/env bash
# Make sure the `nginx` binary (Debian's package) is installed, for the multi-replica test
# (tests/integration/test_replicas.py runs it as a foreground process with a config of its own; no service is
# started here). Usage: scripts/ensure_nginx.sh
set -euo pipefail
if ! command -v nginx >/dev/null 2>&1 && [ ! -x /usr/sbin/nginx ]; then
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends nginx-light \
    || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends nginx) >&2
fi
PATH="$PATH:/usr/sbin" nginx -v
