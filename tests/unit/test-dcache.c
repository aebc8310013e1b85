/* SPDX-License-Identifier: Apache-2.0 */
/* ferry: unit tests of diskcache — the bitmap, run coalescing, metadata encoding and
 * validation, the invalidation math, the open policy against a fake source, the binding
 * of metadata to its image, sync failures, and crash consistency under power loss.
 *
 * The image and metadata I/O goes through a seam: pwrite, fallocate, ftruncate,
 * fdatasync and fsync are wrapped (-Wl,--wrap, tests/unit/test-dcache.wrap) so that a test
 * can record every write and sync to the cache's two files (and replay the durable ones
 * as a power loss would leave them), or make an fdatasync fail.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <linux/falloc.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <openssl/evp.h>

#include "common/cleanup.h"
#include "common/log.h"
#include "diskcache/dcache-internal.h"

#define BS 65536u
#define KiB UINT64_C (1024)

/* ---- the I/O seam ---- */

static char dir[] = "/tmp/test-dcache.XXXXXX";
static char image[64], meta[64];

enum { F_IMAGE, F_META, NFILES };
enum { OP_WRITE, OP_ZERO, OP_TRUNCATE, OP_SYNC };
struct op {
  int file, kind;
  uint64_t off, len;
  uint8_t *data;
};
static struct {
  pthread_mutex_t lock;
  bool recording;
  struct op *ops;
  size_t n, cap;
  int fail_image_syncs; /* fdatasync on the image fails with EIO this many times */
  unsigned meta_writes; /* pwrites to the metadata file, always counted */
} io = { .lock = PTHREAD_MUTEX_INITIALIZER };

ssize_t __real_pwrite (int fd, const void *buf, size_t count, off_t offset);
int __real_fdatasync (int fd);
int __real_fsync (int fd);
int __real_fallocate (int fd, int mode, off_t offset, off_t len);
int __real_ftruncate (int fd, off_t length);

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

static void
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
static char errors[8192];

static void
capture_error (const char *msg)
{
  size_t used = strlen (errors);
  fprintf (stderr, "ferry: %s\n", msg);
  snprintf (errors + used, sizeof errors - used, "%s\n", msg);
}

static void
print_debug (const char *msg)
{
  if (getenv ("TEST_DCACHE_DEBUG"))
    fprintf (stderr, "ferry: debug: %s\n", msg);
}

/* ---- the bitmap ---- */

static void
test_bitmap_ranges (void **state)
{
  uint8_t bm[8] = { 0 };

  bm_set_range (bm, 3, 20, true);
  assert_int_equal (bm_count (bm, 64), 20);
  assert_false (bm_get (bm, 2));
  assert_true (bm_get (bm, 3));
  assert_true (bm_get (bm, 22));
  assert_false (bm_get (bm, 23));
  assert_int_equal (bm_find (bm, 0, 64, true), 3);
  assert_int_equal (bm_find (bm, 3, 64, false), 23);
  assert_int_equal (bm_find (bm, 23, 64, true), 64);
  bm_set_range (bm, 8, 8, false); /* a whole byte */
  assert_int_equal (bm_count (bm, 64), 12);
  assert_int_equal (bm_find (bm, 4, 64, false), 8);
  assert_int_equal (bm_find (bm, 8, 64, true), 16);
  assert_int_equal (bm_bytes (0), 0);
  assert_int_equal (bm_bytes (9), 2);
}

/* ---- invalidation math: areas -> blocks ---- */

static void
test_areas_to_blocks (void **state)
{
  uint8_t bm[4];
  extent_vector areas = empty_vector;
  uint64_t first, end;

  memset (bm, 0xff, sizeof bm);
  /* Inside one block; straddling 2|3; the last partial block; past the end. */
  extent_vector_append (&areas, (struct extent){ 100, 10 });
  extent_vector_append (&areas, (struct extent){ 3 * BS - 1, 2 });
  extent_vector_append (&areas, (struct extent){ 29 * BS + 5, 1 });
  extent_vector_append (&areas, (struct extent){ 31 * BS, 10 * BS });
  assert_int_equal (bm_apply_areas (bm, 30, BS, &areas, false), 4);
  assert_false (bm_get (bm, 0));
  assert_true (bm_get (bm, 1));
  assert_false (bm_get (bm, 2));
  assert_false (bm_get (bm, 3));
  assert_true (bm_get (bm, 4));
  assert_false (bm_get (bm, 29));
  /* Clearing again changes nothing. */
  assert_int_equal (bm_apply_areas (bm, 30, BS, &areas, false), 0);
  extent_vector_reset (&areas);

  blocks_of_range (BS, BS, BS, 30, &first, &end);
  assert_int_equal (first, 1);
  assert_int_equal (end, 2);
  blocks_of_range (BS - 1, 2, BS, 30, &first, &end);
  assert_int_equal (first, 0);
  assert_int_equal (end, 2);
  blocks_of_range (100 * BS, 1, BS, 30, &first, &end);
  assert_int_equal (first, 30);
  assert_int_equal (end, 30);
  blocks_of_range (5 * BS, 0, BS, 30, &first, &end);
  assert_int_equal (end - first, 0);
}

/* ---- coalescing invalid blocks into runs ---- */

