/* SPDX-License-Identifier: Apache-2.0 */
/* ferry: the diskcache metadata file — encoding, checksums and crash-safe persists.
 *
 * Layout (all integers little-endian):
 *
 *   0      header slot 0 (4 KiB)      magic, version, generation, identity, change id,
 *   4096   header slot 1 (4 KiB)      ... and a SHA-256 over the header and its bitmap
 *   8192   bitmap of slot 0           one bit per block, padded to 4 KiB
 *   ...    bitmap of slot 1
 *   ...    hash pages                 4 KiB each: the SHA-256 of 127 blocks, written at
 *                                     fetch time, and a SHA-256 over them and the page
 * index
 *
 * The header also records the image the blocks are in (a random cache id, also kept in
 * an extended attribute of a regular-file image, its device, inode and size); dcache.c
 * checks it at open.
 *
 * The hash pages are not covered by the header checksum (recomputing a SHA-256 over up
 * to 1 GiB of hashes per persist would cost more than the batch it records): each page
 * carries its own.  A page is rewritten whole (read, modify, seal, write) under
 * c->hash_lock.  A torn or corrupted page fails its checksum at the next open, and its
 * 127 blocks become invalid; an all-zero page is good and holds 127 zero markers, so a
 * hash area that was never written (a hole) needs no writes.
 * Why a double-buffered fixed layout rather than tmp+rename: a persist writes the slot
 * that is NOT current (its bitmap, then its header with generation+1) and fdatasyncs, so
 * the current slot is never touched.  A crash or a torn write leaves the new slot with a
 * bad checksum and the reader takes the other one: at most the last batch is lost, never
 * the whole bitmap, and a write in place also works on a metadata file that sits on a
 * filesystem without atomic rename (or beside a block device under cache-dir=).  The
 * checksum covers the header and its bitmap together, so a bitmap from another
 * generation can never pass as this one's.
 *
 * The state this file owns is on disk only; the callers (dcache.c) hold c->persist_lock
 * around meta_persist, so two persists never race for the inactive slot.
 */
#include <endian.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "common/cleanup.h"
#include "common/log.h"
#include "common/util.h"
#include "dcache-internal.h"

/* Header field offsets. */
#define H_MAGIC 0
#define H_VERSION 8
#define H_BLOCK_SIZE 12
#define H_GENERATION 16
#define H_CAPACITY 24
#define H_NBLOCKS 32
#define H_HASH_ALGO 40
#define H_VM_UUID 48
#define H_DISK_ID (H_VM_UUID + META_VM_UUID_LEN)
#define H_DISK_UUID (H_DISK_ID + META_DISK_ID_LEN)
#define H_CHANGE_ID (H_DISK_UUID + META_DISK_UUID_LEN)
#define H_CACHE_ID (H_CHANGE_ID + META_CHANGE_ID_LEN)
#define H_FLAGS (H_CACHE_ID + META_CACHE_ID_LEN)
#define H_IMAGE_DEV (H_FLAGS + 8)
#define H_IMAGE_INO (H_IMAGE_DEV + 8)
#define H_IMAGE_SIZE (H_IMAGE_INO + 8)
#define H_END (H_IMAGE_SIZE + 8)
#define H_CHECKSUM (META_HEADER_SIZE - 32)
#define HASH_ALGO_SHA256 1

uint64_t
meta_bitmap_area (uint64_t nblocks)
{
  return (bm_bytes (nblocks) + 4095) & ~UINT64_C (4095);
}

uint64_t
meta_bitmap_offset (int slot, uint64_t nblocks)
{
  return 2 * META_HEADER_SIZE + slot * meta_bitmap_area (nblocks);
}

uint64_t
meta_hash_offset (uint64_t nblocks)
{
  return 2 * META_HEADER_SIZE + 2 * meta_bitmap_area (nblocks);
}

uint64_t
meta_hash_pages (uint64_t nblocks)
{
  return (nblocks + META_HASHES_PER_PAGE - 1) / META_HASHES_PER_PAGE;
}

uint64_t
meta_file_size (uint64_t nblocks)
{
  return meta_hash_offset (nblocks) + meta_hash_pages (nblocks) * META_PAGE_SIZE;
}

static void
put32 (uint8_t *p, uint32_t v)
{
  v = htole32 (v);
  memcpy (p, &v, 4);
}

static void
put64 (uint8_t *p, uint64_t v)
{
  v = htole64 (v);
  memcpy (p, &v, 8);
}

