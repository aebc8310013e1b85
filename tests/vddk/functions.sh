# SPDX-License-Identifier: Apache-2.0
# ferry: helpers for the VDDK drop-in tests (tests/integration/test-vddk-*.sh).
# Source after tests/integration/functions.sh.
# shellcheck shell=bash
# shellcheck disable=SC2154 # top and tmpdir come from tests/integration/functions.sh

# Under make check-asan, a UBSan finding in the library fails the test instead of only
# being printed (ASan and LSan fail the process by themselves).
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-halt_on_error=1:print_stacktrace=1}

vddk_libdir=$top/vddk
vddk_driver=$top/tests/vddk/vddk-driver
vddk_fwd=$top/tests/vddk/nbdkit-vddkfwd-plugin.so

requires_vddk ()
{
  [ -f "$vddk_libdir/lib64/libvixDiskLib.so.8" ] || fail "libvixDiskLib.so.8 is not built (run make)"
  [ -x "$vddk_driver" ] || fail "$vddk_driver is not built (run make)"
}

# vddk_env VM-JSON-FILE [DISK-INDEX]: the driver's connection for that VM's disk, through
# the double (thumbprint pinned, as virt-v2v and CDI always pass one).
vddk_env ()
{
  printf '%s' "${PASSWORD:-pass}" >"$tmpdir/password"
  export VDDK_SERVER=$SERVER VDDK_USER=${FERRY_USER:-user}
  export VDDK_PASSWORD_FILE=$tmpdir/password VDDK_THUMBPRINT=$THUMBPRINT_SHA1
  VDDK_VM=moref=$(jq -r .moref "$1")
  VDDK_FILE=$(jq -r ".disks[${2:-0}].fileName" "$1")
  export VDDK_VM VDDK_FILE
}

# expected_map FILE SIZE: the 64 KiB chunks holding data in FILE (SEEK_DATA), merged, in
# bytes, clipped to SIZE — what CBT "*" rounded to whole chunks must give.
expected_map ()
{
  seek_map "$1" | awk -v size="$2" -v c=65536 '
    { s = int($1 / c) * c; e = int(($1 + $2 + c - 1) / c) * c; if (e > size) e = size
      if (n && s <= le) { if (e > le) le = e } else { if (n) print ls, le - ls; ls = s; le = e; n = 1 } }
    END { if (n) print ls, le - ls }'
}

# start_vddkfwd KEY=VALUE...: nbdkit with the test-only forwarding plugin over the library,
# given CDI's arguments (libdir, server, user, password, thumbprint, vm) plus the caller's
# (file=, snapshot=, config=); sets SOCK and NBDKIT_PID.
start_vddkfwd ()
{
  [ -f "$vddk_fwd" ] || fail "$vddk_fwd is not built (run make)"
  SOCK=$tmpdir/nbd.$RANDOM.sock
  local pidfile=$tmpdir/nbdkit.$RANDOM.pid
  printf '%s' "${PASSWORD:-pass}" >"$tmpdir/password"
  # In the foreground (in the background of this shell): a daemon's errors go nowhere.
  # NBDKIT_FLAGS is a word list on purpose.
  # shellcheck disable=SC2086
  nbdkit -f -U "$SOCK" -P "$pidfile" --readonly --log=stderr ${NBDKIT_FLAGS:-} \
    "$vddk_fwd" libdir="$vddk_libdir" server="$SERVER" user="${FERRY_USER:-user}" \
    password=+"$tmpdir/password" thumbprint="$THUMBPRINT_SHA1" "$@" 2>>"$tmpdir/nbdkit.err" &
  cleanup_fn "stop_ferry $!"
  wait_for test -s "$pidfile"
  # shellcheck disable=SC2034 # used by the tests
  NBDKIT_PID=$(cat "$pidfile")
}

# vsphere_login: log in to the double as a client of its own would (CDI, virt-v2v's
# caller), printing the vmware_soap_session cookie's value.
vsphere_login ()
{
  local body
  body='<?xml version="1.0" encoding="UTF-8"?><soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" xmlns:urn="urn:vim25"><soapenv:Body><urn:Login><urn:_this type="SessionManager">SessionManager</urn:_this><urn:userName>'"${FERRY_USER:-user}"'</urn:userName><urn:password>'"${PASSWORD:-pass}"'</urn:password></urn:Login></soapenv:Body></soapenv:Envelope>'
  curl -sS --cacert "$CACERT" -o /dev/null -D - -H 'Content-Type: text/xml' \
    -H 'SOAPAction: "urn:vim25/6.5"' --data-binary "$body" "https://$SERVER/sdk" |
    sed -n -E 's/^[Ss]et-[Cc]ookie: vmware_soap_session=([^;]*).*/\1/p' | tr -d '\r'
}

# expect_refused CODE TEXT: vddk-driver open fails with VIX code CODE and TEXT in its
# error text.
expect_refused ()
{
  if "$vddk_driver" "$vddk_libdir" open >"$tmpdir/open.out" 2>"$tmpdir/open.err"; then
    fail "opened although it should be refused ($2)"
  fi
  grep -F "(error $1:" "$tmpdir/open.err" >/dev/null ||
    fail "expected VIX error $1: $(cat "$tmpdir/open.err")"
  grep -F -- "$2" "$tmpdir/open.err" >/dev/null ||
    fail "expected \"$2\" in: $(cat "$tmpdir/open.err")"
  grep -F "vddk-driver: VixDiskLib_" "$tmpdir/open.err" # for the log
}
