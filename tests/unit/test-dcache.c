/* ferry: unit tests of diskcache — the bitmap, run coalescing, metadata encoding and
 * validation, the invalidation math, and the open policy against a fake source.
 */
#include <fcntl.h>
#include <inttypes.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "diskcache/dcache-internal.h"

#define BS 65536u
#define KiB UINT64_C (1024)

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
  /* The size limit, and the end of the range. */
  assert_true (next_run (valid, busy, alloc, 20, 32, 5, &first, &n, &allocated));
  assert_int_equal (n, 5);
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
  assert_int_equal (meta_file_size (21), 8192 + 2 * 4096 + 21 * 32);
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

static char dir[] = "/tmp/test-dcache.XXXXXX";
static char image[64], meta[64];

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
  };
  return cmocka_run_group_tests (tests, NULL, NULL);
}
