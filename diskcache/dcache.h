/* SPDX-License-Identifier: Apache-2.0 */
/* ferry: the CBT-aware disk cache.
 *
 * A cache is an image file (a sparse file, or an existing file or block device such as a
 * PVC's disk.img) plus a metadata file: the disk's identity, the change id of the source
 * state that the valid blocks hold, a validity bitmap with one bit per block at the
 * source's change granularity, a SHA-256 per block, and the identity of the image it
 * describes (checked at open: an image removed, truncated, hole-punched or replaced makes
 * every block invalid).  See diskcache/README.md for what is guaranteed and how.
 *
 *   struct dcache *c = dcache_open (&params, &ops, opaque);  // invalidates what changed
 *   dcache_fill (c, workers, progress, data);                  // fetch what is invalid
 *   dcache_pread (c, buf, count, offset);                      // served from the image
 *   dcache_close (c);
 *
 * diskcache knows no provider: it talks to the source through dcache_source_ops, which
 * the plugin implements over vSphere (and later RHV), and unit tests over a fake.
 *
 * THREAD MODEL: dcache_pread, dcache_fill and dcache_stats may be called from any number
 * of threads at once; dcache_open and dcache_close from one thread, with no other call on
 * the same cache in flight.  Only one process may open a cache, or write an image, at a
 * time (flock on a lock file and on the image).
 */
#ifndef FERRY_DCACHE_H
#define FERRY_DCACHE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "providers/provider.h"

/* What the cache needs from a source, for one disk at one point in time. */
struct dcache_source_ops {
  /* Read [offset, offset+count) of the disk as of this point in time.  Reports its own
   * errors and returns -1.
   */
  int (*read) (void *opaque, void *buf, size_t count, uint64_t offset);

  /* The areas changed since the state named SINCE, up to this point in time (all of the
   * source's windows, merged, in increasing order).  Returns 0 with *AREAS filled; 1 when
   * the source cannot answer for SINCE (CBT reset, unknown change id, ...) with *WHY set
   * to a malloc'd reason and no error reported, which makes the cache invalidate
   * everything; -1 on any other error (reported).
   */
  int (*changed_areas) (void *opaque, const char *since, extent_vector *areas, char **why);

  /* The allocated areas at this point in time; *KNOWN = false when the source cannot
   * tell (then every block is data).  Unallocated areas read as zeros and are never
   * fetched.  Returns -1 on error (reported).
   */
  int (*allocated_areas) (void *opaque, extent_vector *areas, bool *known);
};

struct dcache_params {
  const char *image; /* image file or block device; a missing file is created sparse */
  const char *meta;  /* the metadata file (created if missing) */
  /* The disk's identity and the point in time being opened. */
  const char *vm_uuid;
  const char *disk_id;   /* the source's disk id: vSphere device key */
  const char *disk_uuid; /* may be NULL */
  uint64_t capacity;
  const char *change_id; /* of this point in time; NULL = none (everything invalid) */
  uint32_t block_size;   /* change granularity, a power of 2 (vSphere CBT: 64 KiB) */
  /* Persist the validity bitmap after this many newly valid bytes (0 = default 32 MiB). */
  uint64_t batch_bytes;
  /* Largest single fetch from the source (0 = default 4 MiB). */
  uint32_t request_max;
  /* At open, read back and check the SHA-256 of every valid block in the image, not only
   * a sample: any mismatch makes every block invalid.
   */
  bool verify;
};

struct dcache_stats {
  uint64_t hit_bytes;     /* read bytes that were valid in the image */
  uint64_t miss_bytes;    /* read bytes that had to be fetched or zeroed first */
  uint64_t fetched_bytes; /* bytes read from the source (reads and fill) */
  uint64_t fetch_requests;
  uint64_t zeroed_bytes;      /* known-unallocated bytes written as zeros, not fetched */
  uint64_t invalidated_bytes; /* cleared at open because they changed (or everything) */
  uint64_t valid_bytes;       /* valid now */
  uint64_t persists;          /* bitmap persists (batches) */
  uint64_t bad_hash_pages;    /* torn or corrupted hash pages found at open */
  bool full_refetch;          /* open invalidated everything */
  bool image_mismatch;        /* ... because the image is not the one recorded */
};

struct dcache;

/* Lock the cache, read and check its metadata, and move it to the point in time in
 * PARAMS: blocks changed since the recorded change id are invalidated (all of them when
 * the source cannot answer or the identity differs), then the new change id is recorded,
 * durably, together with the invalidation.  Reports its own errors.
 */
struct dcache *dcache_open (const struct dcache_params *params,
                            const struct dcache_source_ops *ops, void *opaque);
/* Persist the bitmap (after making the data durable) and unlock.  Returns -1 if the
 * final persist failed (reported); the cache is freed anyway.
 */
int dcache_close (struct dcache *c);

/* Read from the cache: valid blocks from the image, invalid ones fetched first. */
int dcache_pread (struct dcache *c, void *buf, size_t count, uint64_t offset);

/* Fetch every invalid block with WORKERS parallel requests (bytes in flight bounded by
 * WORKERS * request_max), zero the known-unallocated ones locally, and persist.
 * PROGRESS, if not NULL, is called from the workers (serialised) with bytes done and the
 * total to fetch.
 */
typedef void (*dcache_progress_fn) (void *data, uint64_t done, uint64_t total);
int dcache_fill (struct dcache *c, unsigned workers, dcache_progress_fn progress,
                 void *data);

/* Make everything fetched so far durable and record it (a batch persist). */
int dcache_flush (struct dcache *c);

void dcache_get_stats (struct dcache *c, struct dcache_stats *st);
void dcache_stats_string (struct dcache *c, char *buf, size_t len);

/* The whole-disk digest: SHA-256 over the per-block SHA-256 in block order, as lower-case
 * hex in BUF (65 bytes).  Returns -1 (reported) unless every block is valid.
 */
int dcache_digest (struct dcache *c, char *buf, size_t len);

/* Called in the child after a fork: records the new holder pid in the lock file. */
void dcache_after_fork (struct dcache *c);

#endif /* FERRY_DCACHE_H */