static void
test_next_run (void **state)
{
  uint8_t valid[4] = { 0 }, busy[4] = { 0 }, alloc[4] = { 0 };
  uint64_t first, n;
  bool allocated;

  /* blocks 0-31: 0..9 valid, 10..19 allocated, 14 busy, 20.. unallocated */
  bm_set_range (valid, 0, 10, true);
  bm_set_range (alloc, 0, 20, true);
  bm_set_range (busy, 14, 1, true);
  assert_true (next_run (valid, busy, alloc, 0, 32, 100, &first, &n, &allocated));
  assert_int_equal (first, 10);
  assert_int_equal (n, 4); /* stops at the busy block */
  assert_true (allocated);
  assert_true (next_run (valid, busy, alloc, 14, 32, 100, &first, &n, &allocated));
  assert_int_equal (first, 15);
  assert_int_equal (n, 5); /* stops where the allocation class changes */
  assert_true (next_run (valid, busy, alloc, 20, 32, 100, &first, &n, &allocated));
  assert_int_equal (first, 20);
  assert_int_equal (n, 12);
  assert_false (allocated);
  /* The size limit bounds fetches; a zero run is one call however long; the end. */
  assert_true (next_run (valid, busy, alloc, 15, 32, 2, &first, &n, &allocated));
  assert_int_equal (n, 2);
  assert_true (next_run (valid, busy, alloc, 20, 32, 5, &first, &n, &allocated));
  assert_int_equal (n, 12);
  assert_true (next_run (valid, busy, alloc, 20, 22, 100, &first, &n, &allocated));
  assert_int_equal (n, 2);
  /* Without an allocation map everything is data and runs merge. */
  assert_true (next_run (valid, busy, NULL, 15, 32, 100, &first, &n, &allocated));
  assert_int_equal (n, 17);
  assert_true (allocated);
  bm_set_range (valid, 0, 32, true);
  assert_false (next_run (valid, busy, alloc, 0, 32, 100, &first, &n, &allocated));
}

/* ---- metadata encode/decode/validation ---- */

static struct dcache_meta
sample_meta (void)
{
  struct dcache_meta m = {
    .version = META_VERSION,
    .block_size = BS,
    .generation = 7,
    .capacity = 20 * BS + 512,
    .nblocks = 21,
  };
  strcpy (m.vm_uuid, "4211-aaaa");
  strcpy (m.disk_id, "2000");
  strcpy (m.disk_uuid, "6000C29a");
  strcpy (m.change_id, "52 de 00 11 22 33 44 55-66 77 88 99 aa bb cc dd/5");
  return m;
}

static void
test_meta_roundtrip (void **state)
{
  struct dcache_meta m = sample_meta (), out;
  uint8_t header[META_HEADER_SIZE], bitmap[3] = { 0x0f, 0xf0, 0x01 };
  char why[256];

  assert_int_equal (meta_encode (&m, bitmap, header, why, sizeof why), 0);
  assert_int_equal (meta_peek_nblocks (header), 21);
  assert_int_equal (meta_decode (header, bitmap, sizeof bitmap, &out, why, sizeof why), 0);
  assert_int_equal (out.generation, 7);
  assert_int_equal (out.capacity, 20 * BS + 512);
  assert_string_equal (out.change_id, m.change_id);
  assert_string_equal (out.disk_uuid, "6000C29a");

  /* Layout: both bitmaps and the checksums fit, 4 KiB aligned. */
  assert_int_equal (meta_bitmap_offset (0, 21), 8192);
  assert_int_equal (meta_bitmap_offset (1, 21), 8192 + 4096);
  assert_int_equal (meta_file_size (21), 8192 + 2 * 4096 + 4096);
  assert_int_equal (meta_file_size (128), 8192 + 2 * 4096 + 2 * 4096);
  assert_int_equal (meta_bitmap_area (4096 * 8 + 1), 8192);
}

static void
test_meta_validation (void **state)
{
  struct dcache_meta m = sample_meta (), out;
  uint8_t header[META_HEADER_SIZE], copy[META_HEADER_SIZE];
  uint8_t bitmap[3] = { 0x0f, 0xf0, 0x01 }, bad[3];
  char why[256];

  assert_int_equal (meta_encode (&m, bitmap, header, why, sizeof why), 0);

  /* A flipped bit anywhere in the header or the bitmap. */
  for (size_t i = 0; i < META_HEADER_SIZE; i += 97) {
    memcpy (copy, header, sizeof copy);
    copy[i] ^= 0x10;
    assert_int_equal (meta_decode (copy, bitmap, sizeof bitmap, &out, why, sizeof why), -1);
  }
  memcpy (bad, bitmap, 3);
  bad[1] ^= 1;
  assert_int_equal (meta_decode (header, bad, sizeof bad, &out, why, sizeof why), -1);
  assert_non_null (strstr (why, "checksum"));
  /* Truncated bitmap. */
  assert_int_equal (meta_decode (header, bitmap, 2, &out, why, sizeof why), -1);
  assert_non_null (strstr (why, "truncated"));
  /* A zeroed (never written) header. */
  memset (copy, 0, sizeof copy);
  assert_int_equal (meta_decode (copy, bitmap, sizeof bitmap, &out, why, sizeof why), -1);
  assert_non_null (strstr (why, "magic"));
  /* Inconsistent fields, even with a correct checksum. */
  m.nblocks = 20;
  assert_int_equal (meta_encode (&m, bitmap, header, why, sizeof why), 0);
  assert_int_equal (meta_decode (header, bitmap, sizeof bitmap, &out, why, sizeof why), -1);
  assert_non_null (strstr (why, "do not cover"));
  m = sample_meta ();
  m.block_size = 65535;
  assert_int_equal (meta_encode (&m, bitmap, header, why, sizeof why), 0);
  assert_int_equal (meta_decode (header, bitmap, sizeof bitmap, &out, why, sizeof why), -1);
  /* Bits past the last block. */
  m = sample_meta ();
  memcpy (bad, bitmap, 3);
  bad[2] |= 0x80;
  assert_int_equal (meta_encode (&m, bad, header, why, sizeof why), 0);
  assert_int_equal (meta_decode (header, bad, sizeof bad, &out, why, sizeof why), -1);
  /* Another version. */
  m = sample_meta ();
  assert_int_equal (meta_encode (&m, bitmap, header, why, sizeof why), 0);
  header[8] = 99;
  assert_int_equal (meta_decode (header, bitmap, sizeof bitmap, &out, why, sizeof why), -1);
  assert_non_null (strstr (why, "version"));
}

