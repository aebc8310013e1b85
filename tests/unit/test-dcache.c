/* SPDX-License-Identifier: Apache-2.0 */
/* ferry: unit tests of diskcache's pure parts — the bitmap, run coalescing, metadata
 * encoding and validation, and the invalidation math.  The tests of the cache at work
 * are in test-dcache-fill.c, test-dcache-image.c and test-dcache-durability.c.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "common/log.h"
#include "dcache-fixture.h"

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

int
main (void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test (test_bitmap_ranges),   cmocka_unit_test (test_areas_to_blocks),
    cmocka_unit_test (test_next_run),        cmocka_unit_test (test_meta_roundtrip),
    cmocka_unit_test (test_meta_validation),
  };
  log_set_handlers (capture_error, print_debug);
  return cmocka_run_group_tests (tests, NULL, NULL);
}
