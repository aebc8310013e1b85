/* SPDX-License-Identifier: Apache-2.0 */
/* ferry: read-ahead for sequential readers of an immutable disk (see readahead.c). */
#ifndef FERRY_READAHEAD_H
#define FERRY_READAHEAD_H

#include <stdint.h>

/* The largest fetch, amortising a request's cost over 1 MiB. */
#define READAHEAD_CHUNK (1024 * 1024)
/* Chunks held per disk (<= 32 MiB): copy tools keep ~16 MiB in flight per connection. */
#define READAHEAD_SLOTS 32

/* How read-ahead reaches the disk. */
struct readahead_source {
  /* Read [offset, offset+count) from the source; reports its own errors. */
  int (*read) (void *opaque, void *buf, uint32_t count, uint64_t offset);
  /* How many bytes of [offset, offset+count) the source holds as data (the rest reads as
   * zeros without being fetched, and readers that skip holes never ask for it).
   */
  uint64_t (*data_bytes) (void *opaque, uint64_t offset, uint64_t count);
};

struct readahead;

struct readahead *readahead_new (const struct readahead_source *source, void *opaque,
                                 uint64_t size);
void readahead_free (struct readahead *ra);
int readahead_pread (struct readahead *ra, void *buf, uint32_t count, uint64_t offset);
void readahead_stats (struct readahead *ra, uint64_t *chunks, uint64_t *hits,
                      uint64_t *direct);

#endif /* FERRY_READAHEAD_H */
