#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# timeout: 2700
# Plan mode in the importer image, laid out as a pod would be: the plan read-only at
# /etc/ferry/plan/plan.json (a ConfigMap), the Secret (with the double's CA) read-only, the
# journal on a state volume, filesystem PVCs as bind-mounted directories and a block PVC as
# a loop device passed with --device; uid 107, every capability dropped, the host's network
# (the vSphere double on 127.0.0.1).
#  - cold into a directory, warm (two rounds, the guest writing between them) into the loop
#    device: each target equals the source at cutover;
#  - `podman stop` in the middle of a slow round: the container exits within the grace
#    period, the journal says cancelled, no ferry snapshot is left; a second run resumes from
#    the journal and completes.
# shellcheck source-path=SCRIPTDIR source=functions.sh
source "$(dirname "$0")/functions.sh"
# shellcheck source-path=SCRIPTDIR source=container-functions.sh
source "$(dirname "$0")/container-functions.sh"
set -euo pipefail
requires jq curl cmp losetup
requires_ferry
build_image # cached by test-container-image.sh's build
requires_image

start_double
ferry_secret "$tmpdir/secret"
chown -R 107:107 "$tmpdir/secret"
mkdir -p "$tmpdir/pvc"
chown 107:107 "$tmpdir/pvc"

# pod_plan NAME JQ-FILTER: the plan NAME in $tmpdir/NAME/plan.json with the paths the
# container sees; its state volume is $tmpdir/NAME.state.
pod_plan ()
{
  mkdir -p "$tmpdir/$1" "$tmpdir/$1.state"
  chown 107:107 "$tmpdir/$1.state"
  write_plan "$tmpdir/$1/plan.json" ".source.secret = \"/var/run/secrets/ferry/vsphere\" |
    .stateDir = \"/var/lib/ferry/state\" |
    .storageMap[0].destination.path = \"/pvc/{vm}-disk{index}\" | $2"
}

# pod_targets VM: its first disk's filesystem PVC, owned by 107 (fsGroup).
pod_targets ()
{
  make_targets "$1" 1
  chown 107:107 "$tmpdir/pvc/$1-disk0"
}

# run_pod NAME [PODMAN-OPTIONS...]: ferry migrate of plan NAME in the image, named
# ferry-test-NAME; progress (JSON lines) to $tmpdir/NAME.progress, stderr to NAME.err.
run_pod ()
{
  local name=$1
  shift
  run_image --name "ferry-test-$name-$$" --cap-drop=ALL --security-opt=no-new-privileges \
    -v "$tmpdir/$name:/etc/ferry/plan:ro" -v "$tmpdir/secret:/var/run/secrets/ferry/vsphere:ro" \
    -v "$tmpdir/$name.state:/var/lib/ferry/state" -v "$tmpdir/pvc:/pvc" "$@" -- \
    migrate /etc/ferry/plan/plan.json --progress=json \
    >"$tmpdir/$name.progress" 2>"$tmpdir/$name.err"
}

# ferry_pid NAME: the host pid of ferry in container NAME started with --init (ferry is the
# child of catatonit: as the container's pid 1 it could not stop itself with SIGSTOP).
ferry_pid ()
{
  local init
  init=$(podman inspect --format '{{.State.Pid}}' "ferry-test-$1-$$" 2>/dev/null) || return 1
  [ "${init:-0}" != 0 ] && pgrep -P "$init" -x ferry
}

# stopped_or_failed PID NAME: true once PID is stopped; fails with NAME's stderr if it ended.
stopped_or_failed ()
{
  [ -e "/proc/$1" ] || fail "$2: ferry ended: $(tail -5 "$tmpdir/$2.err")"
  process_stopped "$1"
}

# --- cold, into a directory ------------------------------------------------------------
create_vm cold "disks=64M&power=off&cbt=1" >/dev/null
make_sparse_disk "$tmpdir/cold.src" 64M 0:16 100:200 1023:1
place_disk cold 2000 "$tmpdir/cold.src"
pod_targets cold
pod_plan cold '.vms = [{"name": "cold"}]'
run_pod cold || fail "cold migration in the container failed: $(tail -5 "$tmpdir/cold.err")"
jq -e '.vms[0].state == "verified"' "$tmpdir/cold.state/results.json" >/dev/null ||
  fail "cold: not verified: $(cat "$tmpdir/cold.state/results.json")"
[ "$(stat -c %u "$tmpdir/pvc/cold-disk0/disk.img")" = 107 ] || fail "cold: the target is not 107's"
disk_view cold 2000 "$tmpdir/cold.view"
cmp "$tmpdir/pvc/cold-disk0/disk.img" "$tmpdir/cold.view" || fail "cold: the target differs"
json_line_matches "$tmpdir/cold.progress" 'select(.event == "progress")' ||
  fail "cold: no JSON progress on stdout"

# --- warm, two rounds, into a loop device ------------------------------------------------
cap=$((48 << 20))
head -c $((64 << 20)) /dev/urandom >"$tmpdir/backing"
dev=$(losetup -f --show "$tmpdir/backing" 2>"$tmpdir/losetup.err") ||
  skip "no loop device here (losetup -f --show: $(cat "$tmpdir/losetup.err"))"
cleanup_fn "losetup -d $dev"
[ -b "$dev" ] || skip "losetup gave $dev, which is not a block device here"
create_vm warm "disks=$cap&power=on&cbt=1" >/dev/null
make_sparse_disk "$tmpdir/warm.src" "$cap" 0:4 17:33 400:100 767:1
place_disk warm 2000 "$tmpdir/warm.src"
pod_plan warm '.warm = true | .cutover = "2020-01-01T00:00:00Z" | .precopyIntervalSeconds = 1 |
  .storageMap[0].destination = {kind: "block", path: "/dev/ferry-warm-disk0"} |
  .vms = [{"name": "warm"}]'
