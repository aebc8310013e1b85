#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# The end-to-end proof: the real Debian guest (tests/guest/build-guest.sh, cached) as a
# powered-on VM in the vSphere double -> warm: two precopy rounds, the guest writing files
# between them (round 2 fetches only the blocks those writes changed) -> cutover ->
# verified -> converted by
# virt-v2v-in-place through a qcow2 overlay -> the converted target boots under
# qemu-system-x86_64 -accel tcg on virtio to the boot marker and powers off (qemu exits 0),
# while the unconverted source does not boot on virtio (negative control: its initramfs
# has no virtio driver and drops to a shell).  The results hold the verified digest and the
# one after conversion (= ferry digest of the target), the changed blocks, virt-v2v's log;
# vm.yaml names the target's claim with virtio devices.  No password reaches a child's
# command line or environment.  Under TCG on a shared 2-core machine the conversion takes
# minutes: the timeouts are generous, nothing asserts on time.
# timeout: 2400
# shellcheck source-path=SCRIPTDIR source=functions.sh
source "$(dirname "$0")/functions.sh"
set -euo pipefail
requires jq qemu-img qemu-nbd qemu-system-x86_64 virt-v2v-in-place guestfish debugfs
requires_guest "$tmpdir/guest.img"
guest_set_poweroff "$tmpdir/guest.img"

# Negative control, meanwhile: the unconverted disk on virtio finds no root.  The guest's
# own kernel and initramfs are booted directly, with no_timer_check (a loaded host under
# TCG can fail the kernel's timer check, as libguestfs knows) and a short rootdelay.
fs="$tmpdir/guest.img?offset=1048576"
kver=$(debugfs -R "ls /boot" "$fs" 2>/dev/null | tr -s ' ' '\n' | sed -n 's/^vmlinuz-//p' | head -1)
uuid=$(debugfs -R stats "$fs" 2>/dev/null | sed -n 's/^Filesystem UUID: *//p')
debugfs -R "dump /boot/vmlinuz-$kver $tmpdir/vmlinuz" "$fs" >/dev/null 2>&1
debugfs -R "dump /boot/initrd.img-$kver $tmpdir/initrd" "$fs" >/dev/null 2>&1
[[ -s $tmpdir/vmlinuz && -s $tmpdir/initrd && -n $uuid ]] || fail "no kernel $kver or UUID in the guest"
qemu-system-x86_64 -accel tcg -cpu max -m 1024 -smp 2 -nographic -nodefaults \
  -serial "file:$tmpdir/source-boot.log" -no-reboot -nic none -machine q35 \
  -kernel "$tmpdir/vmlinuz" -initrd "$tmpdir/initrd" \
  -append "root=UUID=$uuid ro console=ttyS0 no_timer_check rootdelay=5" \
  -drive "file=$tmpdir/guest.img,format=raw,if=virtio,snapshot=on" \
  </dev/null >/dev/null 2>&1 &
neg_pid=$!
cleanup_fn "kill $neg_pid 2>/dev/null; wait $neg_pid 2>/dev/null"

start_double -username admin -password 'Zq9-conv-S3cret'
export PASSWORD='Zq9-conv-S3cret' FERRY_USER=admin
create_vm guestlab "disks=1G&power=on&cbt=1&cpus=2&memory=1024" >/dev/null
place_disk guestlab 2000 "$tmpdir/guest.img"
make_targets guestlab 1
write_plan "$tmpdir/plan.json" '.skipGuestConversion = false | .warm = true | .preflightInspection = false |
  .precopyIntervalSeconds = 3600 | .vms = [{"name": "guestlab"}]'
target=$tmpdir/pvc/guestlab-disk0/disk.img
cp --sparse=always "$tmpdir/guest.img" "$tmpdir/current.img"

