#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# The read-only guards of ferryfs, each on its own.  The mount is "ro" (findmnt), so the
# kernel refuses writes first: open(O_RDWR) fails with EROFS.  Then root remounts it
# read-write (mount(2) MS_REMOUNT), which takes the kernel's guard away: every change must
# still fail with EROFS, now answered by ferryfs's own callbacks, one callback per attempt
# (open for writing, truncate, chmod, chown, utimens, create, mknod, mkdir, unlink, rmdir,
# symlink, link, rename, setxattr, removexattr), and the disk is unchanged.
# shellcheck source-path=SCRIPTDIR source=functions.sh
source "$(dirname "$0")/functions.sh"
set -euo pipefail
requires nbdkit fusermount3 mountpoint findmnt python3
[ -e /dev/fuse ] || skip "/dev/fuse is missing"

make_sparse_disk "$tmpdir/a.img" 8M 0:2 50:3
cp "$tmpdir/a.img" "$tmpdir/a.orig"
mp=$tmpdir/mnt
start_ferryfs "$mp" -- nbdkit file "$tmpdir/a.img"
disk=$mp/disks/disk0
cmp "$disk" "$tmpdir/a.img"

# attempts WHICH...: each named attempt must fail with EROFS ("all" = every one).
attempts ()
{
  python3 - "$mp" "$@" <<'PY'
import errno, os, sys
mp, which = sys.argv[1], sys.argv[2:]
disk = mp + "/disks/disk0"
attempts = {
    "open O_WRONLY": lambda: os.open(disk, os.O_WRONLY),
    "open O_RDWR": lambda: os.open(disk, os.O_RDWR),
    "open O_TRUNC": lambda: os.open(disk, os.O_RDONLY | os.O_TRUNC),
    "truncate": lambda: os.truncate(disk, 0),
    "chmod": lambda: os.chmod(disk, 0o666),
    "chown": lambda: os.chown(disk, 1, 1),
    "utimens": lambda: os.utime(disk, (0, 0)),
    "create": lambda: os.open(mp + "/disks/new", os.O_CREAT | os.O_WRONLY, 0o644),
    "mknod": lambda: os.mkfifo(mp + "/fifo"),
    "mkdir": lambda: os.mkdir(mp + "/d"),
    "unlink": lambda: os.unlink(mp + "/vm.json"),
    "rmdir": lambda: os.rmdir(mp + "/disks"),
    "symlink": lambda: os.symlink("disks/disk0", mp + "/link"),
    "link": lambda: os.link(disk, mp + "/hard"),
    "rename": lambda: os.rename(disk, mp + "/disks/x"),
    "setxattr": lambda: os.setxattr(disk, "user.ferry", b"x"),
    "removexattr": lambda: os.removexattr(disk, "user.ferry"),
}
bad = []
for what in (attempts if which == ["all"] else which):
    try:
        attempts[what]()
    except OSError as e:
        if e.errno != errno.EROFS:
            bad.append("%s: %s, expected EROFS" % (what, e))
    else:
        bad.append("%s succeeded" % what)
if bad:
    sys.exit("\n".join(bad))
PY
}

# The kernel's guard: a read-only mount.
[ "$(findmnt -no VFS-OPTIONS "$mp" | cut -d, -f1)" = ro ] ||
  fail "not mounted ro: $(findmnt -no VFS-OPTIONS "$mp")"
[ "$(findmnt -no FS-OPTIONS "$mp" | cut -d, -f1)" = ro ] ||
  fail "not a read-only superblock: $(findmnt -no FS-OPTIONS "$mp")"
attempts "open O_RDWR" || fail "the read-only mount let a write through"

# ferryfs's own guards: remount read-write, as root may.
[ "$(id -u)" = 0 ] || skip "remounting read-write needs root"
python3 - "$mp" <<'PY'
import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
MS_REMOUNT = 32
if libc.mount(None, sys.argv[1].encode(), None, MS_REMOUNT, None) != 0:
    sys.exit("remount rw: " + os.strerror(ctypes.get_errno()))
PY
[ "$(findmnt -no VFS-OPTIONS "$mp" | cut -d, -f1)" = rw ] ||
  fail "remount: $(findmnt -no VFS-OPTIONS "$mp")"
attempts all || fail "a change got through ferryfs"
[ "$(cd "$mp" && echo * disks/*)" = "disks inspection.json vm.json disks/disk0" ] ||
  fail "the tree changed: $(cd "$mp" && echo * disks/*)"
[ "$(stat -c %a "$disk")" = 444 ] || fail "mode: $(stat -c %a "$disk")"
cmp "$disk" "$tmpdir/a.orig"
stop_ferryfs "$mp" "$FERRYFS_PID"
cmp "$tmpdir/a.img" "$tmpdir/a.orig" || fail "the file nbdkit serves changed"
echo "$0: OK"