static uint32_t
get32 (const uint8_t *p)
{
  uint32_t v;
  memcpy (&v, p, 4);
  return le32toh (v);
}

static uint64_t
get64 (const uint8_t *p)
{
  uint64_t v;
  memcpy (&v, p, 8);
  return le64toh (v);
}

/* SHA-256 over the header (without its checksum field) and the bitmap. */
static void
checksum (const uint8_t *header, const uint8_t *bitmap, size_t bitmap_len, uint8_t *out)
{
  EVP_MD_CTX *ctx = EVP_MD_CTX_new ();
  unsigned len = 32;

  EVP_DigestInit_ex (ctx, EVP_sha256 (), NULL);
  EVP_DigestUpdate (ctx, header, H_CHECKSUM);
  EVP_DigestUpdate (ctx, bitmap, bitmap_len);
  EVP_DigestFinal_ex (ctx, out, &len);
  EVP_MD_CTX_free (ctx);
}

#define PAGE_SUM (META_PAGE_SIZE - 32)

/* SHA-256 over the page index and the page's hashes. */
static void
page_sum (uint64_t index, const uint8_t *page, uint8_t *out)
{
  EVP_MD_CTX *ctx = EVP_MD_CTX_new ();
  unsigned len = 32;
  uint8_t le[8];

  put64 (le, index);
  EVP_DigestInit_ex (ctx, EVP_sha256 (), NULL);
  EVP_DigestUpdate (ctx, le, sizeof le);
  EVP_DigestUpdate (ctx, page, META_HASHES_PER_PAGE * DCACHE_HASH_LEN);
  EVP_DigestFinal_ex (ctx, out, &len);
  EVP_MD_CTX_free (ctx);
}

static bool
all_zero (const uint8_t *p, size_t len)
{
  return len == 0 || (p[0] == 0 && memcmp (p, p + 1, len - 1) == 0);
}

bool
meta_page_ok (uint64_t index, const uint8_t *page)
{
  uint8_t sum[32];

  if (all_zero (page, META_PAGE_SIZE))
    return true;
  page_sum (index, page, sum);
  return memcmp (sum, page + PAGE_SUM, 32) == 0;
}

void
meta_page_seal (uint64_t index, uint8_t *page)
{
  if (all_zero (page, PAGE_SUM))
    memset (page + PAGE_SUM, 0, 32);
  else
    page_sum (index, page, page + PAGE_SUM);
}

static int
put_string (uint8_t *p, size_t field, const char *s, const char *name, char *why,
            size_t whylen)
{
  size_t n = strlen (s);

  if (n >= field) {
    snprintf (why, whylen, "%s \"%s\" is longer than %zu bytes", name, s, field - 1);
    return -1;
  }
  memcpy (p, s, n);
  return 0;
}

int
meta_encode (const struct dcache_meta *m, const uint8_t *bitmap, uint8_t *header, char *why,
             size_t whylen)
{
  memset (header, 0, META_HEADER_SIZE);
  memcpy (header + H_MAGIC, META_MAGIC, 8);
  put32 (header + H_VERSION, META_VERSION);
  put32 (header + H_BLOCK_SIZE, m->block_size);
  put64 (header + H_GENERATION, m->generation);
  put64 (header + H_CAPACITY, m->capacity);
  put64 (header + H_NBLOCKS, m->nblocks);
  put32 (header + H_HASH_ALGO, HASH_ALGO_SHA256);
  if (put_string (header + H_VM_UUID, META_VM_UUID_LEN, m->vm_uuid, "VM uuid", why,
                  whylen) == -1 ||
      put_string (header + H_DISK_ID, META_DISK_ID_LEN, m->disk_id, "disk id", why,
                  whylen) == -1 ||
      put_string (header + H_DISK_UUID, META_DISK_UUID_LEN, m->disk_uuid, "disk uuid", why,
                  whylen) == -1 ||
      put_string (header + H_CHANGE_ID, META_CHANGE_ID_LEN, m->change_id, "change id", why,
                  whylen) == -1)
    return -1;
  memcpy (header + H_CACHE_ID, m->cache_id, META_CACHE_ID_LEN);
  put32 (header + H_FLAGS, m->flags);
  put64 (header + H_IMAGE_DEV, m->image_dev);
  put64 (header + H_IMAGE_INO, m->image_ino);
  put64 (header + H_IMAGE_SIZE, m->image_size);
  checksum (header, bitmap, bm_bytes (m->nblocks), header + H_CHECKSUM);
  return 0;
}