"$ferry" precopy "$tmpdir/plan.json" --progress=none || fail "precopy round 1"
blocks2=$(guest_writes_file "$tmpdir" guestlab round1 "written before round 2")
((blocks2 > 0)) || fail "debugfs changed nothing"
"$ferry" precopy "$tmpdir/plan.json" --progress=none || fail "precopy round 2"
blocks3=$(guest_writes_file "$tmpdir" guestlab round2 "written before the cutover")
[ "$(vm_json guestlab | jq -r .powerState)" = poweredOn ] || fail "the VM is not running"

# The cutover (no running migrate: ferry cutover does it), then verification, conversion.
"$ferry" cutover "$tmpdir/plan.json" --progress=json >"$tmpdir/progress.jsonl" \
  2>"$tmpdir/ferry.err" &
ferry_pid=$!
cleanup_fn "kill $ferry_pid 2>/dev/null; wait $ferry_pid 2>/dev/null"
# While virt-v2v runs: no password on its (or qemu-nbd's) command line or environment.
v2v_running ()
{
  kill -0 "$ferry_pid" 2>/dev/null || fail "ferry exited before converting: $(cat "$tmpdir/ferry.err")"
  pgrep -f '^virt-v2v-in-place ' >/dev/null
}
timeout=900 wait_for v2v_running
for pid in $(pgrep -f '^virt-v2v-in-place ') $(pgrep -f "^qemu-nbd .*$tmpdir"); do
  if tr '\0' '\n' <"/proc/$pid/cmdline" | grep -q "$PASSWORD" ||
    tr '\0' '\n' <"/proc/$pid/environ" | grep -q "$PASSWORD"; then
    fail "pid $pid ($(tr '\0' ' ' <"/proc/$pid/cmdline")) sees the password"
  fi
done
rc=0
wait "$ferry_pid" || rc=$?
results=$tmpdir/state/results.json
[ $rc = 0 ] || fail "ferry cutover exit $rc: $(cat "$tmpdir/ferry.err"; jq -c '.vms[0] | {state, error, conversion}' "$results")"

# Converted; the verified digest and the one after conversion, recomputable.
jq -e '.vms[0].state == "converted" and .vms[0].error == null' "$results" >/dev/null ||
  fail "not converted: $(jq -c '.vms[0]' "$results")"
src=$(jq -r '.vms[0].disks[0].digest.source' "$results")
ver=$(jq -r '.vms[0].disks[0].digest.target' "$results")
after=$(jq -r '.vms[0].disks[0].digest.afterConversion' "$results")
own=$("$ferry" digest "$target" | cut -d' ' -f1)
orig=$("$ferry" digest "$tmpdir/current.img" | cut -d' ' -f1)
[[ $src = "$ver" && $ver = "$orig" ]] || fail "verified digests: source $src, target $ver, image $orig"
[ "$after" = "$own" ] || fail "afterConversion $after, ferry digest $own"
[ "$after" != "$ver" ] || fail "the conversion changed nothing"
# Warm: three rounds; round 2 and the final one fetched exactly the blocks the guest wrote.
jq -e --argjson b2 "$blocks2" --argjson b3 "$blocks3" '.vms[0].rounds | length == 3 and
   .[1].bytesFetched == $b2 * 65536 and .[2].bytesFetched == $b3 * 65536' "$results" >/dev/null ||
  fail "rounds: $(jq -c '[.vms[0].rounds[] | {round, bytesFetched}]' "$results"), written $blocks2 and $blocks3 blocks"
jq -e '.vms[0].originalPowerState == "poweredOn"' "$results" >/dev/null || fail "power state"
# What the guest wrote before the cutover is in the converted disk.
debugfs -R "cat /root/round2" "$target?offset=1048576" 2>/dev/null | grep -qx 'written before the cutover' ||
  fail "the converted target lacks the guest's last write"
