/* SPDX-License-Identifier: Apache-2.0 */
/* ferryfs: the FUSE operations of the read-only VM directory.
 *
 *   /                  the VM (0555)
 *   /disks/            one regular file per disk (0444), sized to the export
 *   /vm.json           the VM's metadata (built before mounting, constant)
 *   /inspection.json   libguestfs inspection: started by the first open, a "running"
 *                      document until it ends, then the result for the life of the mount
 *
 * Every callback returns -errno.  Anything that would change the tree or a file returns
 * EROFS (the mount is also "ro", so the kernel usually answers first; root can remount
 * it read-write, and then these answer).
 *
 * The inspection goes NOT_STARTED -> RUNNING (the first open of inspection.json starts a
 * thread, which runs it in a child process) -> DONE (the thread stored the result).  No
 * callback ever waits for it: the inspection reads the disks through this very mount, and
 * a callback that waited would hold one of the loop's threads for minutes, or for ever
 * once every thread waits.  An open takes a copy of the document of that moment, so a
 * reader never sees half of one and half of the other.
 *
 * THREAD MODEL: fuse_loop_mt calls these from several threads at once.  ferryfs_vm is
 * constant while mounted; disk reads go to the NBD pools (nbd.c locks its own state);
 * inspection_lock guards the inspection's state and document, and is held only to look
 * at them or swap them, never across the inspection.
 */
#define FUSE_USE_VERSION 312

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>

#include <fuse.h>

#include "common/cleanup.h"
#include "common/log.h"

#include "ferryfs.h"

#define VM_JSON "vm.json"
#define INSPECTION_JSON "inspection.json"

struct vm *ferryfs_vm;

enum node_kind {
  NODE_NONE,
  NODE_ROOT,
  NODE_DISKS_DIR,
  NODE_DISK,
  NODE_VM_JSON,
  NODE_INSPECTION,
};

enum inspection_state {
  INSPECTION_NOT_STARTED,
  INSPECTION_RUNNING,
  INSPECTION_DONE,
};

/* The copy of inspection.json an open file reads (fi->fh). */
struct document {
  size_t len;
  char data[];
};

/* Guarded by inspection_lock. */
static pthread_mutex_t inspection_lock = PTHREAD_MUTEX_INITIALIZER;
static enum inspection_state inspection_state;
static char *inspection; /* the current document; NULL before the first open */
static size_t inspection_len;
static bool inspection_thread_started; /* to be joined */
static pthread_t inspection_thread;

static time_t mount_time;

/* Maps PATH to a node; *DISK is the disk index for NODE_DISK. */
static enum node_kind
lookup (const char *path, size_t *disk)
{
  size_t i;

  if (strcmp (path, "/") == 0)
    return NODE_ROOT;
  if (strcmp (path, "/" VM_JSON) == 0)
    return NODE_VM_JSON;
  if (strcmp (path, "/" INSPECTION_JSON) == 0)
    return NODE_INSPECTION;
  if (strcmp (path, "/disks") == 0)
    return NODE_DISKS_DIR;
  if (strncmp (path, "/disks/", 7) != 0)
    return NODE_NONE;
  for (i = 0; i < ferryfs_vm->nr_disks; i++) {
    if (strcmp (path + 7, ferryfs_vm->disks[i].file) == 0) {
      *disk = i;
      return NODE_DISK;
    }
  }
  return NODE_NONE;
}

static size_t
inspection_size (void)
{
  ACQUIRE_LOCK_FOR_CURRENT_SCOPE (&inspection_lock);
  return inspection_len;
}

/* The document while the inspection runs. */
static char *
running_document (void)
{
  char started[64] = "";
  time_t now = time (NULL);
  struct tm tm;
  char *doc;

  if (gmtime_r (&now, &tm) != NULL)
    strftime (started, sizeof started, "%Y-%m-%dT%H:%M:%SZ", &tm);
  if (asprintf (&doc,
                "{\n"
                "  \"message\": \"libguestfs inspection of the disks is running (minutes "
                "without KVM); read this file again for its result\",\n"
                "  \"started\": \"%s\",\n"
                "  \"status\": \"running\"\n"
                "}\n",
                started) == -1)
    return NULL;
  return doc;
}