uint64_t
meta_peek_nblocks (const uint8_t *header)
{
  return get64 (header + H_NBLOCKS);
}

static int
get_string (const uint8_t *p, size_t field, char *out, const char *name, char *why,
            size_t whylen)
{
  if (memchr (p, 0, field) == NULL) {
    snprintf (why, whylen, "%s is not terminated", name);
    return -1;
  }
  memcpy (out, p, field);
  return 0;
}

int
meta_decode (const uint8_t *header, const uint8_t *bitmap, size_t bitmap_len,
             struct dcache_meta *m, char *why, size_t whylen)
{
  uint8_t sum[32];
  uint64_t expect;

  memset (m, 0, sizeof *m);
  if (memcmp (header + H_MAGIC, META_MAGIC, 8) != 0) {
    snprintf (why, whylen, "not a ferry cache header (bad magic)");
    return -1;
  }
  m->version = get32 (header + H_VERSION);
  if (m->version != META_VERSION) {
    snprintf (why, whylen, "format version %" PRIu32 ", this ferry reads %d", m->version,
              META_VERSION);
    return -1;
  }
  m->block_size = get32 (header + H_BLOCK_SIZE);
  m->generation = get64 (header + H_GENERATION);
  m->capacity = get64 (header + H_CAPACITY);
  m->nblocks = get64 (header + H_NBLOCKS);
  if (m->block_size < 512 || (m->block_size & (m->block_size - 1)) != 0) {
    snprintf (why, whylen, "block size %" PRIu32 " is not a power of 2", m->block_size);
    return -1;
  }
  expect = m->capacity / m->block_size + (m->capacity % m->block_size != 0);
  if (m->nblocks != expect) {
    snprintf (why, whylen, "%" PRIu64 " blocks do not cover capacity %" PRIu64, m->nblocks,
              m->capacity);
    return -1;
  }
  if (bitmap_len < bm_bytes (m->nblocks)) {
    snprintf (why, whylen, "the bitmap is truncated");
    return -1;
  }
  if (get32 (header + H_HASH_ALGO) != HASH_ALGO_SHA256) {
    snprintf (why, whylen, "unknown block hash algorithm");
    return -1;
  }
  checksum (header, bitmap, bm_bytes (m->nblocks), sum);
  if (memcmp (sum, header + H_CHECKSUM, 32) != 0) {
    snprintf (why, whylen, "checksum mismatch (torn or corrupted)");
    return -1;
  }
  if (get_string (header + H_VM_UUID, META_VM_UUID_LEN, m->vm_uuid, "VM uuid", why,
                  whylen) == -1 ||
      get_string (header + H_DISK_ID, META_DISK_ID_LEN, m->disk_id, "disk id", why,
                  whylen) == -1 ||
      get_string (header + H_DISK_UUID, META_DISK_UUID_LEN, m->disk_uuid, "disk uuid", why,
                  whylen) == -1 ||
      get_string (header + H_CHANGE_ID, META_CHANGE_ID_LEN, m->change_id, "change id", why,
                  whylen) == -1)
    return -1;
  memcpy (m->cache_id, header + H_CACHE_ID, META_CACHE_ID_LEN);
  m->flags = get32 (header + H_FLAGS);
  m->image_dev = get64 (header + H_IMAGE_DEV);
  m->image_ino = get64 (header + H_IMAGE_INO);
  m->image_size = get64 (header + H_IMAGE_SIZE);
  /* Bits past the last block must be clear: otherwise the bitmap is not this header's. */
  for (uint64_t b = m->nblocks; b < bm_bytes (m->nblocks) * 8; b++) {
    if (bm_get (bitmap, b)) {
      snprintf (why, whylen, "bits set past the last block");
      return -1;
    }
  }
  return 0;
}

