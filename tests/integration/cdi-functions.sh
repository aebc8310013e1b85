# SPDX-License-Identifier: Apache-2.0
# Checks of CDI's importer contract shared by test-cdi-import.sh, test-cdi-resize.sh,
# test-ferry-metrics.sh and test-container-cdi.sh.  Source after functions.sh:
#
#   source "$(dirname "$0")/cdi-functions.sh"
#   cdi_import VM DIR LOG [VAR=VALUE...]  # ferry cdi-import as CDI's importer pod runs it
#   remove_snapshot VM MOREF    # as CDI's controller (through Forklift) does between stages
#   check_message FILE          # CDI's TerminationMessage; prints its message
#   check_scrapes URL OWNER-UID # the metrics, scraped twice during a copy
# shellcheck shell=bash disable=SC2154
# (tmpdir, SERVER, CACERT and fail/wait_for come from functions.sh, sourced first)

# cdi_import VM DIR LOG [VAR=VALUE...]: ferry cdi-import of VM's first disk with the
# variables CDI sets for a VDDK DataVolume (VAR=VALUE adds or overrides one), the PVC at
# DIR (FERRY_CDI_DATA_DIR; BLOCK=DEVICE for a block volume), the termination message in
# DIR.msg, ferry's stderr in LOG.
cdi_import ()
{
  local vm=$1 dir=$2 log=$3
  shift 3
  env IMPORTER_SOURCE=vddk IMPORTER_ENDPOINT="https://$SERVER/sdk" \
    IMPORTER_ACCESS_KEY_ID=user IMPORTER_SECRET_KEY=pass \
    IMPORTER_THUMBPRINT="$THUMBPRINT_SHA1" IMPORTER_UUID="$(vm_json "$vm" | jq -r .uuid)" \
    IMPORTER_BACKING_FILE="$(vm_json "$vm" | jq -r '.disks[0].fileName')" \
    OWNER_UID=0f6c1a8e-5b7d-4d61-9c1e-2a3b4c5d6e7f FILESYSTEM_OVERHEAD=0.055 \
    FERRY_METRICS_PORT=off FERRY_CDI_DATA_DIR="$dir" \
    FERRY_CDI_BLOCK_PATH="${BLOCK:-$tmpdir/no-block-volume}" \
    FERRY_TERMINATION_LOG="$dir.msg" "$@" \
    "$ferry" cdi-import --progress=none 2>"$log"
}

# remove_snapshot VM MOREF: RemoveSnapshot_Task (consolidate) over SOAP, as CDI's
# controller (through Forklift) does between stages.  Needs python3-pyvmomi.
remove_snapshot ()
{
  /usr/bin/python3 - "$SERVER" "$CACERT" "$1" "$2" <<'PY'
import ssl, sys
from pyVim.connect import SmartConnect
from pyVim.task import WaitForTask
from pyVmomi import vim
server, cacert, name, moref = sys.argv[1:]
host, port = server.rsplit(":", 1)
si = SmartConnect(host=host, port=int(port), user="user", pwd="pass",
                  sslContext=ssl.create_default_context(cafile=cacert))
snap = vim.vm.Snapshot(moref, stub=si._stub)
WaitForTask(snap.RemoveSnapshot_Task(removeChildren=False, consolidate=True))
PY
}

# check_message FILE: a termination message as CDI's TerminationMessage parses it: a JSON
# object with only its keys, under 4096 bytes; prints the message.
check_message ()
{
  local size
  size=$(stat -c %s "$1")
  ((size > 0 && size < 4096)) || fail "termination message of $size bytes"
  jq -e 'type == "object" and (keys - ["scratchSpaceRequired", "preallocationApplied",
           "deadlinePassed", "vddkInfo", "labels", "message"] == []) and
         (.message | type == "string") and
         ((has("vddkInfo") | not) or (.vddkInfo | keys - ["Version", "Host"] == []))' "$1" \
    >/dev/null || fail "not CDI's termination message schema: $(cat "$1")"
  jq -r .message "$1"
}

