/* SPDX-License-Identifier: Apache-2.0 */
/* ferry: unit tests of the plugin's read-ahead: sequential readers are served from 1 MiB
 * chunks (few source reads), random readers are read directly (no amplification), and
 * every byte is right, also with parallel readers and a failing source.
 */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "nbdkit-plugin/readahead.h"

#define MiB (1024 * 1024)
#define SIZE (64 * MiB + 12345) /* the last chunk is short */
#define CHUNK READAHEAD_CHUNK
/* More chunks than slots, so that pinned slots would show. */
#define NCHUNKS (2 * READAHEAD_SLOTS - 4)

static uint64_t source_reads, source_bytes, fail_at = UINT64_MAX;

static uint8_t
byte_at (uint64_t off)
{
  return (off * 2654435761u) >> 24;
}

static int
fake_read (void *opaque, void *buf, uint32_t count, uint64_t offset)
{
  assert_true (offset + count <= SIZE);
  __atomic_add_fetch (&source_reads, 1, __ATOMIC_RELAXED);
  __atomic_add_fetch (&source_bytes, count, __ATOMIC_RELAXED);
  if (offset <= fail_at && fail_at < offset + count)
    return -1;
  for (uint32_t i = 0; i < count; i++)
    ((uint8_t *)buf)[i] = byte_at (offset + i);
  return 0;
}

/* The fake disk is all data, except [HOLE_START, HOLE_END), which readers skip. */
static uint64_t hole_start = SIZE, hole_end = SIZE;

static uint64_t
fake_data_bytes (void *opaque, uint64_t offset, uint64_t count)
{
  uint64_t s = offset > hole_start ? offset : hole_start;
  uint64_t e = offset + count < hole_end ? offset + count : hole_end;
  return count - (e > s ? e - s : 0);
}

static const struct readahead_source fake = { .read = fake_read,
                                              .data_bytes = fake_data_bytes };

static void
check (const uint8_t *buf, uint32_t count, uint64_t offset)
{
  for (uint32_t i = 0; i < count; i++)
    if (buf[i] != byte_at (offset + i))
      fail_msg ("wrong byte at %llu", (unsigned long long)(offset + i));
}

struct worker {
  struct readahead *ra;
  uint64_t start, end;
};

static void *
sequential (void *arg)
{
  struct worker *w = arg;
  uint8_t *buf = malloc (256 * 1024);

  for (uint64_t off = w->start; off < w->end; off += 256 * 1024) {
    uint32_t n = w->end - off < 256 * 1024 ? w->end - off : 256 * 1024;
    if (off >= hole_start && off + n <= hole_end)
      continue; /* like nbdcopy, skip what block status calls a hole */
    assert_int_equal (readahead_pread (w->ra, buf, n, off), 0);
    check (buf, n, off);
  }
  free (buf);
  return NULL;
}

static void
test_parallel_sequential_readers (void **state)
{
  struct readahead *ra = readahead_new (&fake, NULL, SIZE);
  struct worker w[4];
  pthread_t t[4];
  uint64_t chunks, hits, direct;

  source_reads = source_bytes = 0;
  for (int i = 0; i < 4; i++) {
    w[i] = (struct worker){ ra, (uint64_t)i * (SIZE / 4), (uint64_t)(i + 1) * (SIZE / 4) };
    if (i == 3)
      w[i].end = SIZE;
    pthread_create (&t[i], NULL, sequential, &w[i]);
  }
  for (int i = 0; i < 4; i++)
    pthread_join (t[i], NULL);
  readahead_stats (ra, &chunks, &hits, &direct);
  /* 64 MiB in 256 KiB requests is 257 requests; the source saw about 65 chunk reads plus
   * the first request of each reader.  The readers' ranges are not chunk-aligned: where a
   * reader's last request lands in a chunk the next reader has already read, that chunk
   * may be fetched again (nbdcopy's ranges are aligned, so it does not pay this).
   */
  if (!(chunks >= SIZE / CHUNK && chunks <= SIZE / CHUNK + 8 &&
        source_reads < SIZE / CHUNK + 13 && source_bytes <= SIZE + 3 * CHUNK))
    fail_msg ("chunks %llu, source reads %llu, bytes %llu", (unsigned long long)chunks,
              (unsigned long long)source_reads, (unsigned long long)source_bytes);
  readahead_free (ra);
}