/* Decode slot SLOT into *M and BITMAP (nblocks bits); 0, or -1 with WHY. */
static int
load_slot (struct dcache *c, int slot, struct dcache_meta *m, uint8_t **bitmap, char *why,
           size_t whylen)
{
  uint8_t header[META_HEADER_SIZE];
  uint64_t nblocks;
  size_t len;
  struct stat st;
  int r;

  r = pread_full (c->meta_fd, header, sizeof header, slot * META_HEADER_SIZE);
  if (r <= 0) {
    snprintf (why, whylen, "header %d: %s", slot, r == 0 ? "truncated" : strerror (errno));
    return -1;
  }
  nblocks = meta_peek_nblocks (header);
  if (nblocks > (UINT64_C (1) << 40)) {
    snprintf (why, whylen, "header %d: absurd block count", slot);
    return -1;
  }
  len = bm_bytes (nblocks);
  /* A header's block count is not trusted yet: the file must hold that bitmap before it
   * is allocated (a bad header must not cost gigabytes).
   */
  if (fstat (c->meta_fd, &st) == -1 ||
      (uint64_t)st.st_size < meta_bitmap_offset (slot, nblocks) + len) {
    snprintf (why, whylen,
              "bitmap %d: truncated (the file is shorter than its header says)", slot);
    return -1;
  }
  *bitmap = calloc (1, len ? len : 1);
  if (*bitmap == NULL) {
    snprintf (why, whylen, "header %d: %m", slot);
    return -1;
  }
  r = pread_full (c->meta_fd, *bitmap, len, meta_bitmap_offset (slot, nblocks));
  if (r <= 0) {
    snprintf (why, whylen, "bitmap %d: %s", slot, r == 0 ? "truncated" : strerror (errno));
    goto err;
  }
  if (meta_decode (header, *bitmap, len, m, why, whylen) == -1)
    goto err;
  return 0;

err:
  free (*bitmap);
  *bitmap = NULL;
  return -1;
}

int
meta_load (struct dcache *c, uint8_t *bitmap, char *why, size_t whylen)
{
  struct dcache_meta m[2];
  CLEANUP_FREE uint8_t *bm0 = NULL;
  CLEANUP_FREE uint8_t *bm1 = NULL;
  char why0[256], why1[256];
  int ok0, ok1, slot;
  off_t size = lseek (c->meta_fd, 0, SEEK_END);

  if (size == 0) {
    snprintf (why, whylen, "new cache (no metadata yet)");
    return 1;
  }
  ok0 = load_slot (c, 0, &m[0], &bm0, why0, sizeof why0) == 0;
  ok1 = load_slot (c, 1, &m[1], &bm1, why1, sizeof why1) == 0;
  if (!ok0 && !ok1) {
    snprintf (why, whylen, "unreadable metadata: %s; %s", why0, why1);
    return 1;
  }
  if (ok0 && ok1 && m[0].nblocks != m[1].nblocks) {
    snprintf (why, whylen, "inconsistent metadata: the two headers disagree on the size");
    return 1;
  }
  slot = ok0 && (!ok1 || m[0].generation > m[1].generation) ? 0 : 1;
  if (size < (off_t)meta_file_size (m[slot].nblocks)) {
    snprintf (why, whylen, "truncated metadata (%lld bytes, %" PRIu64 " expected)",
              (long long)size, meta_file_size (m[slot].nblocks));
    return 1;
  }
  c->meta = m[slot];
  c->active_slot = slot;
  if (m[slot].nblocks == c->nblocks)
    memcpy (bitmap, slot ? bm1 : bm0, bm_bytes (c->nblocks));
  log_debug ("%s: metadata slot %d, generation %" PRIu64 "%s%s", c->meta_path, slot,
             m[slot].generation,
             ok0 && ok1 ? "" : ", other slot bad: ", ok0 && ok1 ? "" : (ok0 ? why1 : why0));
  return 0;
}

/* A new layout for this cache's size: everything zero, so both slots are invalid until
 * the first persist.  A crash before that leaves a file that reads as "unreadable",
 * which invalidates everything: safe.
 */
int
meta_reset_file (struct dcache *c)
{
  if (ftruncate (c->meta_fd, 0) == -1 ||
      ftruncate (c->meta_fd, meta_file_size (c->nblocks)) == -1) {
    log_error ("%s: cannot size the cache metadata: %m", c->meta_path);
    return -1;
  }
  c->meta.generation = 0;
  c->active_slot = 1; /* so the first persist goes to slot 0 */
  return 0;
}

/* Write BITMAP with c->meta (generation+1) into the inactive slot and make it durable.
 * The caller has made the data that BITMAP claims durable already.
 */