/* ---- the open policy against a fake source ---- */

struct fake {
  uint64_t capacity;
  uint8_t *data;
  extent_vector changed;
  int verdict; /* 0: answer with CHANGED; 1: cannot answer */
  int changed_calls;
  extent_vector allocated; /* empty + known = all unallocated */
  bool known;
  uint64_t read_bytes;
};

static int
fake_read (void *opaque, void *buf, size_t count, uint64_t offset)
{
  struct fake *f = opaque;
  assert_true (offset + count <= f->capacity);
  memcpy (buf, f->data + offset, count);
  __atomic_add_fetch (&f->read_bytes, count, __ATOMIC_SEQ_CST);
  return 0;
}

static int
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

static const struct dcache_source_ops fake_ops = {
  .read = fake_read,
  .changed_areas = fake_changed,
  .allocated_areas = fake_allocated,
};

static struct dcache_params
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

static void
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

static struct fake *
new_fake (uint64_t capacity)
{
  struct fake *f = calloc (1, sizeof *f);
  f->capacity = capacity;
  f->data = malloc (capacity);
  for (uint64_t i = 0; i < capacity; i++)
    f->data[i] = rand ();
  return f;
}

static void
free_fake (struct fake *f)
{
  extent_vector_reset (&f->changed);
  extent_vector_reset (&f->allocated);
  free (f->data);
  free (f);
}

static int
setup_dir (void **state)
{
  strcpy (dir, "/tmp/test-dcache.XXXXXX");
  assert_non_null (mkdtemp (dir));
  snprintf (image, sizeof image, "%s/disk.img", dir);
  snprintf (meta, sizeof meta, "%s/disk.dcache", dir);
  return 0;
}

static int
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

static uint64_t
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

static void
test_policy_rounds (void **state)
{
  struct fake *f = new_fake (40 * BS + 4096); /* a partial last block */
  struct dcache_stats st;
  const char *id1 = "52 aa/1", *id2 = "52 aa/2";

  /* Round 1: everything. */
  assert_int_equal (fill_round (f, id1, &st), f->capacity);
  assert_true (st.full_refetch);
  /* Round 2: the guest changed blocks 3 and 17-18; only those are fetched. */
  memset (f->data + 3 * BS + 10, 0xab, 100);
  memset (f->data + 17 * BS + BS - 5, 0xcd, 10);
  extent_vector_append (&f->changed, (struct extent){ 3 * BS, BS });
  extent_vector_append (&f->changed, (struct extent){ 17 * BS, 2 * BS });
  assert_int_equal (fill_round (f, id2, &st), 3 * BS);
  assert_false (st.full_refetch);
  assert_int_equal (st.invalidated_bytes, 3 * BS);
  /* Same change id again: nothing asked, nothing fetched. */
  f->changed_calls = 0;
  assert_int_equal (fill_round (f, id2, &st), 0);
  assert_int_equal (f->changed_calls, 0);
  /* The source cannot answer (CBT reset, unknown changeId): everything again. */
  f->verdict = 1;
  memset (f->data + 30 * BS, 0x11, 7);
  assert_int_equal (fill_round (f, "52 bb/1", &st), f->capacity);
  assert_true (st.full_refetch);
  f->verdict = 0;
  /* No change id now (CBT off): everything again. */
  assert_int_equal (fill_round (f, NULL, &st), f->capacity);
  free_fake (f);
}

static void
test_policy_identity (void **state)
{
  struct fake *f = new_fake (16 * BS);
  struct dcache_stats st;
  struct dcache_params p;
  struct dcache *c;

  assert_int_equal (fill_round (f, "52 aa/1", &st), f->capacity);
  /* Another disk in the same cache files: everything. */
  p = params (f, "52 aa/1");
  p.disk_id = "2001";
  f->read_bytes = 0;
  c = dcache_open (&p, &fake_ops, f);
  assert_non_null (c);
  assert_int_equal (dcache_fill (c, 2, NULL, NULL), 0);
  assert_int_equal (dcache_close (c), 0);
  assert_int_equal (f->read_bytes, f->capacity);
  free_fake (f);
}

/* Capacity change (the disk was extended): documented as a full refetch into a cache
 * re-laid out for the new size.
 */
static void
test_policy_capacity (void **state)
{
  struct fake *f = new_fake (16 * BS), *g;
  struct dcache_stats st;

  assert_int_equal (fill_round (f, "52 aa/1", &st), f->capacity);
  g = new_fake (24 * BS);
  memcpy (g->data, f->data, f->capacity);
  assert_int_equal (fill_round (g, "52 aa/2", &st), g->capacity);
  assert_true (st.full_refetch);
  free_fake (f);
  free_fake (g);
}

static void
corrupt (off_t offset, size_t len, int truncate_to)
{
  int fd = open (meta, O_RDWR);
  uint8_t junk[64];
  assert_true (fd >= 0);
  if (truncate_to >= 0)
    assert_int_equal (ftruncate (fd, truncate_to), 0);
  else {
    memset (junk, 0x5a, sizeof junk);
    assert_int_equal (pwrite (fd, junk, len, offset), (ssize_t)len);
  }
  close (fd);
}

