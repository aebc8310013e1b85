#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Prometheus metrics over HTTPS (--metrics-port, a self-signed certificate made at start),
# scraped with curl -k while a copy runs slowly (the double's /folder delay): the document
# matches the regular expressions CDI's controller
# (`kubevirt_cdi_import_progress_total\{ownerUID\="UID"\} (\d{1,3}\.?\d*)`) and Forklift's
# populator controller (`progress\{ownerUID="UID"\} (\d+\.?\d*)`) apply, with OWNER_UID's
# value; the percent and the per-disk bytes move between two scrapes; the VM's state is
# there; other paths are 404; the certificate is not one curl trusts; nothing listens once
# ferry has exited.  The same for ferry cdi-import.
# shellcheck source-path=SCRIPTDIR source=functions.sh
source "$(dirname "$0")/functions.sh"
# shellcheck source-path=SCRIPTDIR source=cdi-functions.sh
source "$(dirname "$0")/cdi-functions.sh"
set -euo pipefail
requires jq curl python3
requires_ferry

uid=3c0f9d2e-8a41-4b7e-9f55-1d2e3f405162
start_double

# metrics_url ERRFILE: the URL ferry logged.
metrics_url ()
{
  sed -n 's|.*metrics on \(https://[^ ]*\).*|\1|p' "$1" | head -n1
}

# ferry migrate: a cold plan, 96 MiB of data fetched in 4 MiB GETs of 300 ms each.
create_vm web01 "disks=128M&power=off&cbt=1" >/dev/null
make_sparse_disk "$tmpdir/d0" 128M 0:1536
place_disk web01 2000 "$tmpdir/d0"
make_targets web01 1
write_plan "$tmpdir/plan.json" '. * {"connectionsPerDisk": 1, "vms": [{"name": "web01"}]}'
control POST "/inject?folder-delay=300ms" >/dev/null
OWNER_UID=$uid "$ferry" migrate "$tmpdir/plan.json" --progress=none --metrics-port=0 \
  --metrics-address=127.0.0.1 2>"$tmpdir/ferry.err" &
pid=$!
cleanup_fn "kill -9 $pid 2>/dev/null"
timeout=30 wait_for grep -qs "metrics on https://" "$tmpdir/ferry.err"
url=$(metrics_url "$tmpdir/ferry.err")
check_scrapes "$url" "$uid"
# A cold migration's one round is its cutover round.
grep -q '^ferry_vm_state{vm="web01",state="cutover"} 1$' "$tmpdir/m2" ||
  fail "no VM state: $(grep ferry_vm "$tmpdir/m2")"
grep -q '^ferry_disk_bytes_total{vm="web01",disk="2000",round="1"} [1-9]' "$tmpdir/m2" ||
  fail "no bytes to do: $(grep ferry_disk "$tmpdir/m2")"
control POST "/inject?folder-delay=0s" >/dev/null
wait "$pid" || fail "ferry migrate failed: $(tail -3 "$tmpdir/ferry.err")"
! curl -sk --max-time 5 -o /dev/null "$url" || fail "the metrics endpoint outlived ferry"

# ferry cdi-import: CDI's importer serves the same names while it copies.
create_vm imp "disks=128M&power=on&cbt=1" >/dev/null
place_disk imp 2000 "$tmpdir/d0"
snap=$(control POST "/vms/imp/snapshot?name=cdi-1" | jq -r .moref)
mkdir -p "$tmpdir/data"
control POST "/inject?folder-delay=1s" >/dev/null # 4 connections
IMPORTER_SOURCE=vddk IMPORTER_ENDPOINT="https://$SERVER/sdk" IMPORTER_ACCESS_KEY_ID=user \
  IMPORTER_SECRET_KEY=pass IMPORTER_THUMBPRINT="$THUMBPRINT_SHA1" \
  IMPORTER_UUID="$(vm_json imp | jq -r .uuid)" \
  IMPORTER_BACKING_FILE="$(vm_json imp | jq -r '.disks[0].fileName')" \
  IMPORTER_CURRENT_CHECKPOINT="$snap" OWNER_UID=$uid FERRY_CDI_DATA_DIR=$tmpdir/data \
  FERRY_CDI_BLOCK_PATH=$tmpdir/none FERRY_METRICS_PORT=0 FERRY_METRICS_ADDRESS=127.0.0.1 \
  FERRY_TERMINATION_LOG=$tmpdir/cdi.msg \
  "$ferry" cdi-import --progress=none 2>"$tmpdir/cdi.err" &
pid=$!
cleanup_fn "kill -9 $pid 2>/dev/null"
timeout=30 wait_for grep -qs "metrics on https://" "$tmpdir/cdi.err"
check_scrapes "$(metrics_url "$tmpdir/cdi.err")" "$uid"
control POST "/inject?folder-delay=0s" >/dev/null
wait "$pid" || fail "ferry cdi-import failed: $(tail -3 "$tmpdir/cdi.err")"
jq -e '.message == "Import Complete"' "$tmpdir/cdi.msg" >/dev/null || fail "$(cat "$tmpdir/cdi.msg")"