int
meta_persist (struct dcache *c, const uint8_t *bitmap)
{
  uint8_t header[META_HEADER_SIZE];
  struct dcache_meta m = c->meta;
  int slot = 1 - c->active_slot;
  char why[256];

  m.generation++;
  m.nblocks = c->nblocks;
  if (meta_encode (&m, bitmap, header, why, sizeof why) == -1) {
    log_error ("%s: %s", c->meta_path, why);
    return -1;
  }
  if (pwrite_full (c->meta_fd, bitmap, bm_bytes (c->nblocks),
                   meta_bitmap_offset (slot, c->nblocks)) == -1)
    goto err;
  /* Test-only: die with the bitmap written and the header half written (torn). */
  if (pwrite_full (c->meta_fd, header, META_HEADER_SIZE / 2, slot * META_HEADER_SIZE) == -1)
    goto err;
  crash_point ("persist");
  if (pwrite_full (c->meta_fd, header + META_HEADER_SIZE / 2, META_HEADER_SIZE / 2,
                   slot * META_HEADER_SIZE + META_HEADER_SIZE / 2) == -1)
    goto err;
  if (fdatasync (c->meta_fd) == -1) {
    __atomic_store_n (&c->sync_failed, true, __ATOMIC_SEQ_CST);
    goto err;
  }
  c->meta = m;
  c->active_slot = slot;
  return 0;

err:
  log_error ("%s: cannot persist the cache metadata: %m", c->meta_path);
  return -1;
}

/* Pages are read, changed and written in chunks of this many. */
#define CHUNK_PAGES 256

static uint64_t
page_offset (const struct dcache *c, uint64_t page)
{
  return meta_hash_offset (c->nblocks) + page * META_PAGE_SIZE;
}

int
meta_write_hashes (struct dcache *c, uint64_t first, uint64_t n, const uint8_t *hashes)
{
  uint64_t end = first + n;
  uint64_t page = first / META_HASHES_PER_PAGE;
  uint64_t last_page = (end - 1) / META_HASHES_PER_PAGE;
  CLEANUP_FREE uint8_t *buf = NULL;
  ACQUIRE_LOCK_FOR_CURRENT_SCOPE (&c->hash_lock);

  if (n == 0)
    return 0;
  buf = malloc (CHUNK_PAGES * META_PAGE_SIZE);
  if (buf == NULL) {
    log_error ("malloc: %m");
    return -1;
  }
  while (page <= last_page) {
    uint64_t k = last_page - page + 1 < CHUNK_PAGES ? last_page - page + 1 : CHUNK_PAGES;
    uint64_t lo = UINT64_MAX, hi = 0; /* pages changed, [lo, hi] */

    /* Zero markers over a hole of the hash area: already there. */
    if (hashes == NULL) {
      off_t data = lseek (c->meta_fd, page_offset (c, page), SEEK_DATA);
      if (data == -1 && errno == ENXIO)
        break;
      if (data > (off_t)page_offset (c, page) &&
          (data - page_offset (c, page)) / META_PAGE_SIZE > 0) {
        page += (data - page_offset (c, page)) / META_PAGE_SIZE;
        continue;
      }
    }

    if (pread_full (c->meta_fd, buf, k * META_PAGE_SIZE, page_offset (c, page)) != 1) {
      log_error ("%s: cannot read block checksums: %m", c->meta_path);
      return -1;
    }
    for (uint64_t i = 0; i < k; i++) {
      uint8_t *pg = buf + i * META_PAGE_SIZE;
      uint64_t b0 = (page + i) * META_HASHES_PER_PAGE;
      uint64_t from = first > b0 ? first - b0 : 0;
      uint64_t to = end - b0 < META_HASHES_PER_PAGE ? end - b0 : META_HASHES_PER_PAGE;
      uint8_t *dst = pg + from * DCACHE_HASH_LEN;
      size_t len = (to - from) * DCACHE_HASH_LEN;

      if (!meta_page_ok (page + i, pg)) {
        log_error ("%s: block checksum page %" PRIu64 " is corrupted (changed behind "
                   "this cache's back): not writing over it",
                   c->meta_path, page + i);
        return -1;
      }
      if (hashes ? memcmp (dst, hashes + (b0 + from - first) * DCACHE_HASH_LEN, len) == 0
                 : all_zero (dst, len))
        continue;
      if (hashes)
        memcpy (dst, hashes + (b0 + from - first) * DCACHE_HASH_LEN, len);
      else
        memset (dst, 0, len);
      meta_page_seal (page + i, pg);
      lo = i < lo ? i : lo;
      hi = i;
    }
    if (lo != UINT64_MAX &&
        pwrite_full (c->meta_fd, buf + lo * META_PAGE_SIZE, (hi - lo + 1) * META_PAGE_SIZE,
                     page_offset (c, page + lo)) == -1) {
      log_error ("%s: cannot write block checksums: %m", c->meta_path);
      return -1;
    }
    page += k;
  }
  return 0;
}