static void *
inspection_main (void *arg)
{
  char **paths = arg;
  size_t i, n = ferryfs_vm->nr_disks;
  char *doc = inspect_in_child (paths, n, ferryfs_shutdown_fd);

  for (i = 0; i < n; i++)
    free (paths[i]);
  free (paths);

  ACQUIRE_LOCK_FOR_CURRENT_SCOPE (&inspection_lock);
  if (doc == NULL) { /* out of memory or no process: the next open tries again */
    inspection_state = INSPECTION_NOT_STARTED;
    return NULL;
  }
  free (inspection);
  inspection = doc;
  inspection_len = strlen (doc);
  inspection_state = INSPECTION_DONE;
  return NULL;
}

/* Starts the inspection unless it runs or ran.  Call with inspection_lock held. */
static int
start_inspection (void)
{
  char **paths, *doc;
  size_t i, n = ferryfs_vm->nr_disks;
  int err;

  if (inspection_state != INSPECTION_NOT_STARTED)
    return 0;
  if (inspection_thread_started) { /* a previous attempt that failed */
    pthread_join (inspection_thread, NULL);
    inspection_thread_started = false;
  }
  paths = calloc (n + 1, sizeof *paths);
  doc = running_document ();
  if (paths == NULL || doc == NULL)
    goto nomem;
  for (i = 0; i < n; i++) {
    if (asprintf (&paths[i], "%s/disks/%s", ferryfs_vm->mountpoint,
                  ferryfs_vm->disks[i].file) == -1) {
      paths[i] = NULL;
      goto nomem;
    }
  }
  err = pthread_create (&inspection_thread, NULL, inspection_main, paths);
  if (err != 0) {
    log_error ("inspection: pthread_create: %s", strerror (err));
    for (i = 0; i < n; i++)
      free (paths[i]);
    free (paths);
    free (doc);
    return -err;
  }
  inspection_thread_started = true;
  inspection_state = INSPECTION_RUNNING;
  free (inspection);
  inspection = doc;
  inspection_len = strlen (doc);
  return 0;

nomem:
  for (i = 0; paths && i < n; i++)
    free (paths[i]);
  free (paths);
  free (doc);
  return -ENOMEM;
}

/* For an open of inspection.json: starts the inspection and copies the document. */
static int
open_inspection (struct document **copy)
{
  ACQUIRE_LOCK_FOR_CURRENT_SCOPE (&inspection_lock);
  int r = start_inspection ();

  if (r != 0)
    return r;
  *copy = malloc (sizeof **copy + inspection_len);
  if (*copy == NULL)
    return -ENOMEM;
  (*copy)->len = inspection_len;
  memcpy ((*copy)->data, inspection, inspection_len);
  return 0;
}

void
fs_wait_inspection (void)
{
  bool started;

  {
    ACQUIRE_LOCK_FOR_CURRENT_SCOPE (&inspection_lock);
    started = inspection_thread_started;
    inspection_thread_started = false;
  }
  if (started)
    pthread_join (inspection_thread, NULL);
}

static void *
fs_init (struct fuse_conn_info *conn, struct fuse_config *cfg)
{
  cfg->use_ino = 0;
  cfg->nullpath_ok = 0;
  /* The disks do not change under a mount: cache attributes and data in the kernel. */
  cfg->entry_timeout = 60;
  cfg->attr_timeout = 1;
  mount_time = time (NULL);
  return NULL;
}