/* Chunks with holes that readers skip are released all the same (their data bytes were
 * all served), so nothing is fetched twice for lack of a free slot.
 */
static void
test_holes_do_not_pin_slots (void **state)
{
  hole_start = 3 * CHUNK / 4; /* in every chunk: see the loop below */
  hole_end = SIZE;
  struct readahead *ra = readahead_new (&fake, NULL, SIZE);
  uint8_t *buf = malloc (256 * 1024);

  source_reads = source_bytes = 0;
  /* Read 3/4 of each chunk, in 256 KiB steps, as a reader skipping holes. */
  for (uint64_t chunk = 0; chunk < NCHUNKS; chunk++) {
    hole_start = chunk * CHUNK + 3 * CHUNK / 4;
    hole_end = (chunk + 1) * CHUNK;
    for (uint64_t off = chunk * CHUNK; off < hole_start; off += 256 * 1024) {
      assert_int_equal (readahead_pread (ra, buf, 256 * 1024, off), 0);
      check (buf, 256 * 1024, off);
    }
  }
  /* After each skipped hole the first request is direct, the rest of the chunk comes in
   * one read: no byte twice, and every chunk got a slot (pinned slots would leave only
   * RA_SLOTS = 32).
   */
  uint64_t chunks, hits, direct;
  readahead_stats (ra, &chunks, &hits, &direct);
  assert_true (source_bytes <= NCHUNKS * CHUNK);
  assert_int_equal (chunks, NCHUNKS);
  assert_int_equal (direct, NCHUNKS);
  free (buf);
  readahead_free (ra);
  hole_start = hole_end = SIZE;
}

static void
test_random_reads_are_direct (void **state)
{
  struct readahead *ra = readahead_new (&fake, NULL, SIZE);
  uint8_t buf[4096];
  uint64_t chunks, hits, direct;

  source_reads = source_bytes = 0;
  srand (7);
  for (int i = 0; i < 500; i++) {
    uint64_t off = ((uint64_t)rand () * 4096) % (SIZE - sizeof buf);
    assert_int_equal (readahead_pread (ra, buf, sizeof buf, off), 0);
    check (buf, sizeof buf, off);
  }
  readahead_stats (ra, &chunks, &hits, &direct);
  assert_true (chunks == 0);
  assert_true (source_bytes == 500 * sizeof buf);
  readahead_free (ra);
}

static void
test_failed_chunk_reports_error (void **state)
{
  struct readahead *ra = readahead_new (&fake, NULL, SIZE);
  uint8_t buf[65536];

  fail_at = 3 * MiB + 100;
  assert_int_equal (readahead_pread (ra, buf, sizeof buf, 2 * MiB), 0);
  /* Sequential: the chunk read holding 3 MiB + 100 fails, and so does the direct retry. */
  assert_int_equal (readahead_pread (ra, buf, sizeof buf, 2 * MiB + 65536), 0);
  assert_int_equal (readahead_pread (ra, buf, sizeof buf, 3 * MiB), -1);
  fail_at = UINT64_MAX;
  /* Once the source answers again, the same range reads fine. */
  assert_int_equal (readahead_pread (ra, buf, sizeof buf, 3 * MiB), 0);
  check (buf, sizeof buf, 3 * MiB);
  readahead_free (ra);
}

int
main (void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test (test_parallel_sequential_readers),
    cmocka_unit_test (test_holes_do_not_pin_slots),
    cmocka_unit_test (test_random_reads_are_direct),
    cmocka_unit_test (test_failed_chunk_reports_error),
  };
  return cmocka_run_group_tests (tests, NULL, NULL);
}
