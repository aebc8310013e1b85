/* SPDX-License-Identifier: Apache-2.0 */
/* ferry: fetching invalid blocks — one run at a time (fetch_run) and the parallel fill.
 *
 * A run is a stretch of invalid blocks of one allocation class that its caller marked
 * busy.  Allocated runs are read from the source in one request and written to the
 * image; unallocated runs, of any length, are zeroed in the image with one call (a hole
 * punched, or BLKZEROOUT on a block device) and never fetched.  Then the blocks' SHA-256
 * go to the metadata file (for zeroed blocks a marker that stands for the constant hash
 * of a zero block, and which an unwritten hash area already holds: zeroing a 2 TiB
 * stretch costs no hashing and no metadata writes) and the blocks become valid in
 * memory; they become valid on disk at the next batch persist (dcache_flush), which makes
 * the image durable first.
 *
 * Block checksums are SHA-256 through OpenSSL's EVP: already a dependency, and with the
 * SHA-NI instructions of current x86 CPUs (and ARMv8 crypto) it hashes at 1.5+ GB/s per
 * core, faster than any disk source we read from; a cryptographic hash also lets users
 * compare against a digest computed elsewhere with standard tools.
 *
 * dcache_fill: WORKERS threads take runs from a cursor under c->lock (like nbdcopy's
 * workers), each with one buffer of request_max bytes, so at most WORKERS * request_max
 * bytes are in flight.  Progress is reported under a mutex of the fill.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <linux/falloc.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <linux/fs.h>
#include <openssl/evp.h>

#include "common/cleanup.h"
#include "common/log.h"
#include "common/util.h"
#include "dcache-internal.h"

void
block_hash (const void *data, size_t len, uint8_t *out)
{
  unsigned n = DCACHE_HASH_LEN;
  EVP_Digest (data, len, out, &n, EVP_sha256 (), NULL);
}

static int
pwrite_image (struct dcache *c, const void *buf, size_t count, uint64_t offset)
{
  if (pwrite_full (c->image_fd, buf, count, offset) == -1) {
    log_error ("%s: write at %" PRIu64 ": %m", c->image_path, offset);
    return -1;
  }
  return 0;
}

/* Make [offset, offset+len) of the image read as zeros. */
static int
zero_image (struct dcache *c, uint64_t offset, uint64_t len)
{
  static const char zeros[65536];

  if (!c->image_is_blockdev) {
    if (fallocate (c->image_fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, offset, len) ==
            0 ||
        fallocate (c->image_fd, FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE, offset, len) ==
            0)
      return 0;
  } else {
    uint64_t range[2] = { offset, len };
    if (ioctl (c->image_fd, BLKZEROOUT, range) == 0)
      return 0;
  }
  while (len > 0) {
    size_t n = len < sizeof zeros ? len : sizeof zeros;
    if (pwrite_image (c, zeros, n, offset) == -1)
      return -1;
    offset += n;
    len -= n;
  }
  return 0;
}

int
fetch_run (struct dcache *c, uint64_t first, uint64_t n, bool allocated, void *buf)
{
  uint64_t offset = first * c->block_size;
  uint64_t len = n * c->block_size;
  CLEANUP_FREE uint8_t *hashes = NULL; /* NULL: zero markers */
  CLEANUP_FREE void *own = NULL;
  int r = -1;

  if (offset + len > c->capacity)
    len = c->capacity - offset;
  if (allocated) {
    if ((hashes = malloc (n * DCACHE_HASH_LEN)) == NULL ||
        (buf == NULL && (buf = own = malloc (len)) == NULL)) {
      log_error ("malloc: %m");
      goto out;
    }
    if (c->ops->read (c->opaque, buf, len, offset) == -1)
      goto out;
    if (pwrite_image (c, buf, len, offset) == -1)
      goto out;
    for (uint64_t i = 0; i < n; i++) {
      uint64_t bl = i == n - 1 ? len - i * c->block_size : c->block_size;
      block_hash ((char *)buf + i * c->block_size, bl, hashes + i * DCACHE_HASH_LEN);
    }
  } else if (zero_image (c, offset, len) == -1)
    goto out;
  if (meta_write_hashes (c, first, n, hashes) == -1)
    goto out;
  crash_point ("fetch");
  r = 0;

out:;
  bool flush;
  {
    ACQUIRE_LOCK_FOR_CURRENT_SCOPE (&c->lock);
    bm_set_range (c->busy, first, n, false);
    if (r == 0) {
      bm_set_range (c->valid, first, n, true);
      c->dirty = true;
      c->stats.valid_bytes += len;
      /* Only fetched bytes fill a batch: zeroing again after a crash costs nothing. */
      if (allocated) {
        c->pending_bytes += len;
        c->stats.fetched_bytes += len;
        c->stats.fetch_requests++;
      } else
        c->stats.zeroed_bytes += len;
    }
    flush = r == 0 && c->pending_bytes >= c->batch_bytes;
    pthread_cond_broadcast (&c->cond);
  }
  if (flush && dcache_flush (c) == -1)
    return -1;
  return r;
}