# progress_of FILE cdi|forklift OWNER-UID: the value that controller's regular expression
# finds in the metrics document FILE; nothing when it does not match.  CDI's controller:
# `kubevirt_cdi_import_progress_total\{ownerUID\="UID"\} (\d{1,3}\.?\d*)`; Forklift's
# populator controller: `progress\{ownerUID="UID"\} (\d+\.?\d*)`.
progress_of ()
{
  /usr/bin/python3 - "$1" "$2" "$3" <<'PY'
import re, sys
body = open(sys.argv[1]).read()
uid = sys.argv[3]
if sys.argv[2] == "cdi":
    pat = r'(kubevirt_cdi_import_progress_total)\{ownerUID\="' + re.escape(uid) + r'"\} (\d{1,3}\.?\d*)'
else:
    pat = r'progress\{ownerUID="' + re.escape(uid) + r'"\} (\d+\.?\d*)'
m = re.search(pat, body)
if m:
    print(m.groups()[-1])
PY
}

# scrape_mid URL OUT OWNER-UID [CHECK]: (CHECK, a command, first: it fails the test when the
# copy has ended) scrape into OUT; true when the copy is under way there
# (0 < % < 100).
scrape_mid ()
{
  [ -z "${4:-}" ] || "$4" || return 1
  curl -sSk --max-time 5 "$1" -o "$2" || return 1
  local p
  p=$(progress_of "$2" cdi "$3")
  [ -n "$p" ] && python3 -c "import sys; sys.exit(not (0 < float('$p') < 100))"
}

# scrape_more URL OUT OWNER-UID THAN [CHECK]: (CHECK first) scrape into OUT; true when the
# percent is above THAN.
scrape_more ()
{
  [ -z "${5:-}" ] || "$5" || return 1
  curl -sSk --max-time 5 "$1" -o "$2" || return 1
  local p
  p=$(progress_of "$2" cdi "$3")
  [ -n "$p" ] && python3 -c "import sys; sys.exit(not (float('$p') > float('$4')))"
}

# check_scrapes URL OWNER-UID [CHECK]: two scrapes during the copy (CHECK, a command run
# before each scrape, fails the test at once when the copy has ended), both controllers'
# expressions match, and the values move.
# Leaves them in $tmpdir/m1 and $tmpdir/m2.
check_scrapes ()
{
  local url=$1 owner=$2 check=${3:-} p1 f1 p2 done1 done2
  timeout=60 wait_for scrape_mid "$url" "$tmpdir/m1" "$owner" "$check"
  p1=$(progress_of "$tmpdir/m1" cdi "$owner")
  f1=$(progress_of "$tmpdir/m1" forklift "$owner")
  [ "$p1" = "$f1" ] || fail "CDI's ($p1) and Forklift's ($f1) progress differ"
  [ "$(curl -sk -o /dev/null -w '%{http_code}' "${url%/metrics}/other")" = 404 ] ||
    fail "another path is not 404"
  ! curl -s --max-time 5 -o /dev/null "$url" || fail "curl trusted the self-signed certificate"
  timeout=60 wait_for scrape_more "$url" "$tmpdir/m2" "$owner" "$p1" "$check"
  p2=$(progress_of "$tmpdir/m2" cdi "$owner")
  [ -n "$(progress_of "$tmpdir/m2" forklift "$owner")" ] || fail "Forklift's expression does not match"
  echo "progress $p1% then $p2%"
  done1=$(sed -n 's/^ferry_disk_bytes_done{.*} \([0-9]*\)$/\1/p' "$tmpdir/m1" | head -n1)
  done2=$(sed -n 's/^ferry_disk_bytes_done{.*} \([0-9]*\)$/\1/p' "$tmpdir/m2" | head -n1)
  ((done2 > done1)) || fail "ferry_disk_bytes_done did not move: $done1 then $done2"
  grep -q '^# TYPE kubevirt_cdi_import_progress_total counter$' "$tmpdir/m1" ||
    fail "no TYPE line: $(head "$tmpdir/m1")"
}
