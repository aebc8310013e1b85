#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# ferryfs is server-neutral: it mounts exports of nbdkit memory and qemu-nbd given as URIs
# (cmp, synthesised vm.json), and starts a non-ferry nbdkit itself.  A stopped server makes
# reads fail with EIO after --timeout, a killed one at once; reads work again when the
# server comes back.  Mountpoint and usage errors are clear, with exit 1 and 2.  Listing
# exports that breaks on the network is an error, never a partial VM.
# shellcheck source-path=SCRIPTDIR source=functions.sh
source "$(dirname "$0")/functions.sh"
set -euo pipefail
requires nbdkit qemu-nbd nbdcopy fusermount3 mountpoint jq python3
[ -e /dev/fuse ] || skip "/dev/fuse is missing"
[ -x "$ferryfs" ] || fail "$ferryfs is not built (run make)"

make_sparse_disk "$tmpdir/a.img" 32M 0:1 10:40 511:1
make_sparse_disk "$tmpdir/b.img" 8M 3:5

sock_a=$tmpdir/a.sock
nbdkit -U "$sock_a" -P "$tmpdir/a.pid" memory 32M
pid_a=$(cat "$tmpdir/a.pid")
cleanup_fn "kill -CONT $pid_a 2>/dev/null; kill $pid_a 2>/dev/null"
nbdcopy "$tmpdir/a.img" "nbd+unix:///?socket=$sock_a"

sock_b=$tmpdir/b.sock
qemu-nbd -r -t -e 8 -f raw -x qdisk -k "$sock_b" --pid-file="$tmpdir/b.pid" --fork "$tmpdir/b.img"
cleanup_fn "kill $(cat "$tmpdir/b.pid") 2>/dev/null"

uri_a="nbd+unix:///?socket=$sock_a"
uri_b="nbd+unix:///qdisk?socket=$sock_b"
mp=$tmpdir/mnt
start_ferryfs "$mp" --timeout 3 "$uri_a" "$uri_b"

[ "$(cd "$mp/disks" && echo *)" = "disk0 qdisk" ]
cmp "$mp/disks/disk0" "$tmpdir/a.img"
cmp "$mp/disks/qdisk" "$tmpdir/b.img"
jq -e --arg a "$uri_a" --arg b "$uri_b" '
  .source == {provider: "nbd", uris: [$a, $b]} and
  ([.disks[] | [.file, .export, .capacity]] == [["disk0", "", 33554432], ["qdisk", "qdisk", 8388608]])' \
  "$mp/vm.json" >/dev/null || fail "synthesised vm.json: $(cat "$mp/vm.json")"

# Errors: the mountpoint in use or missing, usage.
if "$ferryfs" "$mp" "$uri_a" 2>"$tmpdir/err"; then fail "mounted twice"; fi
grep -q "ferryfs: mountpoint .* is in use" "$tmpdir/err" || fail "in use: $(cat "$tmpdir/err")"
rc=0
"$ferryfs" "$tmpdir/missing" "$uri_a" 2>"$tmpdir/err" || rc=$?
if [ $rc != 1 ] || ! grep -q "ferryfs: mountpoint .*missing: No such file or directory" "$tmpdir/err"; then
  fail "missing mountpoint: rc $rc: $(cat "$tmpdir/err")"
fi
rc_noarg=0 rc_badopt=0 rc_noserver=0
"$ferryfs" "$tmpdir" 2>/dev/null || rc_noarg=$?
"$ferryfs" --timeout=0 "$tmpdir" "$uri_a" 2>/dev/null || rc_badopt=$?
mkdir -p "$tmpdir/mnt2"
"$ferryfs" "$tmpdir/mnt2" "nbd+unix:///?socket=$tmpdir/nothing.sock" 2>"$tmpdir/err" ||
  rc_noserver=$?
[ "$rc_noarg $rc_badopt" = "2 2" ] || fail "usage errors: exit $rc_noarg, $rc_badopt"
if [ $rc_noserver != 1 ] || ! grep -q "^ferryfs: nbd+unix.*nothing.sock" "$tmpdir/err"; then
  fail "no server: exit $rc_noserver: $(cat "$tmpdir/err")"
