# SPDX-License-Identifier: Apache-2.0
# ferry integration tests: shared shell helpers (nbdkit style).
#
#   source tests/integration/functions.sh
#   set -e
#   requires nbdinfo qemu-img
#   start_double            # vSphere double in $tmpdir, variables SERVER, CACERT, ... set
#
# Every test runs from the repository top, gets its own $tmpdir, and registers what it
# starts with cleanup_fn so that nothing outlives it.  Exit 77 means skipped.
# shellcheck shell=bash

# Debian's tools first: nbdsh and pyvmomi need Debian's /usr/bin/python3, not another
# python3 earlier in PATH.
export PATH=/usr/bin:/bin:$PATH

top=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
export top
plugin=$top/nbdkit-plugin/nbdkit-ferry-plugin.so
double=$top/tests/doubles/vsphere/vsphere-double
tmpdir=$(mktemp -d "${TMPDIR:-/tmp}/ferry-test.XXXXXX")
export tmpdir

_cleanup_fns=()
cleanup_fn ()
{
  _cleanup_fns+=("$*")
}

_run_cleanups ()
{
  local status=$? i
  for ((i = ${#_cleanup_fns[@]} - 1; i >= 0; i--)); do
    eval "${_cleanup_fns[i]}" || true
  done
  rm -rf "$tmpdir"
  exit $status
}
trap _run_cleanups EXIT
trap 'echo "$0: line $LINENO: command failed: $BASH_COMMAND" >&2' ERR
trap 'exit 130' INT TERM

skip ()
{
  echo "$0: SKIP: $*"
  exit 77
}

fail ()
{
  echo "$0: FAIL: $*" >&2
  exit 1
}

# make check-asan builds the plugin with ASan, and nbdkit (not built with it) could only
# load it with the ASan runtime preloaded.  On Debian 12 a preloaded ASan runtime (gcc's
# and clang's alike) deadlocks on glibc's setlocale lock once p11-kit, which nbdkit pulls
# in through GnuTLS, is loaded: `LD_PRELOAD=libasan.so curl --version` hangs the same way.
# So tests that load the plugin into nbdkit skip in that build; the unit tests, the HTTP
# driver, the double and ferryfs still run under ASan there, and everything under make check.
requires_plugin ()
{
  [ -z "${FERRY_ASAN:-}" ] ||
    skip "nbdkit cannot load the ASan-built plugin here (a preloaded ASan runtime deadlocks with p11-kit); run by make check"
  [ -f "$plugin" ] || fail "$plugin is not built (run make)"
}

requires ()
{
  local cmd
  for cmd in "$@"; do
    command -v "$cmd" >/dev/null 2>&1 || skip "'$cmd' is not installed"
  done
}

# Wait until "$@" succeeds, polling; fail after $timeout seconds (default 30).
wait_for ()
{
  local deadline=$((SECONDS + ${timeout:-30}))
  until "$@"; do
    ((SECONDS < deadline)) || fail "timed out waiting for: $*"
    sleep 0.05
  done
}

# Start the vSphere double with extra flags; sets SERVER URL CACERT THUMBPRINT_SHA1
# THUMBPRINT_SHA256 CONTROL DATACENTER DATASTORE and DOUBLE_PID.
start_double ()
{
  [ -x "$double" ] || fail "$double is not built (run make)"
  local out=$tmpdir/double.out dir=$tmpdir/double
  mkdir -p "$dir"
  "$double" -dir "$dir" "$@" >"$out" 2>"$tmpdir/double.err" &
  DOUBLE_PID=$!
  cleanup_fn "kill $DOUBLE_PID 2>/dev/null; wait $DOUBLE_PID 2>/dev/null"
  timeout=20 wait_for grep -q '^READY' "$out"
  # shellcheck disable=SC1090
  source <(grep -E '^[A-Z_0-9]+=' "$out")
  export SERVER URL CACERT THUMBPRINT_SHA1 THUMBPRINT_SHA256 CONTROL DATACENTER DATASTORE
}

# control METHOD PATH [curl args...]: talk to the double's control channel.
control ()
{
  local method=$1 path=$2
  shift 2
  curl -sS --fail-with-body -X "$method" "$CONTROL$path" "$@"
}

# Start nbdkit with the ferry plugin on a private unix socket; sets SOCK and NBDKIT_PID.
# Arguments are the plugin's key=value parameters.  Credentials come from the double;
# TLS_ARGS replaces the default cacert= (e.g. TLS_ARGS="thumbprint=...").
start_ferry ()
{
  requires_plugin
  SOCK=$tmpdir/nbd.$RANDOM.sock
  local pidfile=$tmpdir/nbdkit.$RANDOM.pid
  printf '%s' "${PASSWORD:-pass}" >"$tmpdir/password"
  # NBDKIT_FLAGS and TLS_ARGS are word lists on purpose.
  # shellcheck disable=SC2086
  ${FERRY_VALGRIND_CMD:-} nbdkit -U "$SOCK" -P "$pidfile" ${NBDKIT_FLAGS:-} \
    "$plugin" provider=vsphere server="$SERVER" user="${FERRY_USER:-user}" password=+"$tmpdir/password" \
    ${TLS_ARGS-cacert=$CACERT} "$@" 2>>"$tmpdir/nbdkit.err" || return 1
  # The background child writes the pid file after the parent has returned.
  wait_for test -s "$pidfile"
  NBDKIT_PID=$(cat "$pidfile")
  cleanup_fn "stop_ferry $NBDKIT_PID"
}

# Stop nbdkit and wait until it has exited (so its unload, e.g. snapshot removal, ran).
stop_ferry ()
{
  local pid=${1:-}
  [ -n "$pid" ] || return 0
  kill "$pid" 2>/dev/null || return 0
  timeout=30 wait_for sh -c "! kill -0 $pid 2>/dev/null"
}

nbd_uri ()
{
  echo "nbd+unix:///${1:-}?socket=$SOCK"
}

# create_vm NAME QUERY: create a VM on the double (QUERY like "disks=4G&power=off&cbt=1");
# prints its JSON.
create_vm ()
{
  local name
  name=$(jq -rn --arg v "$1" '$v|@uri')
  control POST "/vms?name=$name&$2"
}

# vm_json NAME: the double's view of a VM.
vm_json ()
{
  control GET "/vms/$(jq -rn --arg v "$1" '$v|@uri')"
}

# place_disk NAME KEY FILE: make the disk's content FILE (data regions only, sparse).
place_disk ()
{
  control PUT "/vms/$(jq -rn --arg v "$1" '$v|@uri')/disks/$2/data?offset=0&path=$(jq -rn --arg v "$3" '$v|@uri')" -o /dev/null
}

# disk_view NAME KEY OUT [SNAPSHOT]: the disk as the guest sees it now (or at SNAPSHOT).
disk_view ()
{
  local q=""
  [ -z "${4:-}" ] || q="?snapshot=$4"
  control GET "/vms/$(jq -rn --arg v "$1" '$v|@uri')/disks/$2/view$q" -o "$3"
}

# make_sparse_disk FILE SIZE AREAS...: a sparse file of SIZE with random data in each AREA
# given as OFFSET:LENGTH in 64 KiB blocks.
make_sparse_disk ()
{
  local file=$1 size=$2 area
  shift 2
  rm -f "$file"
  truncate -s "$size" "$file"
  for area in "$@"; do
    dd if=/dev/urandom of="$file" bs=64K seek="${area%:*}" count="${area#*:}" \
      conv=notrunc status=none
  done
}

# data_map URI: the data extents nbdinfo --map reports, one "offset length" per line.
data_map ()
{
  nbdinfo --map "$1" | awk '$3 == 0 { print $1, $2 }'
}

# ferryfs (fuse/ferryfs) -------------------------------------------------------------
ferryfs=$top/fuse/ferryfs

# start_ferryfs MOUNTPOINT ARGS...: run ferryfs -f in the background and wait until it has
# mounted; sets FERRYFS_PID.  Its stderr goes to $tmpdir/ferryfs.err.  Registered for
# cleanup (unmount, then wait until ferryfs and its nbdkit have exited).
start_ferryfs ()
{
  local mp=$1
  shift
  [ -x "$ferryfs" ] || fail "$ferryfs is not built (run make)"
  mkdir -p "$mp"
  # shellcheck disable=SC2086 # FERRY_VALGRIND_CMD (run-tests.sh) is a word list
  ${FERRY_VALGRIND_CMD:-} "$ferryfs" -f "$mp" "$@" 2>>"$tmpdir/ferryfs.err" &
  FERRYFS_PID=$!
  cleanup_fn "stop_ferryfs '$mp' $FERRYFS_PID"
  timeout=${timeout:-60} wait_for ferryfs_mounted "$mp" "$FERRYFS_PID"
}

ferryfs_mounted ()
{
  kill -0 "$2" 2>/dev/null || fail "ferryfs exited before mounting: $(cat "$tmpdir/ferryfs.err")"
  mountpoint -q "$1"
}

# stop_ferryfs MOUNTPOINT PID: unmount (fusermount3 -u), wait for ferryfs to exit (it
# stops its nbdkit first); kill it and lazily unmount only if that does not happen.
stop_ferryfs ()
{
  local mp=$1 pid=$2
  if mountpoint -q "$mp" 2>/dev/null; then
    fusermount3 -u "$mp" 2>/dev/null || kill "$pid" 2>/dev/null
  fi
  if ! timeout=60 wait_for sh -c "! kill -0 $pid 2>/dev/null" 2>/dev/null; then
    kill -9 "$pid" 2>/dev/null
    fusermount3 -uz "$mp" 2>/dev/null
  fi
  wait "$pid" 2>/dev/null || true
}

# The libguestfs environment: TCG when a default appliance launch fails (KVM unusable
# here, the launch then fails at once), unless the caller chose settings.
guestfs_env ()
{
  if [ -z "${LIBGUESTFS_BACKEND_SETTINGS:-}" ] && ! guestfish -a /dev/null run >/dev/null 2>&1; then
    export LIBGUESTFS_BACKEND=direct LIBGUESTFS_BACKEND_SETTINGS=force_tcg
  fi
}

# seek_map FILE: the data extents of FILE by SEEK_DATA/SEEK_HOLE, one "offset length" a line.
seek_map ()
{
  python3 - "$1" <<'PY'
import os, sys
fd = os.open(sys.argv[1], os.O_RDONLY)
size = os.fstat(fd).st_size
pos = 0
while pos < size:
    try:
        data = os.lseek(fd, pos, os.SEEK_DATA)
    except OSError:
        break
    hole = os.lseek(fd, data, os.SEEK_HOLE)
    print(data, hole - data)
    pos = hole
PY
}

# --- HTTP tests against range_server.py (test-http-*.sh) ---

# http_certs: in $tmpdir, a test CA (ca.pem), a server certificate for 127.0.0.1 signed by
# it (server.pem/server.key), and the SHA-1/SHA-256 fingerprints in $sha1 and $sha256.
http_certs ()
{
  (
    cd "$tmpdir" || exit
    openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=ferry test CA" \
      -keyout ca.key -out ca.pem 2>/dev/null
    openssl req -newkey rsa:2048 -nodes -subj "/CN=127.0.0.1" \
      -keyout server.key -out server.csr 2>/dev/null
    printf 'subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n' >server.ext
    openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 \
      -extfile server.ext -out server.pem 2>/dev/null
  )
  sha1=$(openssl x509 -in "$tmpdir/server.pem" -noout -fingerprint -sha1 | sed 's/.*=//')
  sha256=$(openssl x509 -in "$tmpdir/server.pem" -noout -fingerprint -sha256 | sed 's/.*=//')
  export sha1 sha256
}

# start_range_server NAME [range_server flags]: serve $tmpdir/disk; sets URL and
# SERVER_PID.  Its stdout/stderr go to $tmpdir/NAME.out/.err.  Needs http_certs first
# (CERT/KEY override the certificate).
start_range_server ()
{
  local name=$1
  shift
  /usr/bin/python3 "$top/tests/integration/range_server.py" \
    --cert "${CERT:-$tmpdir/server.pem}" --key "${KEY:-$tmpdir/server.key}" \
    --file "$tmpdir/disk" --port-file "$tmpdir/$name.port" "$@" \
    >"$tmpdir/$name.out" 2>"$tmpdir/$name.err" &
  SERVER_PID=$!
  cleanup_fn "kill -CONT $SERVER_PID 2>/dev/null; kill $SERVER_PID 2>/dev/null; wait $SERVER_PID 2>/dev/null"
  timeout=20 wait_for test -s "$tmpdir/$name.port"
  URL=https://127.0.0.1:$(cat "$tmpdir/$name.port")
}

stop_range_server ()
{
  kill -CONT "$SERVER_PID" 2>/dev/null || true
  kill "$SERVER_PID"
  wait "$SERVER_PID" || true
}

# --- disk cache helpers (test-cache-*.sh) ---

# double_stat NAME: one counter of the double's GET /stats (e.g. folder_bytes).
double_stat ()
{
  control GET /stats | jq -r ".$1"
}

# cache_stat FIELD: from the last "cache ...: ..." stats line nbdkit printed to
# $tmpdir/nbdkit.err (-D ferry.stats=1), the number before FIELD ("fetched", "zeroed").
cache_stat ()
{
  grep 'debug: cache .*: hits' "$tmpdir/nbdkit.err" | tail -n1 |
    sed -E "s/.*[ ,]$1 ([0-9]+) .*/\1/"
}

# changed_bytes OFFSET:LENGTH...: bytes of the 64 KiB blocks these writes touch (each
# block counted once), i.e. what a CBT-aware round must fetch.
changed_bytes ()
{
  local w off len
  for w in "$@"; do
    off=${w%:*} len=${w#*:}
    seq $((off / 65536)) $(((off + len - 1) / 65536))
  done | sort -un | wc -l | awk '{ print $1 * 65536 }'
}

# guest_write_random NAME KEY OFFSET LENGTH: write LENGTH random bytes at OFFSET.
guest_write_random ()
{
  head -c "$4" /dev/urandom >"$tmpdir/gw.$$"
  guest_write "$1" "$2" "$3" "$tmpdir/gw.$$"
  rm -f "$tmpdir/gw.$$"
}

# --- ferry, the orchestrator (test-ferry-*.sh) ---
export ferry=$top/orchestrator/ferry

# ferry_secret DIR: a Forklift-style vSphere provider Secret for the double.
ferry_secret ()
{
  mkdir -p "$1"
  printf '%s' "${FERRY_USER:-user}" >"$1/user"
  printf '%s' "${PASSWORD:-pass}" >"$1/password"
  cp "$CACERT" "$1/cacert"
}

# write_plan FILE JQ-FILTER: a plan for the double (Secret in $tmpdir/secret, state in
# $tmpdir/state, the double's datastore mapped to $tmpdir/pvc/{vm}-disk{index}), changed
# by the jq filter (e.g. '.warm = true | .vms = [{"name": "web01"}]').  The disks of these
# VMs hold no guest, so the plan skips conversion (raw copy) unless the filter says
# '.skipGuestConversion = false'.
write_plan ()
{
  [ -d "$tmpdir/secret" ] || ferry_secret "$tmpdir/secret"
  jq -n --arg url "https://$SERVER/sdk" --arg secret "$tmpdir/secret" \
    --arg state "$tmpdir/state" --arg ds "$DATASTORE" --arg pvc "$tmpdir/pvc" '{
      name: "test", source: { type: "vsphere", url: $url, secret: $secret },
      stateDir: $state, skipGuestConversion: true,
      storageMap: [ { source: { name: $ds },
                      destination: { kind: "filesystem", path: ($pvc + "/{vm}-disk{index}") } } ],
      vms: [] }' | jq "$2" >"$1"
}

# make_targets VM N: the filesystem targets (PVC mounts) of a VM's first N disks.
make_targets ()
{
  local i
  for ((i = 0; i < $2; i++)); do mkdir -p "$tmpdir/pvc/$1-disk$i"; done
}

# wait_stopped PID: wait until the process is stopped (state T, e.g. by
# FERRY_TEST_STOP_AT); fails if it exits first.
wait_stopped ()
{
  timeout=${timeout:-60} wait_for _is_stopped "$1"
}

_is_stopped ()
{
  [ -e "/proc/$1/stat" ] || fail "process $1 exited before it stopped"
  [ "$(awk '{ print $3 }' "/proc/$1/stat")" = T ]
}

# ferry_snapshots VM: the names of the VM's snapshots that ferry made, one a line.
ferry_snapshots ()
{
  vm_json "$1" | jq -r '.snapshots[]?.name | select(startswith("ferry:"))'
}

# requires_ferry: fail unless the ferry binary is built.
requires_ferry ()
{
  [ -x "$ferry" ] || fail "$ferry is not built (run make)"
}

# process_stopped PID: true when PID is in state T (stopped); false when it is running or
# gone.
process_stopped ()
{
  [ "$(awk '{ print $3 }' "/proc/$1/stat" 2>/dev/null)" = T ]
}

# json_line_matches FILE FILTER: true when a JSON line of FILE (which may still be being
# written) matches jq's FILTER (e.g. 'select(.event == "progress" and .bytesDone > 0)').
json_line_matches ()
{
  [ -n "$(jq -c "$2" "$1" 2>/dev/null | head -n1)" ]
}

# --- the real guest (tests/guest/build-guest.sh) ---

# shellcheck source=guest-functions.sh
source "$top/tests/integration/guest-functions.sh"

# expect_failure WORDS... -- PARAMS...: nbdkit with the plugin and PARAMS (start_ferry) must
# refuse to start and say WORDS; what it said is added to $tmpdir/all.err.
expect_failure ()
{
  local words=() p
  while [ "$1" != -- ]; do words+=("$1"); shift; done
  shift
  : >"$tmpdir/nbdkit.err"
  if start_ferry "$@"; then fail "nbdkit started with: $*"; fi
  for p in "${words[@]}"; do
    grep -q -- "$p" "$tmpdir/nbdkit.err" || {
      cat "$tmpdir/nbdkit.err"; fail "the error does not say '$p'"; }
  done
  cat "$tmpdir/nbdkit.err" >>"$tmpdir/all.err"
}

# requires_schemas: skip unless the published schemas (../shared/schemas beside the
# checkout, or $FERRY_SCHEMAS) and python3's yaml and jsonschema are there; sets schemas.
requires_schemas ()
{
  local d
  schemas=${FERRY_SCHEMAS:-}
  for d in "$top/../shared/schemas" "$top/../../shared/schemas"; do
    [ -n "$schemas" ] || [ ! -f "$d/kubevirt-virtualmachine.crd.json" ] || schemas=$d
  done
  [ -n "$schemas" ] || skip "the published schemas (../shared/schemas or \$FERRY_SCHEMAS) are absent"
  /usr/bin/python3 -c 'import yaml, jsonschema' 2>/dev/null || skip "python3-yaml or python3-jsonschema is missing"
}