static void
test_policy_corrupt_meta (void **state)
{
  struct fake *f = new_fake (16 * BS);
  struct dcache_stats st;

  assert_int_equal (fill_round (f, "52 aa/1", &st), f->capacity);
  /* One bad header: the other slot (an earlier generation) is used, nothing is stale. */
  memset (f->data + 5 * BS, 0x77, 10);
  extent_vector_append (&f->changed, (struct extent){ 5 * BS, 10 });
  corrupt (0, 64, -1);
  fill_round (f, "52 aa/2", &st);
  /* Both headers bad: everything. */
  corrupt (0, 64, -1);
  corrupt (4096 + 100, 8, -1);
  assert_int_equal (fill_round (f, "52 aa/2", &st), f->capacity);
  assert_true (st.full_refetch);
  /* Truncated: everything. */
  corrupt (0, 0, 5000);
  assert_int_equal (fill_round (f, "52 aa/2", &st), f->capacity);
  assert_true (st.full_refetch);
  corrupt (0, 0, 9000);
  assert_int_equal (fill_round (f, "52 aa/2", &st), f->capacity);
  /* A bitmap bit flipped: its slot fails its checksum. */
  corrupt (8192, 1, -1);
  corrupt (8192 + 4096, 1, -1);
  assert_int_equal (fill_round (f, "52 aa/2", &st), f->capacity);
  free_fake (f);
}

/* Reads: unallocated blocks are zeros and never fetched; allocated ones are fetched once
 * and then hit.  A second opener is refused.
 */
static void
test_reads_and_lock (void **state)
{
  struct fake *f = new_fake (32 * BS);
  struct dcache_params p = params (f, "52 aa/1");
  struct dcache *c, *c2;
  struct dcache_stats st;
  uint8_t buf[3 * BS];
  char digest[65];

  memset (f->data + 8 * BS, 0, 24 * BS);
  f->known = true;
  extent_vector_append (&f->allocated, (struct extent){ 0, 8 * BS });
  c = dcache_open (&p, &fake_ops, f);
  assert_non_null (c);
  c2 = dcache_open (&p, &fake_ops, f);
  assert_null (c2);
  assert_int_equal (dcache_pread (c, buf, 3 * BS, 7 * BS - 10), 0);
  assert_memory_equal (buf, f->data + 7 * BS - 10, 3 * BS);
  assert_int_equal (f->read_bytes, 2 * BS); /* blocks 6, 7; 8 and 9 zeroed */
  assert_int_equal (dcache_pread (c, buf, 100, 7 * BS), 0);
  dcache_get_stats (c, &st);
  assert_int_equal (st.hit_bytes, 100);
  assert_int_equal (st.miss_bytes, 3 * BS);
  assert_int_equal (st.zeroed_bytes, 2 * BS);
  assert_int_equal (dcache_digest (c, digest, sizeof digest), -1); /* not full yet */
  assert_int_equal (dcache_fill (c, 4, NULL, NULL), 0);
  assert_int_equal (f->read_bytes, 8 * BS);
  assert_int_equal (dcache_digest (c, digest, sizeof digest), 0);
  assert_int_equal (strlen (digest), 64);
  assert_int_equal (dcache_close (c), 0);
  assert_image_equals (f);
  free_fake (f);
}

/* ---- the metadata is bound to its image ---- */

/* The digest a user computes from the disk's bytes: SHA-256 over each block's SHA-256. */
static void
expected_digest (const uint8_t *data, uint64_t capacity, uint32_t bs, char *hex)
{
  EVP_MD_CTX *ctx = EVP_MD_CTX_new ();
  uint8_t h[32], sum[32];
  unsigned n = 32;

  EVP_DigestInit_ex (ctx, EVP_sha256 (), NULL);
  for (uint64_t off = 0; off < capacity; off += bs) {
    unsigned hn = 32;
    EVP_Digest (data + off, capacity - off < bs ? capacity - off : bs, h, &hn,
                EVP_sha256 (), NULL);
    EVP_DigestUpdate (ctx, h, 32);
  }
  EVP_DigestFinal_ex (ctx, sum, &n);
  EVP_MD_CTX_free (ctx);
  for (int i = 0; i < 32; i++)
    sprintf (hex + 2 * i, "%02x", sum[i]);
}

/* Open at CHANGE_ID with VERIFY, fill, and return the stats of the open; the image must
 * then equal the source.
 */
static uint64_t
reopen_fill (struct fake *f, const char *change_id, bool verify, struct dcache_stats *st)
{
  struct dcache_params p = params (f, change_id);
  struct dcache *c;

  p.verify = verify;
  f->read_bytes = 0;
  c = dcache_open (&p, &fake_ops, f);
  assert_non_null (c);
  dcache_get_stats (c, st);
  assert_int_equal (dcache_fill (c, 2, NULL, NULL), 0);
  assert_int_equal (dcache_close (c), 0);
  assert_image_equals (f);
  return f->read_bytes;
}

static void
punch (const char *path, uint64_t offset, uint64_t len)
{
  int fd = open (path, O_RDWR);
  assert_true (fd >= 0);
  assert_int_equal (fallocate (fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, offset, len),
                    0);
  close (fd);
}

static void
copy_file (const char *from, const char *to, bool in_place)
{
  int in = open (from, O_RDONLY);
  int out = open (to, in_place ? O_WRONLY : O_WRONLY | O_CREAT | O_TRUNC, 0600);
  char buf[65536];
  ssize_t n;
  off_t off = 0;

  assert_true (in >= 0 && out >= 0);
  while ((n = read (in, buf, sizeof buf)) > 0) {
    assert_int_equal (pwrite (out, buf, n, off), n);
    off += n;
  }
  close (in);
  close (out);
}

/* Each way the image can stop being the one the metadata describes makes every block
 * invalid: the next fill fetches the whole disk and the image equals the source.
 */