changed=$(jq -r '.vms[0].disks[0].conversion.changedBlocks' "$results")
echo "conversion changed $changed blocks of 64 KiB"
# The changed blocks are at least the 64 KiB blocks that differ from the source.
differ=$(python3 - "$tmpdir/current.img" "$target" <<'PY'
import sys
a, b, n = open(sys.argv[1], "rb"), open(sys.argv[2], "rb"), 0
while True:
    x, y = a.read(65536), b.read(65536)
    if not x and not y:
        break
    n += x != y
print(n)
PY
)
echo "$differ blocks differ from the source"
((changed >= differ && differ > 0)) || fail "changedBlocks $changed, blocks that differ $differ"
[ ! -e "$tmpdir/state/guestlab/disk0.overlay.qcow2" ] || fail "the overlay was left behind"
grep -q 'Converting' "$tmpdir/state/guestlab/virt-v2v.log" || fail "no virt-v2v log"
jq -e --arg log "$tmpdir/state/guestlab/virt-v2v.log" '.vms[0].conversion |
  .seconds > 0 and .log == $log and (.tcg | type) == "boolean"' "$results" >/dev/null ||
  fail "conversion: $(jq -c '.vms[0].conversion' "$results")"
jq -se 'map(select(.event == "conversion" and .stage != null)) | length > 2' \
  "$tmpdir/progress.jsonl" >/dev/null || fail "no conversion stages in the progress"
jq -se 'map(select(.event == "state") | .state) | index("converting") < index("converted")' \
  "$tmpdir/progress.jsonl" >/dev/null || fail "states: $(jq -sc 'map(select(.event == "state") | .state)' "$tmpdir/progress.jsonl")"
! grep -rqs "$PASSWORD" "$tmpdir/state" "$tmpdir/progress.jsonl" "$tmpdir/ferry.err" ||
  fail "the password is in the state, progress or messages"

# vm.yaml: virtio now, the target's claim.
grep -q '"virtio"' "$tmpdir/state/guestlab/vm.yaml" || fail "vm.yaml has no virtio device"
grep -q 'claimName: "guestlab-disk0"' "$tmpdir/state/guestlab/vm.yaml" || fail "vm.yaml claim"
grep -q 'runStrategy: "Always"' "$tmpdir/state/guestlab/vm.yaml" || fail "vm.yaml runStrategy"
grep -q '"sata"\|"e1000e"' "$tmpdir/state/guestlab/vm.yaml" && fail "vm.yaml: raw-copy devices"
for d in "$top/../shared/schemas" "$top/../../shared/schemas"; do
  if [ -f "$d/kubevirt-virtualmachine.crd.json" ] && /usr/bin/python3 -c 'import jsonschema' 2>/dev/null; then
    /usr/bin/python3 "$top/tests/integration/check-manifests.py" "$d" \
      "$tmpdir/state/guestlab/vm.yaml" >/dev/null || fail "vm.yaml does not validate"
    break
  fi
done

# The converted target boots on virtio to the marker and powers off.
rc=$(guest_boot "$tmpdir/boot.log" "$target")
tail -5 "$tmpdir/boot.log"
grep -q 'GUESTLAB-BOOT-OK' "$tmpdir/boot.log" || fail "no boot marker (qemu exit $rc)"
[ "$rc" = 0 ] || fail "qemu exit $rc after the marker: the guest did not power off"

# The negative control: the source drops to the initramfs shell, never reaching the marker.
neg_done () { grep -aq 'ALERT!\|GUESTLAB-BOOT-OK' "$tmpdir/source-boot.log" || ! kill -0 "$neg_pid" 2>/dev/null; }
timeout=900 wait_for neg_done
grep -q 'GUESTLAB-BOOT-OK' "$tmpdir/source-boot.log" && fail "the unconverted source booted on virtio"
grep -a 'ALERT!' "$tmpdir/source-boot.log" ||
  fail "the source's boot did not end in the initramfs: $(tail -c 600 "$tmpdir/source-boot.log")"

# Converted is final: a second migrate neither copies nor converts again.
"$ferry" migrate "$tmpdir/plan.json" --progress=none || fail "second migrate failed"
[ "$("$ferry" digest "$target" | cut -d' ' -f1)" = "$after" ] || fail "the target changed"
echo "$0: OK"
