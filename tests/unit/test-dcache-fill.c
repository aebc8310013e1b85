/* SPDX-License-Identifier: Apache-2.0 */
/* ferry: unit tests of diskcache's open policy and fills against a fake source (rounds,
 * the disk's identity and capacity, corrupted metadata, reads and the lock), and of the
 * first fill of a large, mostly empty disk.
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
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "common/log.h"
#include "dcache-fixture.h"

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
    cmocka_unit_test_setup_teardown (test_policy_rounds, setup_dir, teardown_dir),
    cmocka_unit_test_setup_teardown (test_policy_identity, setup_dir, teardown_dir),
    cmocka_unit_test_setup_teardown (test_policy_capacity, setup_dir, teardown_dir),
    cmocka_unit_test_setup_teardown (test_policy_corrupt_meta, setup_dir, teardown_dir),
    cmocka_unit_test_setup_teardown (test_reads_and_lock, setup_dir, teardown_dir),
    cmocka_unit_test_setup_teardown (test_fill_sparse_2t, setup_dir, teardown_dir),
  };
  log_set_handlers (capture_error, print_debug);
  return cmocka_run_group_tests (tests, NULL, NULL);
}
