#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# timeout: 2700
# CDI's VDDK importer contract in the importer image, run as CDI's importer pod runs it: the
# image's own entrypoint and user (107), every capability dropped, CDI's IMPORTER_*
# environment, the filesystem PVC bind-mounted at /data, the termination log at
# /dev/termination-log, the host's network (the vSphere double on 127.0.0.1).
#  - stage 1 at snapshot S1 (the server's certificate by IMPORTER_THUMBPRINT): /data/disk.img,
#    the pod's user's, equals the disk at S1; the metrics endpoint (FERRY_METRICS_PORT, on
#    every address: CDI's controller scrapes the pod's IP), scraped with curl -k during the
#    copy, matches CDI's and Forklift's progress expressions for OWNER_UID;
#  - the guest writes, S1 goes, S2 comes; stage 2 (the certificate by IMPORTER_CERT_DIR) with
#    IMPORTER_PREVIOUS_CHECKPOINT = S1's changeId equals the disk at S2 and fetches only the
#    changed 64 KiB blocks, also on a copy of the PVC without ferry's state;
#  - both termination messages follow CDI's schema and say Import Complete;
#  - a block PVC (a loop device at /dev/cdi-block-volume, 107's): stage 1 equals the disk.
# shellcheck source-path=SCRIPTDIR source=functions.sh
source "$(dirname "$0")/functions.sh"
# shellcheck source-path=SCRIPTDIR source=container-functions.sh
source "$(dirname "$0")/container-functions.sh"
# shellcheck source-path=SCRIPTDIR source=cdi-functions.sh
source "$(dirname "$0")/cdi-functions.sh"
set -euo pipefail
requires jq curl cmp python3 ss
requires_ferry
/usr/bin/python3 -c 'import pyVmomi' 2>/dev/null || skip "python3-pyvmomi is not installed"
build_image # cached by its inputs; the first container test to run builds it (timeout)
requires_image

owner=7d1e2f30-4a5b-4c6d-8e9f-a0b1c2d3e4f5
port=$((20000 + ($$ + 5000) % 10000)) # not test-container-plan.sh's
start_double
create_vm web01 "disks=64M&cbt=1&power=on" >/dev/null
make_sparse_disk "$tmpdir/src" 64M 0:400 500:400 # 13 GETs of 4 MiB
place_disk web01 2000 "$tmpdir/src"
uuid=$(vm_json web01 | jq -r .uuid)
backing=$(vm_json web01 | jq -r '.disks[0].fileName')
mkdir -p "$tmpdir/data" "$tmpdir/certs"
chown 107:107 "$tmpdir/data" # fsGroup
cp "$CACERT" "$tmpdir/certs/ca.pem"
chmod 644 "$tmpdir/certs/ca.pem"

# cdi_pod NAME [PODMAN-OPTIONS...]: the importer pod NAME (container ferry-cdi-NAME-PID) with
# CDI's environment for web01's disk (and $tmpdir/NAME.env: the stage's variables), the
# termination log $tmpdir/NAME.msg; stderr to $tmpdir/NAME.err.  The options mount the PVC.
cdi_pod ()
{
  local name=$1
  shift
  cat >>"$tmpdir/$name.env" <<EOF
IMPORTER_SOURCE=vddk
IMPORTER_ENDPOINT=https://$SERVER/sdk
IMPORTER_ACCESS_KEY_ID=user
IMPORTER_SECRET_KEY=pass
IMPORTER_UUID=$uuid
IMPORTER_BACKING_FILE=$backing
OWNER_UID=$owner
FILESYSTEM_OVERHEAD=0.055
FERRY_METRICS_PORT=$port
EOF
  : >"$tmpdir/$name.msg"
  chown 107:107 "$tmpdir/$name.msg"
  run_image --name "ferry-cdi-$name-$$" --cap-drop=ALL --security-opt=no-new-privileges \
    --env-file "$tmpdir/$name.env" \
    -v "$tmpdir/$name.msg:/dev/termination-log" "$@" -- \
    >"$tmpdir/$name.out" 2>"$tmpdir/$name.err"
}

# listening_everywhere: the metrics port is open on every address, not on loopback only.
listening_everywhere ()
{
  ss -Hltn "sport = :$port" | awk '{ print $4 }' | grep -Eqx '(0\.0\.0\.0|\*|\[::\]):[0-9]+'
}

# listening_or_failed PID NAME: true once the metrics port is open; fails with NAME's stderr
# and the last scrape's progress lines when the pod (PID) has ended.
listening_or_failed ()
{
  kill -0 "$1" 2>/dev/null ||
    fail "$2 ended before the scrapes during its copy matched (last scrape:" \
      "$(grep -hs 'progress.*{' "$tmpdir/m1" "$tmpdir/m2" | tail -2)): $(tail -5 "$tmpdir/$2.err")"
  [ -n "$(ss -Hltn "sport = :$port")" ]
}

# check_complete NAME: NAME's termination message follows CDI's schema, says Import Complete
# and names ferry as the VDDK.
check_complete ()
{
  local msg
  msg=$(check_message "$tmpdir/$1.msg")
  [ "$msg" = "Import Complete" ] || fail "$1: message: $msg: $(tail -3 "$tmpdir/$1.err")"
  jq -e '.vddkInfo.Version | startswith("ferry")' "$tmpdir/$1.msg" >/dev/null ||
    fail "$1: no vddkInfo: $(cat "$tmpdir/$1.msg")"
}

