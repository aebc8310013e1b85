/* ferry: one process per cache — an flock on META.lock, which holds the holder's pid.
 *
 * flock locks belong to the open file description: they survive nbdkit's fork into the
 * background (the child inherits the descriptor) and vanish when the holder dies, even
 * by SIGKILL, so a crashed run never blocks the next one.  The pid in the file is only
 * for the message; the lock is what counts.
 *
 * State: c->lock_fd, held from dcache_open to dcache_close.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
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
  c->lock_fd = open (c->lock_path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
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