# The block PVC belongs to the pod's user, as a runtime with
# device_ownership_from_security_context (CRI-O, containerd) makes it.
cleanup_fn "chown $(stat -c %u:%g "$dev") $dev"
chown 107:107 "$dev"
run_pod warm --device "$dev:/dev/ferry-warm-disk0:rw" --init \
  -e FERRY_TEST_STOP_AT=precopy-wait:1 &
pod=$!
cleanup_fn "podman rm -f ferry-test-warm-$$ >/dev/null 2>&1; wait $pod 2>/dev/null"
timeout=60 wait_for ferry_pid warm >/dev/null
pid=$(ferry_pid warm) || fail "warm: ferry ended early: $(tail -5 "$tmpdir/warm.err")"
timeout=60 wait_for stopped_or_failed "$pid" warm
guest_write_random warm 2000 1000000 70000
guest_write_random warm 2000 $((cap - 4096)) 4096
kill -CONT "$pid"
wait $pod || fail "warm migration in the container failed: $(tail -5 "$tmpdir/warm.err")"
jq -e '.vms[0].state == "verified" and (.vms[0].rounds | length) == 2' \
  "$tmpdir/warm.state/results.json" >/dev/null ||
  fail "warm: not verified in two rounds: $(cat "$tmpdir/warm.state/results.json")"
disk_view warm 2000 "$tmpdir/warm.view"
cmp -n "$cap" "$dev" "$tmpdir/warm.view" || fail "warm: $dev differs from the disk at cutover"
[ "$(ferry_snapshots warm | wc -l)" = 0 ] || fail "warm: a ferry snapshot is left"

# --- podman stop in the middle of a round, then a second run resumes ---------------------
create_vm stop "disks=256M&power=on&cbt=1" >/dev/null
make_sparse_disk "$tmpdir/stop.src" 256M 0:1024 3000:1024
place_disk stop 2000 "$tmpdir/stop.src"
pod_targets stop
pod_plan stop '.warm = true | .cutover = "2020-01-01T00:00:00Z" | .connectionsPerDisk = 1 |
  .vms = [{"name": "stop"}]'
control POST "/inject?folder-delay=150ms" >/dev/null
rc=0
run_pod stop &
pod=$!
cleanup_fn "podman rm -f ferry-test-stop-$$ >/dev/null 2>&1; wait $pod 2>/dev/null"
timeout=90 wait_for json_line_matches "$tmpdir/stop.progress" \
  'select(.event == "progress" and .vm == "stop" and .bytesDone > 0)'
[ "$(ferry_snapshots stop | wc -l)" = 1 ] || fail "stop: no ferry snapshot in the middle of the round"
grace=30 start=$SECONDS
podman stop --time "$grace" "ferry-test-stop-$$" >/dev/null
wait $pod || rc=$?
took=$((SECONDS - start))
control POST "/inject?folder-delay=0s" >/dev/null
cat "$tmpdir/stop.err"
echo "stop: the container exited $rc, $took s after podman stop"
((took < grace)) || fail "stop: the container did not exit within the grace period ($grace s)"
# A run cancelled by a signal exits 75 (retryable: the Job's next pod resumes).
[ $rc = 75 ] || fail "stop: the container exited $rc, not 75 (137 = killed)"
[ "$(ferry_snapshots stop | wc -l)" = 0 ] || fail "stop: a ferry snapshot is left"
[ "$(jq -r '.vms.stop.error' "$tmpdir/stop.state/journal.json")" = cancelled ] ||
  fail "stop: the journal does not say cancelled: $(cat "$tmpdir/stop.state/journal.json")"

run_pod stop || fail "stop: the second run failed: $(tail -5 "$tmpdir/stop.err")"
jq -e '.vms[0].state == "verified"' "$tmpdir/stop.state/results.json" >/dev/null ||
  fail "stop: the second run did not verify: $(cat "$tmpdir/stop.state/results.json")"
disk_view stop 2000 "$tmpdir/stop.view"
cmp "$tmpdir/pvc/stop-disk0/disk.img" "$tmpdir/stop.view" || fail "stop: the target differs"
[ "$(ferry_snapshots stop | wc -l)" = 0 ] || fail "stop: a ferry snapshot is left after the rerun"

# The entrypoint without arguments (which passes --metrics-port and --termination-log) on
# the finished plan leaves its JSON result in the termination log.
: >"$tmpdir/termination-log"
chown 107:107 "$tmpdir/termination-log"
podman run --rm --runtime=runc --network=host --cap-drop=ALL \
  -v "$tmpdir/stop:/etc/ferry/plan:ro" -v "$tmpdir/secret:/var/run/secrets/ferry/vsphere:ro" \
  -v "$tmpdir/stop.state:/var/lib/ferry/state" -v "$tmpdir/pvc:/pvc" \
  -v "$tmpdir/termination-log:/dev/termination-log" -e FERRY_METRICS_PORT=$((20000 + $$ % 10000)) \
  "$image" >"$tmpdir/noargs.out" 2>"$tmpdir/noargs.err" ||
  fail "the entrypoint without arguments failed: $(tail -5 "$tmpdir/noargs.err")"
jq -e '.command == "migrate" and .result == "succeeded"' "$tmpdir/termination-log" >/dev/null ||
  fail "the termination log does not say migrate succeeded: $(cat "$tmpdir/termination-log")"
(($(stat -c %s "$tmpdir/termination-log") < 4096)) || fail "the termination log is 4096 bytes or more"
