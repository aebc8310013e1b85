#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# A crash between two disks' commits never leaves a half-converted VM that the next run
# converts again.  A stand-in for virt-v2v-in-place (first in PATH; it writes 192 KiB at
# 64 KiB into every disk through the NBD exports and counts its runs) converts a two-disk
# VM; ferry is killed (SIGKILL) after the first disk's commit: disk 0 holds the
# conversion, disk 1 still the verified copy, commit.json the decision.  The rerun
# finishes the commit without running virt-v2v again: both targets are the source plus
# the writes, the digests and changedBlocks say so.  A second VM is killed after both
# commits but before the journal says converted: its rerun does not convert again either.
# Everything but virt-v2v is real: the overlays, qemu-nbd, qemu-img commit.
# shellcheck source-path=SCRIPTDIR source=functions.sh
source "$(dirname "$0")/functions.sh"
set -euo pipefail
requires jq qemu-img qemu-nbd qemu-io
start_double

mkdir -p "$tmpdir/bin"
cat >"$tmpdir/bin/virt-v2v-in-place" <<EOF2
#!/bin/bash
xml=\${@: -1}
echo run >>"$tmpdir/v2v-runs"
for port in \$(grep -o "<host name='localhost' port='[0-9]*'/>" "\$xml" | grep -o '[0-9][0-9]*'); do
  qemu-io -f raw -c 'write -P 0xcd 65536 196608' "nbd://localhost:\$port" >/dev/null || exit 3
done
EOF2
chmod +x "$tmpdir/bin/virt-v2v-in-place"
head -c 196608 /dev/zero | tr '\0' '\315' >"$tmpdir/writes"

# crash VM POINT: migrate VM (its own plan and stateDir), stopped at POINT, then killed.
crash ()
{
  local vm=$1 point=$2 pid
  create_vm "$vm" "disks=32M,16M&cbt=1&power=off" >/dev/null
  make_sparse_disk "$tmpdir/$vm-d0" 32M 0:4 100:4
  make_sparse_disk "$tmpdir/$vm-d1" 16M 2:4
  place_disk "$vm" 2000 "$tmpdir/$vm-d0"
  place_disk "$vm" 2001 "$tmpdir/$vm-d1"
  make_targets "$vm" 2
  write_plan "$tmpdir/$vm.json" ".skipGuestConversion = false | .preflightInspection = false |
    .stateDir += \"/$vm\" |
    .vms = [{\"name\": \"$vm\"}]"
  rm -f "$tmpdir/v2v-runs"
  FERRY_TEST_STOP_AT=$point PATH=$tmpdir/bin:$PATH "$ferry" migrate "$tmpdir/$vm.json" \
    --progress=none 2>"$tmpdir/$vm.err" &
  pid=$!
  cleanup_fn "kill -9 $pid 2>/dev/null"
  timeout=120 wait_stopped "$pid"
  kill -KILL "$pid"
  wait "$pid" 2>/dev/null || true
  [ "$(wc -l <"$tmpdir/v2v-runs")" = 1 ] || fail "$vm: virt-v2v ran $(wc -l <"$tmpdir/v2v-runs") times"
}

# want VM I: the source disk plus the stand-in's writes.
want ()
{
  disk_view "$1" $((2000 + $2)) "$tmpdir/want"
  dd if="$tmpdir/writes" of="$tmpdir/want" bs=64K seek=1 conv=notrunc status=none
}

# finish VM: the rerun commits what is left, converts nothing, and the results agree.
finish ()
{
  local vm=$1 state=$tmpdir/state/$1 i
  PATH=$tmpdir/bin:$PATH "$ferry" migrate "$tmpdir/$vm.json" --progress=none \
    2>"$tmpdir/$vm.rerun.err" || fail "$vm: rerun: $(cat "$tmpdir/$vm.rerun.err")"
  [ "$(wc -l <"$tmpdir/v2v-runs")" = 1 ] || fail "$vm: the rerun ran virt-v2v again"
  jq -e '.vms[0].state == "converted" and .vms[0].error == null' "$state/results.json" \
    >/dev/null || fail "$vm: $(jq -c '.vms[0] | {state, error}' "$state/results.json")"
  for i in 0 1; do
    want "$vm" "$i"
    cmp "$tmpdir/want" "$tmpdir/pvc/$vm-disk$i/disk.img" ||
      fail "$vm disk $i: not the source plus the conversion's writes"
    jq -e --arg d "$("$ferry" digest "$tmpdir/want" | cut -d' ' -f1)" ".vms[0].disks[$i] |
        .digest.afterConversion == \$d and .conversion.changedBlocks == 3" \
      "$state/results.json" >/dev/null || fail "$vm disk $i: $(jq -c ".vms[0].disks[$i]" "$state/results.json")"
    [ ! -e "$state/$vm/disk$i.overlay.qcow2" ] || fail "$vm disk $i: overlay left"
  done
  [ ! -e "$state/$vm/commit.json" ] || fail "$vm: commit.json left after the conversion"
}

# Killed after disk 0's commit: half committed, and the journal knows it is converting.
crash half commit:1
state=$tmpdir/state/half
want half 0
cmp "$tmpdir/want" "$tmpdir/pvc/half-disk0/disk.img" || fail "disk 0 is not committed"
disk_view half 2001 "$tmpdir/src1"
cmp "$tmpdir/src1" "$tmpdir/pvc/half-disk1/disk.img" || fail "disk 1 was committed too early"
[ ! -e "$state/half/disk0.overlay.qcow2" ] || fail "disk 0's overlay outlived its commit"
[ -e "$state/half/disk1.overlay.qcow2" ] || fail "disk 1's overlay is gone before its commit"
jq -e '.disks | length == 2 and .[1].changedBlocks == 3' "$state/half/commit.json" >/dev/null ||
  fail "commit.json: $(cat "$state/half/commit.json")"
jq -e '.vms.half.state == "converting"' "$state/journal.json" >/dev/null ||
  fail "journal: $(jq -c .vms.half "$state/journal.json")"
fetched=$(double_stat folder_bytes)
finish half
grep -q 'completed in an earlier run' "$tmpdir/half.rerun.err" || fail "$(cat "$tmpdir/half.rerun.err")"
[ "$(double_stat folder_bytes)" = "$fetched" ] || fail "the rerun fetched from the source"

# Killed after both commits and the digests, before the journal says converted.
crash whole conversion-recorded:2
jq -e '.vms.whole.state == "converting"' "$tmpdir/state/whole/journal.json" >/dev/null ||
  fail "whole: $(jq -c .vms.whole "$tmpdir/state/whole/journal.json")"
finish whole
echo "$0: OK"