static void
test_image_identity (void **state)
{
  struct fake *f = new_fake (40 * BS), *g = new_fake (40 * BS);
  struct dcache_stats st;
  const char *id = "52 aa/1";
  char other_image[80], other_meta[80], lock[90];
  struct dcache_params p;
  struct dcache *c;

  assert_int_equal (fill_round (f, id, &st), f->capacity);
  /* Untouched: nothing is fetched, nothing is a mismatch. */
  assert_int_equal (reopen_fill (f, id, true, &st), 0);
  assert_false (st.image_mismatch);

  /* Removed (a new empty file takes its place). */
  assert_int_equal (unlink (image), 0);
  assert_int_equal (reopen_fill (f, id, false, &st), f->capacity);
  assert_true (st.image_mismatch);
  assert_true (st.full_refetch);

  /* Truncated, to nothing and to half (the cache grows it back). */
  assert_int_equal (truncate (image, 0), 0);
  assert_int_equal (reopen_fill (f, id, false, &st), f->capacity);
  assert_true (st.image_mismatch);
  assert_int_equal (truncate (image, 20 * BS), 0);
  assert_int_equal (reopen_fill (f, id, false, &st), f->capacity);
  assert_true (st.image_mismatch);
  /* Truncated and grown back to its size: all holes now. */
  assert_int_equal (truncate (image, 0), 0);
  assert_int_equal (truncate (image, f->capacity), 0);
  assert_int_equal (reopen_fill (f, id, false, &st), f->capacity);
  assert_true (st.image_mismatch);

  /* One block hole-punched. */
  punch (image, 17 * BS, BS);
  assert_int_equal (reopen_fill (f, id, false, &st), f->capacity);
  assert_true (st.image_mismatch);

  /* Replaced by another cache's image (same disk identity, other bytes). */
  snprintf (other_image, sizeof other_image, "%s/other.img", dir);
  snprintf (other_meta, sizeof other_meta, "%s/other.dcache", dir);
  snprintf (lock, sizeof lock, "%s.lock", other_meta);
  p = params (g, id);
  p.image = other_image;
  p.meta = other_meta;
  c = dcache_open (&p, &fake_ops, g);
  assert_non_null (c);
  assert_int_equal (dcache_fill (c, 2, NULL, NULL), 0);
  assert_int_equal (dcache_close (c), 0);
  copy_file (other_image, image, true); /* its bytes written over ours, in place */
  assert_int_equal (reopen_fill (f, id, false, &st), f->capacity);
  assert_true (st.image_mismatch);
  assert_int_equal (rename (other_image, image), 0); /* the other file moved in */
  assert_int_equal (reopen_fill (f, id, false, &st), f->capacity);
  assert_true (st.image_mismatch);

  /* A copy of the image without its cache id (another inode): a mismatch. */
  copy_file (image, other_image, false);
  assert_int_equal (rename (other_image, image), 0);
  assert_int_equal (reopen_fill (f, id, false, &st), f->capacity);
  assert_true (st.image_mismatch);
  unlink (other_meta);
  unlink (lock);
  free_fake (f);
  free_fake (g);
}

/* With verify, one changed byte in one block of many is found; without it only a sample
 * is read (which may miss it), so the test asks for verify.  A hole where data was is
 * found either way.
 */
static void
test_image_verify (void **state)
{
  struct fake *f = new_fake (300 * BS);
  struct dcache_stats st;
  uint8_t x;
  int fd;

  assert_int_equal (fill_round (f, "52 aa/1", &st), f->capacity);
  /* One block of 300 hole-punched is found without verify (the sample alone would
   * likely miss it): valid data blocks may not be holes.
   */
  punch (image, 100 * BS, BS);
  assert_int_equal (reopen_fill (f, "52 aa/1", false, &st), f->capacity);
  assert_true (st.image_mismatch);
  fd = open (image, O_RDWR);
  x = f->data[211 * BS + 5] ^ 0xff; /* the image now differs from the source there */
  assert_int_equal (pwrite (fd, &x, 1, 211 * BS + 5), 1);
  close (fd);
  assert_int_equal (reopen_fill (f, "52 aa/1", true, &st), f->capacity);
  assert_true (st.image_mismatch);
  free_fake (f);
}

/* ---- hash pages: torn or corrupted ---- */

static void
test_hash_pages (void **state)
{
  struct fake *f = new_fake (300 * BS);
  struct dcache_stats st;
  struct dcache_params p = params (f, "52 aa/1");
  struct dcache *c;
  char digest[65], expect[65];
  uint64_t pages = meta_hash_offset (300);
  uint8_t zeros[512] = { 0 };
  int fd;

  assert_int_equal (fill_round (f, "52 aa/1", &st), f->capacity);
  fd = open (meta, O_RDWR);
  /* A bit flipped in page 1 (blocks 127-253); page 0 torn: its first sector lost. */
  assert_int_equal (pwrite (fd, "\x5a", 1, pages + 4096 + 300), 1);
  assert_int_equal (pwrite (fd, zeros, sizeof zeros, pages), (ssize_t)sizeof zeros);
  close (fd);
  assert_int_equal (reopen_fill (f, "52 aa/1", false, &st), 254 * BS);
  assert_int_equal (st.bad_hash_pages, 2);
  assert_false (st.full_refetch);
  /* The digest is the one computed from the source's bytes. */
  c = dcache_open (&p, &fake_ops, f);
  assert_non_null (c);
  assert_int_equal (dcache_digest (c, digest, sizeof digest), 0);
  expected_digest (f->data, f->capacity, BS, expect);
  assert_string_equal (digest, expect);
  /* Corrupted while open: the digest refuses rather than certify. */
  fd = open (meta, O_RDWR);
  assert_int_equal (pwrite (fd, "\x5a", 1, pages + 2 * 4096 + 10), 1);
  close (fd);
  errors[0] = '\0';
  assert_int_equal (dcache_digest (c, digest, sizeof digest), -1);
  assert_non_null (strstr (errors, "page 2"));
  assert_int_equal (dcache_close (c), 0);
  free_fake (f);
}