static int
fs_getattr (const char *path, struct stat *st, struct fuse_file_info *fi)
{
  size_t disk = 0;
  enum node_kind kind = lookup (path, &disk);

  memset (st, 0, sizeof *st);
  st->st_uid = getuid ();
  st->st_gid = getgid ();
  st->st_atime = st->st_mtime = st->st_ctime = mount_time;
  st->st_blksize = 65536;
  switch (kind) {
    case NODE_NONE:
      return -ENOENT;
    case NODE_ROOT:
    case NODE_DISKS_DIR:
      st->st_mode = S_IFDIR | 0555;
      st->st_nlink = kind == NODE_ROOT ? 3 : 2;
      return 0;
    case NODE_DISK:
      st->st_size = pool_size (ferryfs_vm->disks[disk].pool);
      break;
    case NODE_VM_JSON:
      st->st_size = ferryfs_vm->vm_json_len;
      break;
    case NODE_INSPECTION:
      st->st_size = inspection_size ();
      break;
  }
  st->st_mode = S_IFREG | 0444;
  st->st_nlink = 1;
  st->st_blocks = (st->st_size + 511) / 512;
  return 0;
}

static int
fs_readdir (const char *path, void *buf, fuse_fill_dir_t filler, off_t offset,
            struct fuse_file_info *fi, enum fuse_readdir_flags flags)
{
  size_t disk = 0, i;

  switch (lookup (path, &disk)) {
    case NODE_ROOT:
      filler (buf, ".", NULL, 0, 0);
      filler (buf, "..", NULL, 0, 0);
      filler (buf, "disks", NULL, 0, 0);
      filler (buf, VM_JSON, NULL, 0, 0);
      filler (buf, INSPECTION_JSON, NULL, 0, 0);
      return 0;
    case NODE_DISKS_DIR:
      filler (buf, ".", NULL, 0, 0);
      filler (buf, "..", NULL, 0, 0);
      for (i = 0; i < ferryfs_vm->nr_disks; i++)
        filler (buf, ferryfs_vm->disks[i].file, NULL, 0, 0);
      return 0;
    case NODE_NONE:
      return -ENOENT;
    default:
      return -ENOTDIR;
  }
}

static int
fs_open (const char *path, struct fuse_file_info *fi)
{
  size_t disk = 0;
  enum node_kind kind = lookup (path, &disk);
  int r;

  if (kind == NODE_NONE)
    return -ENOENT;
  if (kind == NODE_ROOT || kind == NODE_DISKS_DIR)
    return -EISDIR;
  if ((fi->flags & O_ACCMODE) != O_RDONLY || (fi->flags & O_TRUNC))
    return -EROFS;
  fi->fh = kind == NODE_DISK ? disk : 0;
  if (kind == NODE_INSPECTION) {
    struct document *copy;

    /* Its size changes when the result comes: read it directly, not through i_size. */
    fi->direct_io = 1;
    r = open_inspection (&copy);
    if (r != 0)
      return r;
    fi->fh = (uintptr_t)copy;
  }
  return 0;
}

static int
fs_release (const char *path, struct fuse_file_info *fi)
{
  size_t disk = 0;

  if (lookup (path, &disk) == NODE_INSPECTION)
    free ((struct document *)(uintptr_t)fi->fh);
  return 0;
}

static int
copy_out (const char *data, size_t len, char *buf, size_t size, off_t offset)
{
  if (offset < 0 || (size_t)offset >= len)
    return 0;
  if (size > len - offset)
    size = len - offset;
  memcpy (buf, data + offset, size);
  return (int)size;
}

static int
fs_read (const char *path, char *buf, size_t size, off_t offset, struct fuse_file_info *fi)
{
  size_t disk = 0;
  int64_t disk_size;
  int r;

  switch (lookup (path, &disk)) {
    case NODE_VM_JSON:
      return copy_out (ferryfs_vm->vm_json, ferryfs_vm->vm_json_len, buf, size, offset);
    case NODE_INSPECTION: {
      const struct document *doc = (const struct document *)(uintptr_t)fi->fh;

      return copy_out (doc->data, doc->len, buf, size, offset);
    }
    case NODE_DISK:
      break;
    case NODE_NONE:
      return -ENOENT;
    default:
      return -EISDIR;
  }

  disk_size = pool_size (ferryfs_vm->disks[disk].pool);
  if (offset < 0)
    return -EINVAL;
  if (offset >= disk_size || size == 0)
    return 0;
  if ((int64_t)size > disk_size - offset)
    size = disk_size - offset;
  r = pool_pread (ferryfs_vm->disks[disk].pool, buf, size, offset);
  return r == 0 ? (int)size : r;
}

