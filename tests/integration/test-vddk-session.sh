#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# One vCenter session per VDDK connection: ConnectEx logs in once and every Open reads in
# that session (no second login), Disconnect logs it out once; a session cookie given by
# the caller (CDI's, virt-v2v's cookie=) is used without any login and never logged out,
# and one that is not a live session is refused at ConnectEx.
source "$(dirname "$0")/functions.sh"
source "$top/tests/vddk/functions.sh"
set -euo pipefail
requires jq curl python3 nbdkit nbdcopy
requires_vddk

start_double
create_vm "vddk s" "disks=64M&power=off&cbt=1" >"$tmpdir/vm.json"
make_sparse_disk "$tmpdir/disk0" 64M 0:1 100:3
place_disk "vddk s" 2000 "$tmpdir/disk0"
vddk_env "$tmpdir/vm.json" 0

logins () { double_stat logins; }
logouts () { control GET /stats | jq '.soap_calls.Logout // 0'; }

# user/password: one login for ConnectEx and Open together, one logout.
l0=$(logins) o0=$(logouts)
"$vddk_driver" "$vddk_libdir" open 2>"$tmpdir/open.err" || fail "open: $(cat "$tmpdir/open.err")"
[ "$(logins)" = $((l0 + 1)) ] || fail "ConnectEx + Open logged in $(($(logins) - l0)) times, not once"
[ "$(logouts)" = $((o0 + 1)) ] || fail "the session was logged out $(($(logouts) - o0)) times, not once"

# The whole driver run (three connections, three Opens, reads, maps): three logins.
l0=$(logins)
mkdir "$tmpdir/out"
"$vddk_driver" "$vddk_libdir" conform "$tmpdir/out" >"$tmpdir/driver.out" 2>"$tmpdir/driver.err" ||
  fail "the driver failed: $(cat "$tmpdir/driver.err")"
cmp "$tmpdir/out/disk.raw" "$tmpdir/disk0"
[ "$(logins)" = $((l0 + 3)) ] || fail "three connections logged in $(($(logins) - l0)) times"

# The caller's cookie, without a password: no login, no logout, and the session lives on.
cookie=$(vsphere_login)
[ -n "$cookie" ] || fail "no session cookie from the double"
l0=$(logins) o0=$(logouts)
VDDK_COOKIE=$cookie VDDK_PASSWORD_FILE='' "$vddk_driver" "$vddk_libdir" conform "$tmpdir/out" \
  >"$tmpdir/driver.out" 2>"$tmpdir/driver.err" || fail "with a cookie: $(cat "$tmpdir/driver.err")"
cmp "$tmpdir/out/disk.raw" "$tmpdir/disk0"
[ "$(logins)" = "$l0" ] || fail "logged in although the caller gave a session cookie"
[ "$(logouts)" = "$o0" ] || fail "logged the caller's session out"
# The cookie's full form, as a browser or govc shows it, and through nbdkit.
VDDK_COOKIE="vmware_soap_session=$cookie" VDDK_PASSWORD_FILE='' "$vddk_driver" "$vddk_libdir" open \
  2>"$tmpdir/open.err" || fail "the cookie's full form: $(cat "$tmpdir/open.err")"
# (nbdkit cannot load ASan-built code here: under make check-asan the driver's runs stand.)
if [ -z "${FERRY_ASAN:-}" ]; then
  start_vddkfwd vm="$VDDK_VM" file="$VDDK_FILE" cookie="$cookie"
  nbdcopy "$(nbd_uri)" "$tmpdir/copy"
  cmp "$tmpdir/copy" "$tmpdir/disk0"
  stop_ferry "$NBDKIT_PID"
fi
[ "$(logins)" = "$l0" ] || fail "nbdkit with cookie= logged in"
[ "$(logouts)" = "$o0" ] || fail "nbdkit with cookie= logged the caller's session out"

if [ -z "${FERRY_ASAN:-}" ]; then
  # The caller's session expires between Open and a read: with the password as the key,
  # the library logs in again, once, and the read succeeds; without one, the read fails
  # and says why.
  expire_and_read () # expects the first 64 KiB of the disk
  {
    DISK=$tmpdir/disk0 nbdsh -u "$(nbd_uri)" -c 'import os, urllib.request' \
      -c 'urllib.request.urlopen (urllib.request.Request (os.environ["CONTROL"] + "/sessions/expire", method="POST"))' \
      -c 'assert h.pread (65536, 0) == open (os.environ["DISK"], "rb").read (65536)'
  }
  cookie=$(vsphere_login)
  start_vddkfwd vm="$VDDK_VM" file="$VDDK_FILE" cookie="$cookie"
  l0=$(logins)
  expire_and_read || fail "the read after the session expired failed: $(tail -3 "$tmpdir/nbdkit.err")"
  [ "$(logins)" = $((l0 + 1)) ] || fail "logged in $(($(logins) - l0)) times after the session expired, not once"
  stop_ferry "$NBDKIT_PID"
  cookie=$(vsphere_login)
  SOCK=$tmpdir/nopass.sock
  nbdkit -f -U "$SOCK" --readonly "$vddk_fwd" libdir="$vddk_libdir" server="$SERVER" user="${FERRY_USER:-user}" \
    thumbprint="$THUMBPRINT_SHA1" vm="$VDDK_VM" file="$VDDK_FILE" cookie="$cookie" 2>"$tmpdir/nopass.err" &
  pid=$!
  cleanup_fn "stop_ferry $pid"
  wait_for test -S "$SOCK"
  if expire_and_read 2>/dev/null; then fail "read without a session or a password"; fi
  grep -F "no user name and password to log in again" "$tmpdir/nopass.err" ||
    fail "no useful error: $(tail -3 "$tmpdir/nopass.err")"
  stop_ferry "$pid"
fi

# A cookie that is no (longer a) session: refused as an authentication failure, with or
# without the password as its key, never replaced by a login of ferry's own.
l0=$(logins)
VDDK_COOKIE=not-a-session VDDK_PASSWORD_FILE='' expect_refused 35 "the session cookie given is not a logged-in session"
VDDK_COOKIE=not-a-session expect_refused 35 "the session cookie given is not a logged-in session"
[ "$(logins)" = "$l0" ] || fail "a bad cookie was replaced by a login"