# --- stage 1 at S1, scraped while it copies ----------------------------------------------
s1=$(control POST "/vms/web01/snapshot?name=fl-1" | jq -r .moref)
echo "IMPORTER_THUMBPRINT=$THUMBPRINT_SHA1
IMPORTER_CURRENT_CHECKPOINT=$s1" >"$tmpdir/stage1.env"
control POST "/inject?folder-delay=1s" >/dev/null # 4 connections: about 4 s
cdi_pod stage1 -v "$tmpdir/data:/data" &
pod=$!
cleanup_fn "podman rm -f ferry-cdi-stage1-$$ >/dev/null 2>&1; wait $pod 2>/dev/null"
stage1_listening () { listening_or_failed $pod stage1; }
timeout=60 wait_for stage1_listening
check_scrapes "https://127.0.0.1:$port/metrics" "$owner" stage1_listening
listening_everywhere || fail "metrics do not listen on every address: $(ss -Hltn "sport = :$port")"
control POST "/inject?folder-delay=0s" >/dev/null
wait $pod || fail "stage 1 failed: $(tail -5 "$tmpdir/stage1.err")"
check_complete stage1
[ "$(stat -c %u "$tmpdir/data/disk.img")" = 107 ] || fail "disk.img is not the pod's user's"
disk_view web01 2000 "$tmpdir/view1" "$s1"
cmp "$tmpdir/data/disk.img" "$tmpdir/view1" || fail "stage 1 differs from the disk at $s1"
! curl -sk --max-time 5 -o /dev/null "https://127.0.0.1:$port/metrics" ||
  fail "the metrics endpoint outlived the importer"

# --- the guest writes; S1 goes, S2 comes; stage 2 from S1's changeId ----------------------
change1=$(vm_json web01 | jq -r --arg s "$s1" '.snapshots[] | select(.moref == $s) | .changeIds["2000"]')
[[ -n $change1 && $change1 != null ]] || fail "no changeId at $s1"
writes=(1000000:70000 30000000:65536 50000000:200000)
for w in "${writes[@]}"; do guest_write_random web01 2000 "${w%:*}" "${w#*:}"; done
remove_snapshot web01 "$s1"
s2=$(control POST "/vms/web01/snapshot?name=fl-2" | jq -r .moref)
guest_write_random web01 2000 40000000 65536 # after S2: not part of stage 2
# Also on a copy of the PVC without ferry's state (as if stage 1 had been CDI's own): only
# IMPORTER_PREVIOUS_CHECKPOINT tells what changed.
cp -a "$tmpdir/data" "$tmpdir/nostate"
rm -rf "$tmpdir/nostate/.ferry"
changed=$(changed_bytes "${writes[@]}")
disk_view web01 2000 "$tmpdir/view2" "$s2"
for pvc in data nostate; do
  echo "IMPORTER_CERT_DIR=/certs
IMPORTER_CURRENT_CHECKPOINT=$s2
IMPORTER_PREVIOUS_CHECKPOINT=$change1
IMPORTER_FINAL_CHECKPOINT=true" >"$tmpdir/$pvc.env"
  control POST /stats/reset >/dev/null
  cdi_pod "$pvc" -v "$tmpdir/$pvc:/data" -v "$tmpdir/certs:/certs:ro" ||
    fail "stage 2 ($pvc) failed: $(tail -5 "$tmpdir/$pvc.err")"
  check_complete "$pvc"
  fetched=$(double_stat folder_bytes)
  echo "stage 2 ($pvc): changed $changed bytes, fetched $fetched"
  ((fetched >= changed && fetched * 100 <= changed * 105)) ||
    fail "stage 2 ($pvc) fetched $fetched bytes for $changed changed"
  cmp "$tmpdir/$pvc/disk.img" "$tmpdir/view2" || fail "stage 2 ($pvc) differs from the disk at $s2"
  [ ! -e "$tmpdir/$pvc/.ferry" ] || fail "the final stage ($pvc) left ferry's state on the PVC"
done

# --- a block PVC: a loop device at /dev/cdi-block-volume ----------------------------------
if command -v losetup >/dev/null && truncate -s 64M "$tmpdir/blk" &&
  loop=$(losetup -f --show "$tmpdir/blk" 2>/dev/null) && [ -b "$loop" ]; then
  cleanup_fn "losetup -d $loop"
  cleanup_fn "chown $(stat -c %u:%g "$loop") $loop"
  chown 107:107 "$loop" # as device_ownership_from_security_context makes it
  echo "IMPORTER_THUMBPRINT=$THUMBPRINT_SHA1
IMPORTER_CURRENT_CHECKPOINT=$s2" >"$tmpdir/block.env"
  cdi_pod block --device "$loop:/dev/cdi-block-volume:rw" ||
    fail "block stage 1 failed: $(tail -5 "$tmpdir/block.err")"
  check_complete block
  cmp "$loop" "$tmpdir/view2" || fail "the block PVC differs from the disk at $s2"
else
  echo "block variant skipped: no loop device here"
fi
[ "$(vm_json web01 | jq '.snapshots | length')" = 1 ] || fail "ferry touched the snapshots"
