/* SPDX-License-Identifier: Apache-2.0 */
/* ferry: diskcache bit arrays and the block arithmetic on them.
 *
 * Pure functions, no state: one bit per block, bit i in byte i/8 at position i%8.  They
 * carry the invalidation math (changed areas -> cleared blocks) and the coalescing of
 * invalid blocks into large fetches, and are unit-tested in tests/unit/test-dcache.c.
 */
#include <stdbool.h>
#include <stdint.h>
#include <string.h>

#include "dcache-internal.h"

size_t
bm_bytes (uint64_t nbits)
{
  return (nbits + 7) / 8;
}

void
bm_set_range (uint8_t *bm, uint64_t first, uint64_t n, bool value)
{
  uint64_t i = first, end = first + n;

  /* Bits up to a byte boundary, whole bytes, then the tail. */
  for (; i < end && (i & 7); i++)
    bm[i >> 3] = value ? bm[i >> 3] | (1 << (i & 7)) : bm[i >> 3] & ~(1 << (i & 7));
  if (end - i >= 8) {
    uint64_t nbytes = (end - i) / 8;
    memset (&bm[i >> 3], value ? 0xff : 0, nbytes);
    i += nbytes * 8;
  }
  for (; i < end; i++)
    bm[i >> 3] = value ? bm[i >> 3] | (1 << (i & 7)) : bm[i >> 3] & ~(1 << (i & 7));
}

uint64_t
bm_count (const uint8_t *bm, uint64_t nbits)
{
  uint64_t n = 0, i;

  for (i = 0; i + 8 <= nbits; i += 8)
    n += __builtin_popcount (bm[i >> 3]);
  for (; i < nbits; i++)
    n += bm_get (bm, i);
  return n;
}

uint64_t
bm_find (const uint8_t *bm, uint64_t from, uint64_t end, bool value)
{
  uint8_t skip = value ? 0 : 0xff; /* a byte with no bit of interest */
  uint64_t i = from;

  while (i < end) {
    if ((i & 7) == 0 && i + 8 <= end && bm[i >> 3] == skip) {
      i += 8;
      continue;
    }
    if (bm_get (bm, i) == value)
      return i;
    i++;
  }
  return end;
}

void
blocks_of_range (uint64_t offset, uint64_t length, uint32_t block_size, uint64_t nblocks,
                 uint64_t *first, uint64_t *end)
{
  *first = offset / block_size;
  *end = length ? (offset + length - 1) / block_size + 1 : *first;
  if (*end > nblocks)
    *end = nblocks;
  if (*first > *end)
    *first = *end;
}

uint64_t
bm_apply_areas (uint8_t *bm, uint64_t nblocks, uint32_t block_size,
                const extent_vector *areas, bool value)
{
  uint64_t changed = 0;

  for (size_t i = 0; i < areas->len; i++) {
    uint64_t first, end;
    blocks_of_range (areas->ptr[i].offset, areas->ptr[i].length, block_size, nblocks,
                     &first, &end);
    for (uint64_t b = first; b < end; b++) {
      if (bm_get (bm, b) != value) {
        changed++;
        bm_set_range (bm, b, 1, value);
      }
    }
  }
  return changed;
}

bool
next_run (const uint8_t *valid, const uint8_t *busy, const uint8_t *alloc, uint64_t from,
          uint64_t end, uint64_t max_blocks, uint64_t *first, uint64_t *n, bool *allocated)
{
  uint64_t b = from;

  for (;;) {
    b = bm_find (valid, b, end, false);
    if (b >= end)
      return false;
    if (!bm_get (busy, b))
      break;
    b++;
  }
  *first = b;
  *allocated = alloc == NULL || bm_get (alloc, b);
  /* A zero run costs one call however long it is: only fetches are bounded. */
  for (b++; b < end && (!*allocated || b - *first < max_blocks); b++) {
    if (bm_get (valid, b) || bm_get (busy, b))
      break;
    if ((alloc == NULL || bm_get (alloc, b)) != *allocated)
      break;
  }
  *n = b - *first;
  return true;
}
