/* ferry: the disk cache — opening at a point in time (the invalidation policy), reads,
 * persists, stats and the whole-disk digest.
 *
 * Policy at open, for the point in time the caller names (its change id):
 *   - same identity and a recorded change id the source can answer for: clear the blocks
 *     changed since that id;
 *   - the same change id as recorded: nothing changed, nothing cleared;
 *   - anything else (new or unreadable/inconsistent metadata, another VM, disk, capacity
 *     or block size, no change id on either side, or a source that cannot answer: CBT
 *     reset, unknown change id): clear everything.
 * The new change id and the invalidation are written in ONE metadata persist, before any
 * block is fetched, so a crash can never leave the new id with stale blocks valid.
 *
 * State: see dcache-internal.h (struct dcache, its locks and THREAD MODEL).
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <linux/fs.h>
#include <openssl/evp.h>

#include "common/cleanup.h"
#include "common/log.h"
#include "dcache-internal.h"

#define DEFAULT_BATCH_BYTES (UINT64_C (32) << 20)
#define DEFAULT_REQUEST_MAX (UINT32_C (4) << 20)

/* Test-only crash points: FERRY_DCACHE_CRASH_AT=WHERE:N kills the process with SIGKILL
 * the Nth time WHERE is reached ("fetch": a run written to the image, its bits not yet
 * persisted; "persist": a bitmap persist with its header half written).  Used by
 * tests/integration/test-cache-crash.sh; never set it in production.
 */
static char crash_where[16];
static long crash_count;

void
crash_point (const char *where)
{
  if (crash_count > 0 && strcmp (where, crash_where) == 0 &&
      __atomic_sub_fetch (&crash_count, 1, __ATOMIC_SEQ_CST) == 0) {
    log_debug ("FERRY_DCACHE_CRASH_AT: killing ourselves at %s", where);
    raise (SIGKILL);
  }
}

static void
crash_setup (void)
{
  const char *s = getenv ("FERRY_DCACHE_CRASH_AT");
  const char *colon;

  if (s == NULL || (colon = strchr (s, ':')) == NULL ||
      (size_t)(colon - s) >= sizeof crash_where)
    return;
  memcpy (crash_where, s, colon - s);
  crash_where[colon - s] = '\0';
  crash_count = strtol (colon + 1, NULL, 10);
}

