/* SPDX-License-Identifier: Apache-2.0 */
/* ferry: unit tests of the binding of diskcache's metadata to its image — each way the
 * image can stop being the one the metadata describes, verification, torn or corrupted
 * hash pages, the image's lock and the files' modes.
 */
#include <fcntl.h>
#include <linux/falloc.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>
#include <openssl/evp.h>

#include "common/log.h"
#include "dcache-fixture.h"

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

int
main (void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test_setup_teardown (test_image_identity, setup_dir, teardown_dir),
    cmocka_unit_test_setup_teardown (test_image_verify, setup_dir, teardown_dir),
    cmocka_unit_test_setup_teardown (test_hash_pages, setup_dir, teardown_dir),
    cmocka_unit_test_setup_teardown (test_image_lock_and_mode, setup_dir, teardown_dir),
  };
  log_set_handlers (capture_error, print_debug);
  return cmocka_run_group_tests (tests, NULL, NULL);
}