int
meta_read_hashes (struct dcache *c, uint64_t first, uint64_t n, uint8_t *hashes)
{
  uint8_t pg[META_PAGE_SIZE];
  uint64_t b = first, end = first + n;

  while (b < end) {
    uint64_t page = b / META_HASHES_PER_PAGE, b0 = page * META_HASHES_PER_PAGE;
    uint64_t to = end - b0 < META_HASHES_PER_PAGE ? end - b0 : META_HASHES_PER_PAGE;

    if (pread_full (c->meta_fd, pg, sizeof pg, page_offset (c, page)) != 1) {
      log_error ("%s: cannot read block checksums: %m", c->meta_path);
      return -1;
    }
    if (!meta_page_ok (page, pg)) {
      log_error ("%s: block checksum page %" PRIu64 " (blocks %" PRIu64 "-%" PRIu64
                 ") is corrupted",
                 c->meta_path, page, b0, b0 + META_HASHES_PER_PAGE - 1);
      return -1;
    }
    memcpy (hashes + (b - first) * DCACHE_HASH_LEN, pg + (b - b0) * DCACHE_HASH_LEN,
            (b0 + to - b) * DCACHE_HASH_LEN);
    b = b0 + to;
  }
  return 0;
}

bool
meta_hashes_unwritten (struct dcache *c, uint64_t first, uint64_t n)
{
  uint64_t from = page_offset (c, first / META_HASHES_PER_PAGE);
  uint64_t to = page_offset (c, (first + n - 1) / META_HASHES_PER_PAGE + 1);
  off_t data = lseek (c->meta_fd, from, SEEK_DATA);

  return (data == -1 && errno == ENXIO) || (data != -1 && (uint64_t)data >= to);
}

int64_t
meta_check_pages (struct dcache *c, uint8_t *valid)
{
  uint64_t npages = meta_hash_pages (c->nblocks), bad = 0;
  CLEANUP_FREE uint8_t *buf = malloc (CHUNK_PAGES * META_PAGE_SIZE);

  if (buf == NULL) {
    log_error ("malloc: %m");
    return -1;
  }
  for (uint64_t page = 0; page < npages;) {
    uint64_t k = npages - page < CHUNK_PAGES ? npages - page : CHUNK_PAGES;
    off_t data = lseek (c->meta_fd, page_offset (c, page), SEEK_DATA);

    /* A hole holds good (all-zero) pages: skip it. */
    if (data == -1 && errno == ENXIO)
      break;
    if (data > (off_t)page_offset (c, page)) {
      uint64_t skip = (data - page_offset (c, page)) / META_PAGE_SIZE;
      if (skip > 0) {
        page += skip;
        continue;
      }
    }
    if (pread_full (c->meta_fd, buf, k * META_PAGE_SIZE, page_offset (c, page)) != 1) {
      log_error ("%s: cannot read block checksums: %m", c->meta_path);
      return -1;
    }
    for (uint64_t i = 0; i < k; i++) {
      uint64_t b0 = (page + i) * META_HASHES_PER_PAGE;
      uint64_t nb =
          c->nblocks - b0 < META_HASHES_PER_PAGE ? c->nblocks - b0 : META_HASHES_PER_PAGE;
      static const uint8_t empty[META_PAGE_SIZE];

      if (meta_page_ok (page + i, buf + i * META_PAGE_SIZE))
        continue;
      bad++;
      log_debug ("%s: block checksum page %" PRIu64 " is torn or corrupted: blocks %" PRIu64
                 "-%" PRIu64 " become invalid",
                 c->meta_path, page + i, b0, b0 + nb - 1);
      bm_set_range (valid, b0, nb, false);
      if (pwrite_full (c->meta_fd, empty, sizeof empty, page_offset (c, page + i)) == -1) {
        log_error ("%s: cannot rewrite block checksums: %m", c->meta_path);
        return -1;
      }
    }
    page += k;
  }
  return bad;
}

const uint8_t *
meta_real_hash (const struct dcache *c, uint64_t b, const uint8_t *stored)
{
  if (!hash_is_marker (stored))
    return stored;
  return b == c->nblocks - 1 && c->capacity % c->block_size ? c->zero_hash_last
                                                            : c->zero_hash;
}