/* ---- locking and file modes ---- */

static void
test_image_lock_and_mode (void **state)
{
  struct fake *f = new_fake (8 * BS);
  struct dcache_params p = params (f, "52 aa/1");
  struct dcache *c;
  char other_meta[80], lock[90], expect[64];
  int ready[2], go[2];
  pid_t child;
  struct stat sb;
  char x;

  /* Cache files hold copies of VM disks: only their owner may read them. */
  umask (022);
  c = dcache_open (&p, &fake_ops, f);
  assert_non_null (c);
  assert_int_equal (dcache_close (c), 0);
  snprintf (lock, sizeof lock, "%s.lock", meta);
  assert_int_equal (stat (image, &sb), 0);
  assert_int_equal (sb.st_mode & 0777, 0600);
  assert_int_equal (stat (meta, &sb), 0);
  assert_int_equal (sb.st_mode & 0777, 0600);
  assert_int_equal (stat (lock, &sb), 0);
  assert_int_equal (sb.st_mode & 0777, 0600);

  /* Another process holds the image through another metadata file. */
  assert_int_equal (pipe (ready), 0);
  assert_int_equal (pipe (go), 0);
  child = fork ();
  assert_true (child >= 0);
  if (child == 0) {
    close (ready[0]);
    close (go[1]); /* so that the parent's end closing ends the wait */
    c = dcache_open (&p, &fake_ops, f);
    if (write (ready[1], c ? "y" : "n", 1) != 1 || read (go[0], &x, 1) != 1)
      _exit (1);
    _exit (0);
  }
  close (ready[1]);
  close (go[0]);
  ready[1] = go[0] = -1;
  assert_int_equal (read (ready[0], &x, 1), 1);
  assert_int_equal (x, 'y');
  snprintf (other_meta, sizeof other_meta, "%s/other.dcache", dir);
  p.meta = other_meta;
  errors[0] = '\0';
  c = dcache_open (&p, &fake_ops, f);
  assert_null (c);
  snprintf (expect, sizeof expect, "in use by another process (pid %d)", (int)child);
  assert_non_null (strstr (errors, expect));
  assert_non_null (strstr (errors, image));
  assert_int_equal (write (go[1], "x", 1), 1);
  assert_int_equal (waitpid (child, NULL, 0), child);
  /* The holder is gone: the image is free again (and its other metadata starts over). */
  c = dcache_open (&p, &fake_ops, f);
  assert_non_null (c);
  assert_int_equal (dcache_close (c), 0);
  unlink (other_meta);
  snprintf (lock, sizeof lock, "%s.lock", other_meta);
  unlink (lock);
  close (ready[0]);
  close (go[1]);
  free_fake (f);
}

/* ---- a failed fdatasync ---- */

/* Linux reports a writeback error once and may have dropped the pages: after it, no
 * validity may be persisted in this process, even when a later sync "succeeds".
 */
static void
test_sync_failure (void **state)
{
  struct fake *f = new_fake (32 * BS);
  struct dcache_params p = params (f, "52 aa/1");
  struct dcache_stats st;
  struct dcache *c;
  uint8_t buf[BS];

  c = dcache_open (&p, &fake_ops, f);
  assert_non_null (c);
  io.fail_image_syncs = 1;
  errors[0] = '\0';
  assert_int_equal (dcache_fill (c, 1, NULL, NULL), -1);
  assert_int_equal (io.fail_image_syncs, 0);
  assert_non_null (strstr (errors, "fdatasync"));
  /* The image may have lost data silently since: no read is served from it. */
  assert_int_equal (dcache_pread (c, buf, BS, 0), -1);
  assert_int_equal (dcache_flush (c), -1);
  assert_int_equal (dcache_close (c), -1);
  /* Nothing was certified on disk. */
  c = dcache_open (&p, &fake_ops, f);
  assert_non_null (c);
  dcache_get_stats (c, &st);
  assert_int_equal (st.valid_bytes, 0);
  assert_int_equal (dcache_close (c), 0);
  free_fake (f);
}
/* ---- crash consistency under power loss ---- */

/* How a power loss treats the writes that no completed sync covers. */
enum { DROP_ALL, KEEP_META, KEEP_IMAGE, NVARIANTS };
static const char *variant_name[] = { "all unsynced writes lost",
                                      "unsynced metadata writes kept",
                                      "unsynced image writes kept" };

/* The bytes of FILE that survive a power loss after the first K ops: every op followed
 * by a completed sync of that file, and the unsynced ones the variant keeps.
 */
static uint8_t *
durable (int file, size_t k, int variant, uint64_t *size)
{
  size_t synced = 0;
  uint8_t *buf = NULL;

  *size = 0;
  for (size_t i = 0; i < k; i++)
    if (io.ops[i].file == file && io.ops[i].kind == OP_SYNC)
      synced = i;
  for (size_t i = 0; i < k; i++) {
    const struct op *o = &io.ops[i];
    bool keep = i < synced || (variant == KEEP_META && file == F_META) ||
                (variant == KEEP_IMAGE && file == F_IMAGE);
    if (o->file != file || !keep)
      continue;
    if (o->kind == OP_TRUNCATE || (o->kind == OP_WRITE && o->off + o->len > *size)) {
      uint64_t n = o->kind == OP_TRUNCATE ? o->off : o->off + o->len;
      buf = realloc (buf, n ? n : 1);
      if (n > *size)
        memset (buf + *size, 0, n - *size);
      *size = n;
    }
    if (o->kind == OP_WRITE)
      memcpy (buf + o->off, o->data, o->len);
    else if (o->kind == OP_ZERO && o->off < *size)
      memset (buf + o->off, 0, o->off + o->len > *size ? *size - o->off : o->len);
  }
  return buf;
}