struct fill {
  struct dcache *c;
  uint64_t cursor; /* next block to look at; under c->lock */
  bool failed;     /* under c->lock */
  pthread_mutex_t progress_lock;
  uint64_t done, total; /* under progress_lock */
  dcache_progress_fn progress;
  void *data;
};

static void *
fill_worker (void *arg)
{
  struct fill *f = arg;
  struct dcache *c = f->c;
  CLEANUP_FREE void *buf = malloc (c->request_max);
  uint64_t max_blocks = c->request_max / c->block_size;

  if (buf == NULL) {
    log_error ("malloc: %m");
    goto fail;
  }
  for (;;) {
    uint64_t first, n;
    bool allocated;
    {
      ACQUIRE_LOCK_FOR_CURRENT_SCOPE (&c->lock);
      if (f->failed || !next_run (c->valid, c->busy, c->alloc, f->cursor, c->nblocks,
                                  max_blocks, &first, &n, &allocated))
        return NULL;
      f->cursor = first + n;
      bm_set_range (c->busy, first, n, true);
    }
    if (fetch_run (c, first, n, allocated, buf) == -1)
      goto fail;
    if (allocated) {
      uint64_t len = n * c->block_size;
      if (first * c->block_size + len > c->capacity)
        len = c->capacity - first * c->block_size;
      ACQUIRE_LOCK_FOR_CURRENT_SCOPE (&f->progress_lock);
      f->done += len;
      if (f->progress)
        f->progress (f->data, f->done, f->total);
    }
  }

fail:
  pthread_mutex_lock (&c->lock);
  f->failed = true;
  pthread_mutex_unlock (&c->lock);
  return NULL;
}

int
dcache_fill (struct dcache *c, unsigned workers, dcache_progress_fn progress, void *data)
{
  struct fill f = { .c = c, .progress = progress, .data = data };
  pthread_t *threads;
  unsigned started = 0;
  uint64_t b;

  if (workers == 0)
    workers = 1;
  /* What there is to fetch: the invalid allocated blocks. */
  {
    ACQUIRE_LOCK_FOR_CURRENT_SCOPE (&c->lock);
    for (b = bm_find (c->valid, 0, c->nblocks, false); b < c->nblocks;
         b = bm_find (c->valid, b + 1, c->nblocks, false)) {
      if (c->alloc == NULL || bm_get (c->alloc, b))
        f.total += b == c->nblocks - 1 ? c->capacity - b * c->block_size : c->block_size;
    }
  }
  log_debug ("%s: fill: %" PRIu64 " bytes to fetch with %u workers", c->image_path, f.total,
             workers);
  pthread_mutex_init (&f.progress_lock, NULL);
  threads = calloc (workers, sizeof *threads);
  if (threads == NULL) {
    log_error ("calloc: %m");
    return -1;
  }
  for (; started < workers; started++) {
    int err = pthread_create (&threads[started], NULL, fill_worker, &f);
    if (err) {
      log_error ("pthread_create: %s", strerror (err));
      pthread_mutex_lock (&c->lock);
      f.failed = true;
      pthread_mutex_unlock (&c->lock);
      break;
    }
  }
  for (unsigned i = 0; i < started; i++)
    pthread_join (threads[i], NULL);
  free (threads);
  pthread_mutex_destroy (&f.progress_lock);
  if (f.failed)
    return -1;
  /* Blocks a concurrent reader was fetching when a worker passed them: wait for them, and
   * if that reader failed, say so rather than report a complete fill.
   */
  {
    ACQUIRE_LOCK_FOR_CURRENT_SCOPE (&c->lock);
    while (bm_find (c->busy, 0, c->nblocks, true) < c->nblocks)
      pthread_cond_wait (&c->cond, &c->lock);
    for (b = bm_find (c->valid, 0, c->nblocks, false); b < c->nblocks;
         b = bm_find (c->valid, b + 1, c->nblocks, false)) {
      if (c->alloc == NULL || bm_get (c->alloc, b)) {
        log_error ("%s: fill: block %" PRIu64
                   " is still not valid (a concurrent read of it "
                   "failed); fill again",
                   c->image_path, b);
        return -1;
      }
    }
  }
  return dcache_flush (c);
}
