/* SPDX-License-Identifier: Apache-2.0 */
/* ferry: unit tests of diskcache's durability — a failed fdatasync, and crash consistency
 * under power loss: every write and sync to the cache's files is recorded through the
 * fixture's I/O seam, and the durable ones are replayed as a power loss after each op
 * would leave them.
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

#include "common/cleanup.h"
#include "common/log.h"
#include "dcache-fixture.h"

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

int
main (void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test_setup_teardown (test_sync_failure, setup_dir, teardown_dir),
    cmocka_unit_test_setup_teardown (test_power_loss, setup_dir, teardown_dir),
  };
  log_set_handlers (capture_error, print_debug);
  return cmocka_run_group_tests (tests, NULL, NULL);
}
