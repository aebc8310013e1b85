#!/bin/sh
# SPDX-License-Identifier: Apache-2.0
# ferry-entrypoint: the importer image's entrypoint (container/README.md).
#   IMPORTER_SOURCE set  -> CDI's importer contract: ferry cdi-import
#   arguments given      -> ferry ARGS...
#   no arguments         -> the plan mounted from a ConfigMap at /etc/ferry/plan/plan.json
set -eu

if [ -n "${IMPORTER_SOURCE:-}" ]; then
  exec ferry cdi-import
fi
if [ "$#" -gt 0 ]; then
  exec ferry "$@"
fi
exec ferry migrate /etc/ferry/plan/plan.json --progress=json \
  --metrics-port="${FERRY_METRICS_PORT:-8443}" --termination-log=/dev/termination-log