/* Put BUF into PATH in place (the same inode, so its extended attributes stay). */
static void
put_file (const char *path, const uint8_t *buf, uint64_t size)
{
  int fd = open (path, O_RDWR);
  assert_true (fd >= 0);
  assert_int_equal (__real_ftruncate (fd, 0), 0);
  assert_int_equal (__real_ftruncate (fd, size), 0);
  if (size)
    assert_int_equal (__real_pwrite (fd, buf, size, 0), (ssize_t)size);
  close (fd);
}

#define CBS 4096u /* small blocks: many fetches and batches in a small disk */

/* Two rounds of fills (the second after the guest changed blocks and freed some),
 * recorded; then a power loss after every op, in each variant.  The metadata that
 * survives must never claim a block valid whose durable bytes are not the source's at
 * the change id it records, and reopening at round 2 must give round 2's bytes.
 */
static void
test_power_loss (void **state)
{
  struct fake *f = new_fake (64 * CBS);
  uint8_t *round1 = malloc (f->capacity);
  struct dcache_params p = params (f, "52 aa/1");
  struct dcache *c;
  size_t nops, checked = 0;

  p.block_size = CBS;
  p.batch_bytes = 4 * CBS;
  p.request_max = 2 * CBS;
  /* Round 1: blocks 0-19 and 30-49 allocated, the rest zeros. */
  memset (f->data + 20 * CBS, 0, 10 * CBS);
  memset (f->data + 50 * CBS, 0, 14 * CBS);
  f->known = true;
  extent_vector_append (&f->allocated, (struct extent){ 0, 20 * CBS });
  extent_vector_append (&f->allocated, (struct extent){ 30 * CBS, 20 * CBS });
  memcpy (round1, f->data, f->capacity);
  io_reset ();
  io.recording = true;
  c = dcache_open (&p, &fake_ops, f);
  assert_non_null (c);
  assert_int_equal (dcache_fill (c, 1, NULL, NULL), 0);
  assert_int_equal (dcache_close (c), 0);
  /* Round 2: blocks 3, 31-33 changed; 40-49 freed (zeros now). */
  memset (f->data + 3 * CBS + 7, 0xab, 100);
  memset (f->data + 31 * CBS, 0xcd, 3 * CBS);
  memset (f->data + 40 * CBS, 0, 10 * CBS);
  extent_vector_append (&f->changed, (struct extent){ 3 * CBS, CBS });
  extent_vector_append (&f->changed, (struct extent){ 31 * CBS, 3 * CBS });
  extent_vector_append (&f->changed, (struct extent){ 40 * CBS, 10 * CBS });
  f->allocated.len = 0;
  extent_vector_append (&f->allocated, (struct extent){ 0, 20 * CBS });
  extent_vector_append (&f->allocated, (struct extent){ 30 * CBS, 10 * CBS });
  p.change_id = "52 aa/2";
  c = dcache_open (&p, &fake_ops, f);
  assert_non_null (c);
  assert_int_equal (dcache_fill (c, 1, NULL, NULL), 0);
  assert_int_equal (dcache_close (c), 0);
  io.recording = false;
  nops = io.n;
  assert_true (nops > 50);

  for (size_t k = 0; k <= nops; k++) {
    for (int v = 0; v < NVARIANTS; v++) {
      uint64_t isize, msize;
      CLEANUP_FREE uint8_t *img = durable (F_IMAGE, k, v, &isize);
      CLEANUP_FREE uint8_t *md = durable (F_META, k, v, &msize);
      struct dcache probe = { .meta_fd = -1, .nblocks = 64, .meta_path = meta };
      CLEANUP_FREE uint8_t *bm = calloc (1, 8);
      char why[256];

      /* What the durable metadata claims, against the durable image. */
      put_file (image, img, isize);
      put_file (meta, md, msize);
      probe.meta_fd = open (meta, O_RDONLY);
      assert_true (probe.meta_fd >= 0);
      if (meta_load (&probe, bm, why, sizeof why) == 0 && probe.meta.nblocks == 64) {
        const uint8_t *src =
            strcmp (probe.meta.change_id, "52 aa/1") == 0 ? round1 : f->data;
        for (uint64_t b = 0; b < 64; b++) {
          if (!bm_get (bm, b))
            continue;
          if (isize < (b + 1) * CBS || memcmp (img + b * CBS, src + b * CBS, CBS) != 0)
            fail_msg ("power loss after op %zu of %zu (%s): block %" PRIu64 " is valid at "
                      "%s but its bytes were lost",
                      k, nops, variant_name[v], b, probe.meta.change_id);
        }
      }
      close (probe.meta_fd);
      /* Resuming at round 2 gives round 2's bytes. */
      c = dcache_open (&p, &fake_ops, f);
      assert_non_null (c);
      assert_int_equal (dcache_fill (c, 1, NULL, NULL), 0);
      assert_int_equal (dcache_close (c), 0);
      assert_image_equals (f);
      checked++;
    }
  }
  printf ("power loss simulated at %zu points of 2 rounds (%zu ops)\n", checked, nops);
  io_reset ();
  free (round1);
  free_fake (f);
}

/* ---- a large, mostly empty disk ---- */

/* A source of 2 TiB with 64 MiB of data in 16 areas, its bytes made up from offsets. */
#define BIG_CAPACITY (UINT64_C (2) << 40)
#define BIG_AREA (UINT64_C (4) << 20)