fi
mountpoint -q "$tmpdir/mnt2" && fail "still mounted: $tmpdir/mnt2"
"$ferryfs" --help | grep -q "^Examples:" || fail "--help has no examples"

# read_errno FILE OFFSET: "ok" or the errno name, then the seconds the read took.
read_errno ()
{
  python3 - "$1" "$2" <<'PY'
import errno, os, sys, time
fd = os.open(sys.argv[1], os.O_RDONLY)
t = time.monotonic()
try:
    os.pread(fd, 65536, int(sys.argv[2]))
    r = "ok"
except OSError as e:
    r = errno.errorcode[e.errno]
print(r, round(time.monotonic() - t, 1))
PY
}

# A server that stops answering: EIO after the 3 s timeout, not a hang.
kill -STOP "$pid_a"
read -r res secs < <(read_errno "$mp/disks/disk0" $((1 << 20)))
kill -CONT "$pid_a"
[ "$res" = EIO ] || fail "read from a stopped server: $res"
python3 -c "import sys; sys.exit(not (2.5 <= $secs <= 12))" || fail "EIO after $secs s, --timeout 3"
# It answers again: reads work again (the dead connections are reopened).
read -r res secs < <(read_errno "$mp/disks/disk0" $((2 << 20)))
[ "$res" = ok ] || fail "read after the server came back: $res"

# A killed server: EIO at once; the other disk is unaffected.
kill -9 "$pid_a"
read -r res secs < <(read_errno "$mp/disks/disk0" $((3 << 20)))
[ "$res" = EIO ] || fail "read from a killed server: $res"
python3 -c "import sys; sys.exit(not ($secs <= 3))" || fail "EIO after $secs s from a dead server"
cmp "$mp/disks/qdisk" "$tmpdir/b.img"
stop_ferryfs "$mp" "$FERRYFS_PID"
mountpoint -q "$mp" && fail "still mounted: $mp"

# Command mode with another plugin; its nbdkit killed: EIO within the timeout.  Here the
# appliance cannot start (LIBGUESTFS_HV=/bin/false, settings chosen so no fallback):
# inspection.json reads "running", then a JSON error object, without an I/O error.
LIBGUESTFS_HV=/bin/false LIBGUESTFS_BACKEND=direct LIBGUESTFS_BACKEND_SETTINGS="" \
  start_ferryfs "$mp" -t 3 -- nbdkit memory 16M
nbdkit_pid=$(pgrep -P "$FERRYFS_PID" -x nbdkit)
[ "$(stat -c %s "$mp/disks/disk0")" = 16777216 ]
cmp -n 16777216 "$mp/disks/disk0" /dev/zero
jq -e '.source.provider == "nbd" and .disks[0].capacity == 16777216' "$mp/vm.json" >/dev/null
jq -e '.status == "running"' "$mp/inspection.json" >/dev/null ||
  jq -e '.status == "error"' "$mp/inspection.json" >/dev/null ||
  fail "inspection.json at first: $(cat "$mp/inspection.json")"
wait_for jq -e '.status != "running"' "$mp/inspection.json" >/dev/null
cat "$mp/inspection.json" >"$tmpdir/inspection.json"
jq -e '.status == "error" and .error.stage == "launch" and (.error.message | length) > 0' \
  "$tmpdir/inspection.json" >/dev/null || fail "inspection.json: $(cat "$tmpdir/inspection.json")"