static int
open_image (struct dcache *c)
{
  struct stat st;

  c->image_fd = open (c->image_path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (c->image_fd == -1 || fstat (c->image_fd, &st) == -1) {
    log_error ("%s: cannot open the cache image: %m", c->image_path);
    return -1;
  }
  if (S_ISBLK (st.st_mode)) {
    uint64_t size;
    c->image_is_blockdev = true;
    if (ioctl (c->image_fd, BLKGETSIZE64, &size) == -1) {
      log_error ("%s: BLKGETSIZE64: %m", c->image_path);
      return -1;
    }
    if (size < c->capacity) {
      log_error ("%s: the block device has %" PRIu64 " bytes, the disk needs %" PRIu64,
                 c->image_path, size, c->capacity);
      return -1;
    }
  } else if (!S_ISREG (st.st_mode)) {
    log_error ("%s: the cache image must be a regular file or a block device",
               c->image_path);
    return -1;
  } else if ((uint64_t)st.st_size < c->capacity &&
             ftruncate (c->image_fd, c->capacity) == -1) {
    log_error ("%s: cannot grow the cache image to %" PRIu64 " bytes: %m", c->image_path,
               c->capacity);
    return -1;
  }
  return 0;
}

static bool
same_string (const char *recorded, const char *now)
{
  return strcmp (recorded, now ? now : "") == 0;
}

/* Why the recorded state cannot be moved to P's point in time by CBT, or NULL. */
static const char *
identity_mismatch (const struct dcache *c, const struct dcache_params *p, char *why,
                   size_t whylen)
{
  const struct dcache_meta *m = &c->meta;

  if (!same_string (m->vm_uuid, p->vm_uuid) || !same_string (m->disk_id, p->disk_id) ||
      !same_string (m->disk_uuid, p->disk_uuid))
    snprintf (why, whylen, "it holds VM %s disk %s (uuid %s), not VM %s disk %s (uuid %s)",
              m->vm_uuid, m->disk_id, m->disk_uuid, p->vm_uuid ? p->vm_uuid : "",
              p->disk_id, p->disk_uuid ? p->disk_uuid : "");
  else if (m->capacity != p->capacity)
    snprintf (why, whylen, "the capacity changed from %" PRIu64 " to %" PRIu64, m->capacity,
              p->capacity);
  else if (m->block_size != c->block_size)
    snprintf (why, whylen, "the block size changed from %" PRIu32 " to %" PRIu32,
              m->block_size, c->block_size);
  else if (m->change_id[0] == '\0')
    snprintf (why, whylen, "no change id was recorded");
  else if (p->change_id == NULL)
    snprintf (why, whylen, "the source has no change id (change tracking is off)");
  else
    return NULL;
  return why;
}

/* Move the cache to P's point in time; see the policy at the top. */
static int
invalidate (struct dcache *c, const struct dcache_params *p)
{
  char why[512];
  const char *reason;
  CLEANUP_FREE char *source_why = NULL;
  extent_vector areas = empty_vector;
  int r;

  r = meta_load (c, c->valid, why, sizeof why);
  if (r == -1)
    return -1;
  reason = r == 1 ? why : identity_mismatch (c, p, why, sizeof why);
  if (reason == NULL && strcmp (c->meta.change_id, p->change_id) != 0) {
    r = c->ops->changed_areas (c->opaque, c->meta.change_id, &areas, &source_why);
    if (r == -1)
      return -1;
    if (r == 1)
      reason = source_why ? source_why : "the source cannot answer";
    else {
      uint64_t n = bm_apply_areas (c->valid, c->nblocks, c->block_size, &areas, false);
      c->stats.invalidated_bytes = n * c->block_size;
      log_debug ("%s: %zu areas changed since %s: %" PRIu64 " valid blocks invalidated",
                 c->image_path, areas.len, c->meta.change_id, n);
    }
    extent_vector_reset (&areas);
  }
  if (reason) {
    uint64_t was = bm_count (c->valid, c->nblocks);
    log_debug ("%s: every block invalid (full refetch): %s", c->image_path, reason);
    c->stats.full_refetch = true;
    c->stats.invalidated_bytes = was * c->block_size;
    memset (c->valid, 0, bm_bytes (c->nblocks));
    if ((c->meta.nblocks != c->nblocks || r == 1) && meta_reset_file (c) == -1)
      return -1;
  }
  /* Record the new point in time together with the invalidation, durably. */
  memset (&c->meta.vm_uuid, 0, sizeof c->meta.vm_uuid);
  memset (&c->meta.disk_id, 0, sizeof c->meta.disk_id);
  memset (&c->meta.disk_uuid, 0, sizeof c->meta.disk_uuid);
  memset (&c->meta.change_id, 0, sizeof c->meta.change_id);
  snprintf (c->meta.vm_uuid, sizeof c->meta.vm_uuid, "%s", p->vm_uuid ? p->vm_uuid : "");
  snprintf (c->meta.disk_id, sizeof c->meta.disk_id, "%s", p->disk_id);
  snprintf (c->meta.disk_uuid, sizeof c->meta.disk_uuid, "%s",
            p->disk_uuid ? p->disk_uuid : "");
  snprintf (c->meta.change_id, sizeof c->meta.change_id, "%s",
            p->change_id ? p->change_id : "");
  c->meta.capacity = c->capacity;
  c->meta.block_size = c->block_size;
  c->meta.nblocks = c->nblocks;
  c->meta.version = META_VERSION;
  if (meta_persist (c, c->valid) == -1)
    return -1;
  c->stats.valid_bytes = bm_count (c->valid, c->nblocks) * c->block_size;
  if (c->nblocks && bm_get (c->valid, c->nblocks - 1) && c->capacity % c->block_size)
    c->stats.valid_bytes -= c->block_size - c->capacity % c->block_size;
  return 0;
}

static int
check_params (const struct dcache_params *p)
{
  const char *bad = NULL;

  if (p->image == NULL || p->meta == NULL || p->disk_id == NULL)
    bad = "image, metadata file and disk id are required";
  else if (p->block_size < 512 || (p->block_size & (p->block_size - 1)))
    bad = "the block size must be a power of 2, at least 512";
  else if (p->capacity == 0)
    bad = "the disk is empty";
  else if (p->vm_uuid && strlen (p->vm_uuid) >= META_VM_UUID_LEN)
    bad = "the VM uuid is too long";
  else if (strlen (p->disk_id) >= META_DISK_ID_LEN)
    bad = "the disk id is too long";
  else if (p->disk_uuid && strlen (p->disk_uuid) >= META_DISK_UUID_LEN)
    bad = "the disk uuid is too long";
  else if (p->change_id && strlen (p->change_id) >= META_CHANGE_ID_LEN)
    bad = "the change id is too long";
  if (bad)
    log_error ("cache %s: %s", p->image ? p->image : "?", bad);
  return bad ? -1 : 0;
}

struct dcache *
dcache_open (const struct dcache_params *p, const struct dcache_source_ops *ops,
             void *opaque)
{
  struct dcache *c;
  extent_vector allocated = empty_vector;
  bool known;

  if (check_params (p) == -1)
    return NULL;
  crash_setup ();
  c = calloc (1, sizeof *c);
  if (c == NULL) {
    log_error ("calloc: %m");
    return NULL;
  }
  c->ops = ops;
  c->opaque = opaque;
  c->image_fd = c->meta_fd = c->lock_fd = -1;
  c->block_size = p->block_size;
  c->capacity = p->capacity;
  c->nblocks = p->capacity / p->block_size + (p->capacity % p->block_size != 0);
  c->batch_bytes = p->batch_bytes ? p->batch_bytes : DEFAULT_BATCH_BYTES;
  c->request_max = p->request_max ? p->request_max : DEFAULT_REQUEST_MAX;
  if (c->request_max < c->block_size)
    c->request_max = c->block_size;
  pthread_mutex_init (&c->lock, NULL);
  pthread_mutex_init (&c->persist_lock, NULL);
  pthread_cond_init (&c->cond, NULL);
  c->image_path = strdup (p->image);
  c->meta_path = strdup (p->meta);
  if (c->image_path == NULL || c->meta_path == NULL ||
      asprintf (&c->lock_path, "%s.lock", p->meta) == -1) {
    c->lock_path = NULL;
    log_error ("strdup: %m");
    goto err;
  }
  c->valid = calloc (1, bm_bytes (c->nblocks));
  c->busy = calloc (1, bm_bytes (c->nblocks));
  c->persist_buf = calloc (1, bm_bytes (c->nblocks));
  if (c->valid == NULL || c->busy == NULL || c->persist_buf == NULL) {
    log_error ("calloc: %m");
    goto err;
  }
  if (lock_acquire (c) == -1 || open_image (c) == -1)
    goto err;
  c->meta_fd = open (c->meta_path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (c->meta_fd == -1) {
    log_error ("%s: cannot open the cache metadata: %m", c->meta_path);
    goto err;
  }
  if (invalidate (c, p) == -1)
    goto err;

  /* Known-unallocated blocks are zeroed locally, never fetched. */
  if (ops->allocated_areas (opaque, &allocated, &known) == -1)
    goto err;
  if (known) {
    c->alloc = calloc (1, bm_bytes (c->nblocks));
    if (c->alloc == NULL) {
      log_error ("calloc: %m");
      extent_vector_reset (&allocated);
      goto err;
    }
    bm_apply_areas (c->alloc, c->nblocks, c->block_size, &allocated, true);
  }
  extent_vector_reset (&allocated);
  log_debug ("%s: open at change id %s: %" PRIu64 " of %" PRIu64 " bytes valid",
             c->image_path, p->change_id ? p->change_id : "(none)", c->stats.valid_bytes,
             c->capacity);
  return c;

err:
  c->dirty = false; /* nothing to persist */
  dcache_close (c);
  return NULL;
}

int
dcache_flush (struct dcache *c)
{
  uint64_t pending;
  ACQUIRE_LOCK_FOR_CURRENT_SCOPE (&c->persist_lock);

  {
    ACQUIRE_LOCK_FOR_CURRENT_SCOPE (&c->lock);
    if (!c->dirty)
      return 0;
    pending = c->pending_bytes;
    c->dirty = false;
    memcpy (c->persist_buf, c->valid, bm_bytes (c->nblocks));
  }
  /* The data, then the block checksums, then the bits that claim them. */
  if (fdatasync (c->image_fd) == -1) {
    log_error ("%s: fdatasync: %m", c->image_path);
    return -1;
  }
  if (fdatasync (c->meta_fd) == -1) {
    log_error ("%s: fdatasync: %m", c->meta_path);
    return -1;
  }
  if (meta_persist (c, c->persist_buf) == -1) {
    pthread_mutex_lock (&c->lock);
    c->dirty = true;
    pthread_mutex_unlock (&c->lock);
    return -1;
  }
  ACQUIRE_LOCK_FOR_CURRENT_SCOPE (&c->lock);
  c->pending_bytes -= pending;
  c->stats.persists++;
  return 0;
}

int
dcache_close (struct dcache *c)
{
  int r = 0;

  if (c == NULL)
    return 0;
  if (c->meta_fd >= 0 && c->image_fd >= 0 && c->dirty)
    r = dcache_flush (c);
  if (c->image_fd >= 0)
    close (c->image_fd);
  if (c->meta_fd >= 0)
    close (c->meta_fd);
  lock_release (c);
  pthread_mutex_destroy (&c->lock);
  pthread_mutex_destroy (&c->persist_lock);
  pthread_cond_destroy (&c->cond);
  free (c->valid);
  free (c->busy);
  free (c->alloc);
  free (c->persist_buf);
  free (c->image_path);
  free (c->meta_path);
  free (c->lock_path);
  free (c);
  return r;
}

/* Make blocks [first, end) valid, fetching what is not; waits for runs other threads
 * are fetching.  *MISSED tells whether anything had to be fetched.
 */
static int
ensure_valid (struct dcache *c, uint64_t first, uint64_t end, bool *missed)
{
  uint64_t max_blocks = c->request_max / c->block_size;
  uint64_t b = first;

  pthread_mutex_lock (&c->lock);
  for (;;) {
    uint64_t run_first, n;
    bool allocated;

    b = bm_find (c->valid, b, end, false);
    if (b >= end)
      break;
    *missed = true;
    if (bm_get (c->busy, b)) {
      pthread_cond_wait (&c->cond, &c->lock);
      continue;
    }
    next_run (c->valid, c->busy, c->alloc, b, end, max_blocks, &run_first, &n, &allocated);
    bm_set_range (c->busy, run_first, n, true);
    pthread_mutex_unlock (&c->lock);
    if (fetch_run (c, run_first, n, allocated, NULL) == -1)
      return -1;
    pthread_mutex_lock (&c->lock);
  }
  pthread_mutex_unlock (&c->lock);
  return 0;
}

int
dcache_pread (struct dcache *c, void *buf, size_t count, uint64_t offset)
{
  uint64_t first, end;
  bool missed = false;
  char *p = buf;

  blocks_of_range (offset, count, c->block_size, c->nblocks, &first, &end);
  if (ensure_valid (c, first, end, &missed) == -1)
    return -1;
  {
    ACQUIRE_LOCK_FOR_CURRENT_SCOPE (&c->lock);
    if (missed)
      c->stats.miss_bytes += count;
    else
      c->stats.hit_bytes += count;
  }
  while (count > 0) {
    ssize_t r = pread (c->image_fd, p, count, offset);
    if (r == -1 && errno == EINTR)
      continue;
    if (r <= 0) {
      log_error ("%s: read at %" PRIu64 ": %s", c->image_path, offset,
                 r == 0 ? "unexpected end of file" : strerror (errno));
      return -1;
    }
    p += r;
    count -= r;
    offset += r;
  }
  return 0;
}

void
dcache_get_stats (struct dcache *c, struct dcache_stats *st)
{
  ACQUIRE_LOCK_FOR_CURRENT_SCOPE (&c->lock);
  *st = c->stats;
}

void
dcache_stats_string (struct dcache *c, char *buf, size_t len)
{
  struct dcache_stats st;

  dcache_get_stats (c, &st);
  snprintf (buf, len,
            "hits %" PRIu64 " bytes, misses %" PRIu64 " bytes, fetched %" PRIu64
            " bytes in %" PRIu64 " requests, zeroed %" PRIu64 " bytes, invalidated %" PRIu64
            " bytes at open%s, valid %" PRIu64 " of %" PRIu64 " bytes, %" PRIu64
            " persists",
            st.hit_bytes, st.miss_bytes, st.fetched_bytes, st.fetch_requests,
            st.zeroed_bytes, st.invalidated_bytes, st.full_refetch ? " (full refetch)" : "",
            st.valid_bytes, c->capacity, st.persists);
}

int
dcache_digest (struct dcache *c, char *buf, size_t len)
{
  EVP_MD_CTX *ctx;
  uint8_t hashes[256 * DCACHE_HASH_LEN], sum[32];
  unsigned n = 32;

  {
    ACQUIRE_LOCK_FOR_CURRENT_SCOPE (&c->lock);
    if (bm_find (c->valid, 0, c->nblocks, false) < c->nblocks) {
      log_error ("%s: no digest: not every block is in the cache (fill it first)",
                 c->image_path);
      return -1;
    }
  }
  ctx = EVP_MD_CTX_new ();
  EVP_DigestInit_ex (ctx, EVP_sha256 (), NULL);
  for (uint64_t b = 0; b < c->nblocks; b += 256) {
    uint64_t k = c->nblocks - b < 256 ? c->nblocks - b : 256;
    if (meta_read_hashes (c, b, k, hashes) == -1) {
      EVP_MD_CTX_free (ctx);
      return -1;
    }
    EVP_DigestUpdate (ctx, hashes, k * DCACHE_HASH_LEN);
  }
  EVP_DigestFinal_ex (ctx, sum, &n);
  EVP_MD_CTX_free (ctx);
  for (unsigned i = 0; i < 32 && 2 * i + 2 < len; i++)
    snprintf (buf + 2 * i, 3, "%02x", sum[i]);
  return 0;
}

void
dcache_after_fork (struct dcache *c)
{
  lock_note_pid (c);
}
