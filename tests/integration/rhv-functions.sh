# SPDX-License-Identifier: Apache-2.0
# ferry integration tests: helpers for the RHV / oVirt double (tests/doubles/rhv).
#
#   source tests/integration/functions.sh
#   source tests/integration/rhv-functions.sh
#   set -e
#   start_rhv_double        # sets ENGINE_URL CACERT CONTROL RHV_USER RHV_PASSWORD
#   vm=$(rhv_create_vm web01 down 32M 16M)
#   start_ferry_rhv vm=web01
# shellcheck shell=bash disable=SC2154
# (top, tmpdir and plugin come from functions.sh, sourced first)

rhv_double=$top/tests/doubles/rhv/rhv_double.py

# start_rhv_double [ARGS...]: start the double (Debian's python3, for python3-libnbd).
start_rhv_double ()
{
  requires qemu-nbd qemu-img qemu-io openssl curl jq
  /usr/bin/python3 -c 'import nbd' 2>/dev/null || skip "python3-libnbd is not installed"
  RHV_PASSWORD=${RHV_PASSWORD:-rhv-secret-$RANDOM}
  local out=$tmpdir/rhv-double.out
  /usr/bin/python3 "$rhv_double" --dir "$tmpdir/rhv" --password "$RHV_PASSWORD" "$@" \
    >"$out" 2>"$tmpdir/rhv-double.err" &
  RHV_DOUBLE_PID=$!
  cleanup_fn "kill $RHV_DOUBLE_PID 2>/dev/null; wait $RHV_DOUBLE_PID 2>/dev/null"
  timeout=30 wait_for grep -q '^READY' "$out"
  # shellcheck disable=SC1090
  source <(grep -E '^[A-Z_0-9]+=' "$out")
  export ENGINE_URL CACERT CONTROL RHV_USER RHV_PASSWORD
}

# rhv_control METHOD PATH [curl args...]: the double's control channel.
rhv_control ()
{
  local method=$1 path=$2
  shift 2
  curl -sS --fail-with-body -X "$method" "$CONTROL$path" "$@"
}

# rhv_create_vm NAME STATUS SIZE...: a VM (down|up) with one qcow2 disk per SIZE (bytes
# or with a K/M suffix; SIZE/raw for a raw disk); prints its id.
rhv_create_vm ()
{
  local name=$1 status=$2 size disks=()
  shift 2
  for size in "$@"; do disks+=("$(numfmt --from=iec "${size%/raw}")${size#"${size%/raw}"}"); done
  jq -n --arg n "$name" --arg s "$status" '{name: $n, status: $s,
      disks: [$ARGS.positional[] | split("/") |
              {size: (.[0] | tonumber), format: (.[1] // "qcow2")}]}' --args "${disks[@]}" |
    rhv_control POST /vms --data-binary @- | jq -r .id
}

# rhv_snapshot VM: a VM snapshot (each disk's volume becomes a disk snapshot under a new
# qcow2 layer); prints its id.
rhv_snapshot ()
{
  rhv_control POST "/vms/$1/snapshots" --data-binary '{"description": "test"}' | jq -r .id
}

# rhv_vm ID: the double's view of a VM (disks with their qcow2 paths).
rhv_vm ()
{
  rhv_control GET "/vms/$1"
}

# rhv_disk VM N FIELD: field of the VM's Nth disk (0-based): id, path (the active
# volume), format (of that volume), size, snapshots.
rhv_disk ()
{
  rhv_vm "$1" | jq -r ".disks[$2].$3"
}

# rhv_write VM DISK OFFSET FILE: write FILE into the disk as the guest would.
rhv_write ()
{
  rhv_control PUT "/vms/$1/disks/$2/data?offset=$3" --data-binary @"$4" -o /dev/null
}

# rhv_write_random VM DISK OFFSET LENGTH
rhv_write_random ()
{
  head -c "$4" /dev/urandom >"$tmpdir/rw.$$"
  rhv_write "$1" "$2" "$3" "$tmpdir/rw.$$"
  rm -f "$tmpdir/rw.$$"
}

# rhv_zero VM DISK OFFSET LENGTH: the guest writes zeros (allocated, reads as zero).
rhv_zero ()
{
  rhv_control PUT "/vms/$1/disks/$2/data?offset=$3&zero=$4" -o /dev/null
}

# rhv_fault JSON: set faults (see tests/doubles/rhv/README.md).
rhv_fault ()
{
  rhv_control POST /faults --data-binary "$1" -o /dev/null
}

# rhv_stat NAME: a counter of the double (imageio_bytes, logins, transfers, ...).
rhv_stat ()
{
  rhv_control GET /stats | jq -r ".$1"
}

# rhv_open_transfers: how many image transfers are neither finalized nor cancelled.
rhv_open_transfers ()
{
  rhv_control GET /transfers | jq '[.[] | select(.open)] | length'
}

# rhv_no_open_transfers: wait until every transfer has ended (the engine's poller moves
# finalizing/cancelled transfers to finished_* on its next poll).
rhv_transfers_ended ()
{
  [ "$(rhv_control GET /transfers | jq '[.[] | select(.phase | startswith("finished_") | not)] | length')" = 0 ]
}

# start_ferry_rhv ARGS...: nbdkit with the ferry plugin on the double; sets SOCK and
# NBDKIT_PID like start_ferry.
start_ferry_rhv ()
{
  requires_plugin
  SOCK=$tmpdir/nbd.$RANDOM.sock
  local pidfile=$tmpdir/nbdkit.$RANDOM.pid
  printf '%s' "$RHV_PASSWORD" >"$tmpdir/rhv-password"
  # NBDKIT_FLAGS is a word list on purpose.
  # shellcheck disable=SC2086
  nbdkit -U "$SOCK" -P "$pidfile" ${NBDKIT_FLAGS:-} \
    "$plugin" provider=rhv url="$ENGINE_URL" user="$RHV_USER" \
    password=+"$tmpdir/rhv-password" cacert="$CACERT" "$@" 2>>"$tmpdir/nbdkit.err" || return 1
  wait_for test -s "$pidfile"
  NBDKIT_PID=$(cat "$pidfile")
  cleanup_fn "stop_ferry $NBDKIT_PID"
}
