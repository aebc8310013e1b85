/* SPDX-License-Identifier: Apache-2.0 */
/* ferry: one process per cache — an flock on META.lock, which holds the holder's pid, and
 * an flock on the image itself, so that two processes given one image with two
 * different metadata files cannot write it from two different states.
 *
 * flock locks belong to the open file description: they survive nbdkit's fork into the
 * background (the child inherits the descriptor) and vanish when the holder dies, even
 * by SIGKILL, so a crashed run never blocks the next one.  The pid in the file is only
 * for the message; the lock is what counts.
 *
 * An image (a PVC's disk.img, a block device) has no room for a pid: the holder of its
 * lock is found by looking for processes that have it open (/proc/PID/fd), as fuser does.
 *
 * State: c->lock_fd, and the lock on c->image_fd, held from dcache_open to dcache_close.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/log.h"
#include "dcache-internal.h"

void
lock_note_pid (struct dcache *c)
{
  char pid[32];
  int n = snprintf (pid, sizeof pid, "%ld\n", (long)getpid ());

  if (ftruncate (c->lock_fd, 0) == 0 && pwrite (c->lock_fd, pid, n, 0) == n)
    return;
  log_debug ("%s: cannot record our pid: %m", c->lock_path);
}

int
lock_acquire (struct dcache *c)
{
  c->lock_fd = open (c->lock_path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (c->lock_fd == -1) {
    log_error ("%s: cannot open the cache lock file: %m", c->lock_path);
    return -1;
  }
  if (flock (c->lock_fd, LOCK_EX | LOCK_NB) == -1) {
    int err = errno;
    char pid[32] = "";
    ssize_t r = pread (c->lock_fd, pid, sizeof pid - 1, 0);
    if (err == EWOULDBLOCK) {
      pid[r > 0 ? r : 0] = '\0';
      pid[strcspn (pid, "\n")] = '\0';
      log_error ("cache %s is in use by another process (pid %s, lock %s): only one ferry "
                 "may use a cache at a time; stop it or use another cache",
                 c->image_path, *pid ? pid : "unknown", c->lock_path);
    } else
      log_error ("%s: flock: %s", c->lock_path, strerror (err));
    close (c->lock_fd);
    c->lock_fd = -1;
    return -1;
  }
  lock_note_pid (c);
  return 0;
}

/* The pids of the processes other than this descriptor of ours that have the file of
 * *ST open, as "123, 456" in BUF ("unknown" if none can be seen).
 */
static void
find_holders (const struct stat *st, char *buf, size_t len)
{
  DIR *proc = opendir ("/proc");
  struct dirent *p;
  size_t used = 0;

  buf[0] = '\0';
  while (proc && (p = readdir (proc)) != NULL) {
    char path[600];
    DIR *fds;
    struct dirent *f;
    bool found = false;

    if (p->d_name[0] < '1' || p->d_name[0] > '9')
      continue;
    snprintf (path, sizeof path, "/proc/%s/fd", p->d_name);
    if ((fds = opendir (path)) == NULL)
      continue;
    while (!found && (f = readdir (fds)) != NULL) {
      struct stat fst;
      if (f->d_name[0] == '.')
        continue;
      snprintf (path, sizeof path, "/proc/%s/fd/%s", p->d_name, f->d_name);
      found = stat (path, &fst) == 0 && fst.st_dev == st->st_dev &&
              fst.st_ino == st->st_ino && fst.st_rdev == st->st_rdev;
    }
    closedir (fds);
    /* Not ourselves: we have it open too, through the descriptor being refused. */
    if (found && atol (p->d_name) == (long)getpid ())
      found = false;
    if (found && used + strlen (p->d_name) + 3 < len)
      used += snprintf (buf + used, len - used, "%s%s", used ? ", " : "", p->d_name);
  }
  if (proc)
    closedir (proc);
  if (used == 0)
    snprintf (buf, len, "unknown");
}

int
lock_image (struct dcache *c)
{
  struct stat st;
  char holders[128];
  int err;

  if (flock (c->image_fd, LOCK_EX | LOCK_NB) == 0)
    return 0;
  err = errno;
  if (err != EWOULDBLOCK) {
    log_error ("%s: flock: %s", c->image_path, strerror (err));
    return -1;
  }
  if (fstat (c->image_fd, &st) == 0)
    find_holders (&st, holders, sizeof holders);
  else
    snprintf (holders, sizeof holders, "unknown");
  log_error ("cache image %s is in use by another process (pid %s) with another metadata "
             "file than %s: only one ferry may write an image at a time; stop it or use "
             "another image",
             c->image_path, holders, c->meta_path);
  return -1;
}

void
lock_release (struct dcache *c)
{
  if (c->lock_fd == -1)
    return;
  /* Leave the file: unlinking it would race with a new opener locking the old inode. */
  if (ftruncate (c->lock_fd, 0) == -1)
    log_debug ("%s: ftruncate: %m", c->lock_path);
  close (c->lock_fd);
  c->lock_fd = -1;
}
