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
# Arguments are the plugin's key=value parameters.  Credentials come from the double.
start_ferry ()
{
  SOCK=$tmpdir/nbd.$RANDOM.sock
  local pidfile=$tmpdir/nbdkit.$RANDOM.pid
  printf '%s' "${PASSWORD:-pass}" >"$tmpdir/password"
  $NBDKIT_PREFIX nbdkit -U "$SOCK" -P "$pidfile" ${NBDKIT_FLAGS:-} \
    "$plugin" provider=vsphere server="$SERVER" user=user password=+"$tmpdir/password" \
    cacert="$CACERT" "$@" 2>>"$tmpdir/nbdkit.err"
  NBDKIT_PID=$(cat "$pidfile")
  cleanup_fn "stop_ferry $NBDKIT_PID"
}

# Stop nbdkit and wait until it has exited (so its unload, e.g. snapshot removal, ran).
stop_ferry ()
{
  local pid=$1
  kill "$pid" 2>/dev/null || return 0
  timeout=30 wait_for sh -c "! kill -0 $pid 2>/dev/null"
}

nbd_uri ()
{
  echo "nbd+unix:///${1:-}?socket=$SOCK"
}