kill -9 "$nbdkit_pid"
read -r res secs < <(read_errno "$mp/disks/disk0" 0)
[ "$res" = EIO ] || fail "read after nbdkit was killed: $res"
python3 -c "import sys; sys.exit(not ($secs <= 3.5))" || fail "EIO after $secs s"
fusermount3 -u "$mp"
timeout=30 wait_for sh -c "! kill -0 $FERRYFS_PID 2>/dev/null"
mountpoint -q "$mp" && fail "still mounted: $mp"
! kill -0 "$nbdkit_pid" 2>/dev/null || fail "nbdkit $nbdkit_pid outlived the mount"
# Listing the exports fails on the network: no partial VM (the default export alone), an
# error.  The "nbdkit" ferryfs starts here is a relay to an nbdkit serving two exports
# (the first is also the default one), which cuts the connection that asks NBD_OPT_LIST
# (or, with "pass", relays everything).
sock_c=$tmpdir/c.sock
# shellcheck disable=SC2016 # the eval plugin's shell expands $2 and $3
nbdkit -U "$sock_c" -P "$tmpdir/c.pid" eval list_exports='echo first; echo second' \
  default_export='echo first' get_size='[ "$2" = first ] && echo 1048576 || echo 2097152' \
  pread='dd if=/dev/zero count=$3 iflag=count_bytes status=none'
cleanup_fn "kill $(cat "$tmpdir/c.pid") 2>/dev/null"
cat >"$tmpdir/relay" <<'PY'
#!/usr/bin/env python3
# relay -U SOCKET -P PIDFILE --exit-with-parent -f UPSTREAM [pass]
import ctypes, os, signal, socket, struct, sys, threading
args = sys.argv[1:]
sock_path, pid_path, upstream = args[1], args[3], args[6]
cut_list = args[7:] != ["pass"]
ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG, as --exit-with-parent
LIST = b"IHAVEOPT" + struct.pack(">I", 3)

def pump(src, dst, watch):
    seen = b""
    try:
        while True:
            data = src.recv(65536)
            seen = (seen + data)[-64:]
            if not data or (watch and LIST in seen):
                break
            dst.sendall(data)
    except OSError:
        pass
    for s in (src, dst):
        try:
            s.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

srv = socket.socket(socket.AF_UNIX)
srv.bind(sock_path)
srv.listen(16)
with open(pid_path, "w") as f:
    f.write("%d\n" % os.getpid())
while True:
    c, _ = srv.accept()
    u = socket.socket(socket.AF_UNIX)
    u.connect(upstream)
    threading.Thread(target=pump, args=(c, u, cut_list), daemon=True).start()
    threading.Thread(target=pump, args=(u, c, False), daemon=True).start()
PY
chmod +x "$tmpdir/relay"
start_ferryfs "$mp" -t 5 -- "$tmpdir/relay" "$sock_c" pass
[ "$(cd "$mp/disks" && echo *)" = "first second" ] || fail "through the relay: $(ls "$mp/disks")"
[ "$(stat -c %s "$mp/disks/second")" = 2097152 ]
stop_ferryfs "$mp" "$FERRYFS_PID"
rc=0
cleanup_fn "fusermount3 -u '$mp' 2>/dev/null" # (when it was mounted after all)
"$ferryfs" -t 5 "$mp" -- "$tmpdir/relay" "$sock_c" 2>"$tmpdir/err" || rc=$?
cat "$tmpdir/err"
[ $rc = 1 ] || fail "listing cut: exit $rc"
! mountpoint -q "$mp" || fail "listing cut: mounted"
grep -q "^ferryfs: nbd+unix:.*: listing exports: " "$tmpdir/err" || fail "listing cut: no error"

# A server that answers NBD_OPT_LIST with an error cannot list: its default export is
# mounted, and ferryfs says so.
# shellcheck disable=SC2016 # the eval plugin's shell expands $3
start_ferryfs "$mp" -- nbdkit eval get_size='echo 1048576' \
  pread='dd if=/dev/zero count=$3 iflag=count_bytes status=none' \
  list_exports='echo "cannot list" >&2; exit 1'
[ "$(cd "$mp/disks" && echo *)" = "disk0" ] || fail "eval server: $(ls "$mp/disks")"
grep -q "the server cannot list its exports .*mounting its default export" "$tmpdir/ferryfs.err" ||
  fail "no message about the default export"
stop_ferryfs "$mp" "$FERRYFS_PID"
echo "$0: OK"
