#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# SIGTERM, SIGINT or SIGHUP while nbdkit is still in the plugin's get_ready (nbdkit's own
# handlers are not installed yet) -- while the snapshot is being made, or while fill=true
# copies -- never leaves the snapshot behind: the plugin unwinds and removes it, and
# nbdkit exits with an error instead of being killed.
source "$(dirname "$0")/functions.sh"
set -euo pipefail
requires nbdkit jq curl
requires_plugin

start_double
make_sparse_disk "$tmpdir/disk" 256M 0:2000
create_vm running "disks=256M&power=on&cbt=1" >/dev/null
place_disk running 2000 "$tmpdir/disk"
nsnap () { vm_json running | jq '.snapshots | length'; }
printf '%s' pass >"$tmpdir/password"

# Run nbdkit in the foreground, so that the process signalled is the one in get_ready.
start_fg ()
{
  nbdkit -f -v -U "$tmpdir/fg.sock" "$plugin" provider=vsphere server="$SERVER" user=user \
    password=+"$tmpdir/password" cacert="$CACERT" vm=running snapshot=create "$@" \
    2>"$tmpdir/fg.err" &
  FG_PID=$!
  cleanup_fn "kill -9 $FG_PID 2>/dev/null"
}

# interrupt SIGNAL: send it, then nbdkit must exit by itself, with an error that says
# why, and with no snapshot left on the VM.
interrupt ()
{
  local status=0
  kill -"$1" "$FG_PID"
  wait "$FG_PID" || status=$?
  ((status != 0 && status < 128)) || fail "SIG$1: nbdkit exited with status $status"
  grep -q "interrupted by signal" "$tmpdir/fg.err" || fail "SIG$1: $(cat "$tmpdir/fg.err")"
  [ "$(nsnap)" = 0 ] || fail "SIG$1: a snapshot was left: $(vm_json running | jq -c .snapshots)"
}

# While CreateSnapshot_Task runs (the double makes the snapshot at once, the task stays
# running for 2 s).
control POST "/tasks?delay=2s" >/dev/null
snapshot_made () { [ "$(nsnap)" = 1 ]; }
for sig in TERM INT HUP; do
  start_fg
  wait_for snapshot_made
  interrupt "$sig"
done
control POST "/tasks?delay=0s" >/dev/null

# While fill=true copies (slow reads: the double holds every /folder answer 200 ms).
control POST "/inject?folder-delay=200ms" >/dev/null
control POST /stats/reset >/dev/null
filling ()
{
  kill -0 "$FG_PID" 2>/dev/null || fail "nbdkit exited before filling: $(cat "$tmpdir/fg.err")"
  [ "$(double_stat folder_requests)" -gt 0 ]
}
mkdir "$tmpdir/cache"
start_fg cache-dir="$tmpdir/cache" fill=true connections=1
wait_for filling
interrupt TERM