static int
big_read (void *opaque, void *buf, size_t count, uint64_t offset)
{
  uint64_t *p = buf;
  for (size_t i = 0; i < count / 8; i++)
    p[i] = (offset + 8 * i) * 0x9e3779b97f4a7c15;
  __atomic_add_fetch ((uint64_t *)opaque, count, __ATOMIC_SEQ_CST);
  return 0;
}

static int
big_allocated (void *opaque, extent_vector *areas, bool *known)
{
  *known = true;
  for (int i = 0; i < 16; i++)
    extent_vector_append (areas, (struct extent){ i * (BIG_CAPACITY / 16), BIG_AREA });
  return 0;
}

static const struct dcache_source_ops big_ops = {
  .read = big_read,
  .changed_areas = fake_changed,
  .allocated_areas = big_allocated,
};

static double
since (const struct timespec *t0)
{
  struct timespec t1;
  clock_gettime (CLOCK_MONOTONIC, &t1);
  return (t1.tv_sec - t0->tv_sec) + (t1.tv_nsec - t0->tv_nsec) / 1e9;
}

/* The first fill costs time in proportion to the data, not the capacity: zero runs are
 * one call each and write no hashes, and the metadata is persisted per batch of data.
 */
static void
test_fill_sparse_2t (void **state)
{
  uint64_t fetched = 0;
  struct dcache_params p = {
    .image = image,
    .meta = meta,
    .vm_uuid = "4211-big",
    .disk_id = "2000",
    .capacity = BIG_CAPACITY,
    .change_id = "52 aa/1",
    .block_size = BS,
  };
  struct dcache *c;
  struct dcache_stats st;
  struct timespec t0;
  double open_s, fill_s, reopen_s;
  unsigned writes;
  uint64_t persists;
  uint64_t buf[512];

  clock_gettime (CLOCK_MONOTONIC, &t0);
  c = dcache_open (&p, &big_ops, &fetched);
  assert_non_null (c);
  open_s = since (&t0);
  writes = io.meta_writes;
  clock_gettime (CLOCK_MONOTONIC, &t0);
  assert_int_equal (dcache_fill (c, 4, NULL, NULL), 0);
  fill_s = since (&t0);
  writes = io.meta_writes - writes;
  dcache_get_stats (c, &st);
  persists = st.persists;
  assert_int_equal (dcache_close (c), 0);
  assert_int_equal (fetched, 16 * BIG_AREA);
  assert_int_equal (st.valid_bytes, BIG_CAPACITY);
  clock_gettime (CLOCK_MONOTONIC, &t0);
  c = dcache_open (&p, &big_ops, &fetched);
  assert_non_null (c);
  reopen_s = since (&t0);
  dcache_get_stats (c, &st);
  assert_false (st.full_refetch);
  assert_int_equal (st.valid_bytes, BIG_CAPACITY);
  /* Data and a hole, served from the image. */
  assert_int_equal (dcache_pread (c, buf, sizeof buf, 3 * (BIG_CAPACITY / 16) + 8192), 0);
  assert_int_equal (buf[0], (3 * (BIG_CAPACITY / 16) + 8192) * 0x9e3779b97f4a7c15);
  assert_int_equal (dcache_pread (c, buf, sizeof buf, BIG_CAPACITY / 2 + BIG_AREA), 0);
  assert_int_equal (buf[0] | buf[511], 0);
  assert_int_equal (dcache_close (c), 0);
  assert_int_equal (fetched, 16 * BIG_AREA);
  printf ("2 TiB disk, 64 MiB data: open %.2f s, fill %.2f s (%u metadata writes, "
          "%" PRIu64 " persists), reopen %.2f s\n",
          open_s, fill_s, writes, persists, reopen_s);
  /* 64 MiB in 4 MiB fetches is 16 hash writes (+ a page shared by two fetches), and a
   * persist or two per 32 MiB batch of data (workers finishing together) and at the end:
   * nothing in proportion to the 32 Mi blocks of the capacity.
   */
  assert_true (writes <= 64);
  assert_true (persists <= 8);
  assert_true (fill_s < 30);
  assert_true (reopen_s < 30);
}
int
main (void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test (test_bitmap_ranges),
    cmocka_unit_test (test_areas_to_blocks),
    cmocka_unit_test (test_next_run),
    cmocka_unit_test (test_meta_roundtrip),
    cmocka_unit_test (test_meta_validation),
    cmocka_unit_test_setup_teardown (test_policy_rounds, setup_dir, teardown_dir),
    cmocka_unit_test_setup_teardown (test_policy_identity, setup_dir, teardown_dir),
    cmocka_unit_test_setup_teardown (test_policy_capacity, setup_dir, teardown_dir),
    cmocka_unit_test_setup_teardown (test_policy_corrupt_meta, setup_dir, teardown_dir),
    cmocka_unit_test_setup_teardown (test_reads_and_lock, setup_dir, teardown_dir),
    cmocka_unit_test_setup_teardown (test_image_identity, setup_dir, teardown_dir),
    cmocka_unit_test_setup_teardown (test_image_verify, setup_dir, teardown_dir),
    cmocka_unit_test_setup_teardown (test_hash_pages, setup_dir, teardown_dir),
    cmocka_unit_test_setup_teardown (test_image_lock_and_mode, setup_dir, teardown_dir),
    cmocka_unit_test_setup_teardown (test_sync_failure, setup_dir, teardown_dir),
    cmocka_unit_test_setup_teardown (test_power_loss, setup_dir, teardown_dir),
    cmocka_unit_test_setup_teardown (test_fill_sparse_2t, setup_dir, teardown_dir),
  };
  log_set_handlers (capture_error, print_debug);
  return cmocka_run_group_tests (tests, NULL, NULL);
}