static off_t
fs_lseek (const char *path, off_t off, int whence, struct fuse_file_info *fi)
{
  size_t disk = 0, len;

  if (whence != SEEK_DATA && whence != SEEK_HOLE)
    return -EINVAL; /* the kernel answers the others itself */
  switch (lookup (path, &disk)) {
    case NODE_DISK:
      return pool_seek (ferryfs_vm->disks[disk].pool, off, whence);
    case NODE_VM_JSON:
    case NODE_INSPECTION:
      if (lookup (path, &disk) == NODE_VM_JSON)
        len = ferryfs_vm->vm_json_len;
      else if (fi != NULL)
        len = ((const struct document *)(uintptr_t)fi->fh)->len;
      else
        len = inspection_size ();
      if (off < 0 || (size_t)off >= len)
        return -ENXIO;
      return whence == SEEK_DATA ? off : (off_t)len;
    case NODE_NONE:
      return -ENOENT;
    default:
      return -EISDIR;
  }
}

static int
fs_statfs (const char *path, struct statvfs *sv)
{
  uint64_t total = 0;
  size_t i;

  for (i = 0; i < ferryfs_vm->nr_disks; i++)
    total += pool_size (ferryfs_vm->disks[i].pool);
  memset (sv, 0, sizeof *sv);
  sv->f_bsize = sv->f_frsize = 4096;
  sv->f_blocks = (total + 4095) / 4096;
  sv->f_files = ferryfs_vm->nr_disks + 4;
  sv->f_namemax = 255;
  sv->f_flag = ST_RDONLY;
  return 0;
}

/* Everything that would change something. */
static int
fs_write (const char *path, const char *buf, size_t size, off_t off,
          struct fuse_file_info *fi)
{
  return -EROFS;
}

static int
fs_truncate (const char *path, off_t size, struct fuse_file_info *fi)
{
  return -EROFS;
}

static int
fs_chmod (const char *path, mode_t mode, struct fuse_file_info *fi)
{
  return -EROFS;
}

static int
fs_chown (const char *path, uid_t uid, gid_t gid, struct fuse_file_info *fi)
{
  return -EROFS;
}

static int
fs_create (const char *path, mode_t mode, struct fuse_file_info *fi)
{
  return -EROFS;
}

static int
fs_mknod (const char *path, mode_t mode, dev_t rdev)
{
  return -EROFS;
}

static int
fs_mkdir (const char *path, mode_t mode)
{
  return -EROFS;
}

static int
fs_unlink (const char *path)
{
  return -EROFS;
}

static int
fs_rename (const char *from, const char *to, unsigned int flags)
{
  return -EROFS;
}

static int
fs_link (const char *from, const char *to)
{
  return -EROFS;
}

static int
fs_utimens (const char *path, const struct timespec tv[2], struct fuse_file_info *fi)
{
  return -EROFS;
}

static int
fs_setxattr (const char *path, const char *name, const char *value, size_t size, int flags)
{
  return -EROFS;
}

static int
fs_removexattr (const char *path, const char *name)
{
  return -EROFS;
}

static int
fs_fallocate (const char *path, int mode, off_t off, off_t len, struct fuse_file_info *fi)
{
  return -EROFS;
}

const struct fuse_operations ferryfs_operations = {
  .init = fs_init,
  .getattr = fs_getattr,
  .readdir = fs_readdir,
  .open = fs_open,
  .release = fs_release,
  .read = fs_read,
  .lseek = fs_lseek,
  .statfs = fs_statfs,
  .write = fs_write,
  .truncate = fs_truncate,
  .chmod = fs_chmod,
  .chown = fs_chown,
  .create = fs_create,
  .mknod = fs_mknod,
  .mkdir = fs_mkdir,
  .unlink = fs_unlink,
  .rmdir = fs_unlink,
  .symlink = fs_link,
  .rename = fs_rename,
  .link = fs_link,
  .utimens = fs_utimens,
  .setxattr = fs_setxattr,
  .removexattr = fs_removexattr,
  .fallocate = fs_fallocate,
};
