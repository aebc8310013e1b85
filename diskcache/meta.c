/* ferry: the diskcache metadata file — encoding, checksums and crash-safe persists.
 *
 * Layout (all integers little-endian):
 *
 *   0      header slot 0 (4 KiB)      magic, version, generation, identity, change id,
 *   4096   header slot 1 (4 KiB)      ... and a SHA-256 over the header and its bitmap
 *   8192   bitmap of slot 0           one bit per block, padded to 4 KiB
 *   ...    bitmap of slot 1
 *   ...    SHA-256 of each block      32 bytes per block, written at fetch time
 *
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
#define H_END (H_CHANGE_ID + META_CHANGE_ID_LEN)
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
meta_file_size (uint64_t nblocks)
{
  return meta_hash_offset (nblocks) + nblocks * DCACHE_HASH_LEN;
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
                   slot * META_HEADER_SIZE + META_HEADER_SIZE / 2) == -1 ||
      fdatasync (c->meta_fd) == -1)
    goto err;
  c->meta = m;
  c->active_slot = slot;
  return 0;

err:
  log_error ("%s: cannot persist the cache metadata: %m", c->meta_path);
  return -1;
}

int
meta_write_hashes (struct dcache *c, uint64_t first, uint64_t n, const uint8_t *hashes)
{
  if (pwrite_full (c->meta_fd, hashes, n * DCACHE_HASH_LEN,
                   meta_hash_offset (c->nblocks) + first * DCACHE_HASH_LEN) == -1) {
    log_error ("%s: cannot write block checksums: %m", c->meta_path);
    return -1;
  }
  return 0;
}

int
meta_read_hashes (struct dcache *c, uint64_t first, uint64_t n, uint8_t *hashes)
{
  if (pread_full (c->meta_fd, hashes, n * DCACHE_HASH_LEN,
                  meta_hash_offset (c->nblocks) + first * DCACHE_HASH_LEN) != 1) {
    log_error ("%s: cannot read block checksums: %m", c->meta_path);
    return -1;
  }
  return 0;
}
