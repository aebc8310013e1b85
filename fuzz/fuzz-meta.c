/* SPDX-License-Identifier: Apache-2.0 */
/* ferry: fuzz target — the diskcache metadata loader (meta_load).
 *
 * The input's first byte holds flags, the rest is the metadata file as meta_load reads it
 * from disk (through an anonymous file).  Since both header slots carry a SHA-256 of
 * header and bitmap, random bytes would never get past the checksum; flag bit 0 (slot 0)
 * and bit 1 (slot 1) make the harness write the right checksum into that slot first, so
 * the fuzzer also explores what lies behind it: field checks, strings, bits past the end,
 * the choice between slots, truncation.  Bits 2-3 choose the block count of the cache
 * that loads the file: the one slot 0 claims, that plus one, or zero.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>

#include "diskcache/dcache-internal.h"

#include "fuzz/fuzz.h"

#define CHECKSUM_AT (META_HEADER_SIZE - 32)

int
LLVMFuzzerInitialize (int *argc, char ***argv)
{
  fuzz_quiet ();
  return 0;
}

static void
repair_checksum (uint8_t *file, size_t size, int slot)
{
  uint8_t *header = file + slot * META_HEADER_SIZE;
  uint64_t nblocks, at;
  unsigned len = 32;
  EVP_MD_CTX *ctx;

  if (size < (size_t)(slot + 1) * META_HEADER_SIZE)
    return;
  nblocks = meta_peek_nblocks (header);
  if (nblocks > (UINT64_C (1) << 24))
    return;
  at = meta_bitmap_offset (slot, nblocks);
  if (at > size || bm_bytes (nblocks) > size - at)
    return;
  ctx = EVP_MD_CTX_new ();
  if (ctx == NULL)
    abort ();
  EVP_DigestInit_ex (ctx, EVP_sha256 (), NULL);
  EVP_DigestUpdate (ctx, header, CHECKSUM_AT);
  EVP_DigestUpdate (ctx, file + at, bm_bytes (nblocks));
  EVP_DigestFinal_ex (ctx, header + CHECKSUM_AT, &len);
  EVP_MD_CTX_free (ctx);
}

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
  struct dcache c = { .meta_path = (char *)"fuzz.meta" };
  uint8_t *file, *bitmap, flags;
  char why[512];
  int r;

  if (size < 1)
    return 0;
  flags = data[0];
  size--;
  file = malloc (size ? size : 1);
  if (file == NULL)
    abort ();
  memcpy (file, data + 1, size);
  if (flags & 1)
    repair_checksum (file, size, 0);
  if (flags & 2)
    repair_checksum (file, size, 1);

  c.nblocks = 0;
  if (size >= 8 + 32 && (flags & 12) != 8) {
    uint64_t n = meta_peek_nblocks (file);
    if (n < (UINT64_C (1) << 24))
      c.nblocks = n + ((flags & 12) == 4);
  }
  bitmap = calloc (1, bm_bytes (c.nblocks) + 1);
  if (bitmap == NULL)
    abort ();
  c.meta_fd = fuzz_memfd (file, size, NULL, 0);
  why[0] = '\0';
  r = meta_load (&c, bitmap, why, sizeof why);
  /* 0: loaded; 1: start afresh, with the reason; never anything else for a bad file. */
  if (r != 0 && r != 1)
    abort ();
  if (r == 1 && why[0] == '\0')
    abort ();
  if (r == 0) {
    /* The identity strings are terminated inside their fields. */
    if (memchr (c.meta.vm_uuid, 0, sizeof c.meta.vm_uuid) == NULL ||
        memchr (c.meta.disk_id, 0, sizeof c.meta.disk_id) == NULL ||
        memchr (c.meta.disk_uuid, 0, sizeof c.meta.disk_uuid) == NULL ||
        memchr (c.meta.change_id, 0, sizeof c.meta.change_id) == NULL)
      abort ();
    if (c.nblocks == c.meta.nblocks && c.nblocks > 0) {
      uint8_t hashes[2 * DCACHE_HASH_LEN];
      meta_read_hashes (&c, 0, c.nblocks < 2 ? c.nblocks : 2, hashes);
    }
  }
  close (c.meta_fd);
  free (bitmap);
  free (file);
  return 0;
}
