/* SPDX-License-Identifier: Apache-2.0 */
/* ferry: the diskcache unit tests' fixture (dcache-fixture.h): the I/O seam, the errors
 * the cache logs, a fake source and a directory per test.
 *
 * THREAD MODEL: the cache's fill workers call the wrapped functions concurrently, so the
 * record of ops is kept under io.lock; everything else runs in the test's thread.
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/falloc.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "dcache-fixture.h"

/* ---- the I/O seam ---- */

char dir[] = "/tmp/test-dcache.XXXXXX";
char image[64], meta[64];

struct io_log io = { .lock = PTHREAD_MUTEX_INITIALIZER };

/* Which of the cache's files FD is, or -1. */
static int
file_of (int fd)
{
  char link[64], target[128];
  ssize_t n;

  snprintf (link, sizeof link, "/proc/self/fd/%d", fd);
  n = readlink (link, target, sizeof target - 1);
  if (n <= 0)
    return -1;
  target[n] = '\0';
  return strcmp (target, image) == 0 ? F_IMAGE : strcmp (target, meta) == 0 ? F_META : -1;
}

static void
record (int fd, int kind, uint64_t off, uint64_t len, const void *data)
{
  int file = file_of (fd);
  struct op *o;

  if (file == -1)
    return;
  pthread_mutex_lock (&io.lock);
  if (file == F_META && kind == OP_WRITE)
    io.meta_writes++;
  if (io.recording) {
    if (io.n == io.cap) {
      io.cap = io.cap ? 2 * io.cap : 256;
      io.ops = realloc (io.ops, io.cap * sizeof *io.ops);
    }
    o = &io.ops[io.n++];
    *o = (struct op){ file, kind, off, len, NULL };
    if (data) {
      o->data = malloc (len);
      memcpy (o->data, data, len);
    }
  }
  pthread_mutex_unlock (&io.lock);
}

ssize_t
__wrap_pwrite (int fd, const void *buf, size_t count, off_t offset)
{
  ssize_t r = __real_pwrite (fd, buf, count, offset);
  if (r > 0)
    record (fd, OP_WRITE, offset, r, buf);
  return r;
}

int
__wrap_fallocate (int fd, int mode, off_t offset, off_t len)
{
  int r = __real_fallocate (fd, mode, offset, len);
  if (r == 0 && (mode & (FALLOC_FL_PUNCH_HOLE | FALLOC_FL_ZERO_RANGE)))
    record (fd, OP_ZERO, offset, len, NULL);
  return r;
}

int
__wrap_ftruncate (int fd, off_t length)
{
  int r = __real_ftruncate (fd, length);
  if (r == 0)
    record (fd, OP_TRUNCATE, length, 0, NULL);
  return r;
}

static int
sync_common (int fd, int (*real) (int), bool data_only)
{
  if (data_only && io.fail_image_syncs > 0 && file_of (fd) == F_IMAGE) {
    io.fail_image_syncs--;
    errno = EIO;
    return -1;
  }
  if (real (fd) == -1)
    return -1;
  record (fd, OP_SYNC, 0, 0, NULL);
  return 0;
}

int
__wrap_fdatasync (int fd)
{
  return sync_common (fd, __real_fdatasync, true);
}

int
__wrap_fsync (int fd)
{
  return sync_common (fd, __real_fsync, false);
}

void
io_reset (void)
{
  for (size_t i = 0; i < io.n; i++)
    free (io.ops[i].data);
  free (io.ops);
  io.ops = NULL;
  io.n = io.cap = 0;
  io.recording = false;
  io.fail_image_syncs = 0;
}

/* Errors logged by the cache, for tests that check what it says. */
char errors[8192];

void
capture_error (const char *msg)
{
  size_t used = strlen (errors);
  fprintf (stderr, "ferry: %s\n", msg);
  snprintf (errors + used, sizeof errors - used, "%s\n", msg);
}

void
print_debug (const char *msg)
{
  if (getenv ("TEST_DCACHE_DEBUG"))
    fprintf (stderr, "ferry: debug: %s\n", msg);
}

/* ---- a fake source ---- */

static int
fake_read (void *opaque, void *buf, size_t count, uint64_t offset)
{
  struct fake *f = opaque;
  assert_true (offset + count <= f->capacity);
  memcpy (buf, f->data + offset, count);
  __atomic_add_fetch (&f->read_bytes, count, __ATOMIC_SEQ_CST);
  return 0;
}

int
fake_changed (void *opaque, const char *since, extent_vector *areas, char **why)
{
  struct fake *f = opaque;
  f->changed_calls++;
  if (f->verdict == 1) {
    *why = strdup ("InvalidArgument: unknown changeId");
    return 1;
  }
  for (size_t i = 0; i < f->changed.len; i++)
    extent_vector_append (areas, f->changed.ptr[i]);
  return 0;
}

static int
fake_allocated (void *opaque, extent_vector *areas, bool *known)
{
  struct fake *f = opaque;
  *known = f->known;
  for (size_t i = 0; i < f->allocated.len; i++)
    extent_vector_append (areas, f->allocated.ptr[i]);
  return 0;
}

const struct dcache_source_ops fake_ops = {
  .read = fake_read,
  .changed_areas = fake_changed,
  .allocated_areas = fake_allocated,
};

struct dcache_params
params (struct fake *f, const char *change_id)
{
  return (struct dcache_params){
    .image = image,
    .meta = meta,
    .vm_uuid = "4211-aaaa",
    .disk_id = "2000",
    .capacity = f->capacity,
    .change_id = change_id,
    .block_size = BS,
    .batch_bytes = 4 * BS,
    .request_max = 3 * BS,
  };
}

void
assert_image_equals (struct fake *f)
{
  uint8_t *buf = malloc (f->capacity);
  int fd = open (image, O_RDONLY);
  assert_true (fd >= 0);
  assert_int_equal (pread (fd, buf, f->capacity, 0), f->capacity);
  close (fd);
  assert_memory_equal (buf, f->data, f->capacity);
  free (buf);
}

struct fake *
new_fake (uint64_t capacity)
{
  struct fake *f = calloc (1, sizeof *f);
  f->capacity = capacity;
  f->data = malloc (capacity);
  for (uint64_t i = 0; i < capacity; i++)
    f->data[i] = rand ();
  return f;
}

void
free_fake (struct fake *f)
{
  extent_vector_reset (&f->changed);
  extent_vector_reset (&f->allocated);
  free (f->data);
  free (f);
}

int
setup_dir (void **state)
{
  strcpy (dir, "/tmp/test-dcache.XXXXXX");
  assert_non_null (mkdtemp (dir));
  snprintf (image, sizeof image, "%s/disk.img", dir);
  snprintf (meta, sizeof meta, "%s/disk.dcache", dir);
  return 0;
}

int
teardown_dir (void **state)
{
  char lock[80];
  snprintf (lock, sizeof lock, "%s.lock", meta);
  unlink (image);
  unlink (meta);
  unlink (lock);
  rmdir (dir);
  return 0;
}

uint64_t
fill_round (struct fake *f, const char *change_id, struct dcache_stats *st)
{
  struct dcache_params p = params (f, change_id);
  struct dcache *c;

  f->read_bytes = 0;
  c = dcache_open (&p, &fake_ops, f);
  assert_non_null (c);
  assert_int_equal (dcache_fill (c, 3, NULL, NULL), 0);
  dcache_get_stats (c, st);
  assert_int_equal (dcache_close (c), 0);
  assert_image_equals (f);
  return f->read_bytes;
}
