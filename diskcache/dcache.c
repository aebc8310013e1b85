/* SPDX-License-Identifier: Apache-2.0 */
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
 * Before that, the image must be the one the metadata describes (see check_image): the
 * same size, the same cache id in its extended attribute (or, where there is none, the
 * same device and inode), no valid data block in a hole, and a sample of valid blocks (all
 * of them with params->verify) whose bytes still hash to the recorded SHA-256.  An image
 * removed, truncated, hole-punched or replaced makes every block invalid.
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
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <linux/fs.h>
#include <openssl/evp.h>

#include "common/cleanup.h"
#include "common/log.h"
#include "common/util.h"
#include "dcache-internal.h"

#define DEFAULT_BATCH_BYTES (UINT64_C (32) << 20)
#define DEFAULT_REQUEST_MAX (UINT32_C (4) << 20)
/* Valid data blocks read back and checked at open (without verify). */
#define SAMPLE_BLOCKS 32

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

/* Open and lock the image; it is grown to the capacity only after check_image. */
static int
open_image (struct dcache *c)
{
  struct stat st;

  c->image_fd = open (c->image_path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (c->image_fd == -1 || fstat (c->image_fd, &st) == -1) {
    log_error ("%s: cannot open the cache image: %m", c->image_path);
    return -1;
  }
  if (S_ISBLK (st.st_mode)) {
    c->image_is_blockdev = true;
    if (ioctl (c->image_fd, BLKGETSIZE64, &c->image_size) == -1) {
      log_error ("%s: BLKGETSIZE64: %m", c->image_path);
      return -1;
    }
    if (c->image_size < c->capacity) {
      log_error ("%s: the block device has %" PRIu64 " bytes, the disk needs %" PRIu64,
                 c->image_path, c->image_size, c->capacity);
      return -1;
    }
    /* A device's node may be another inode in another pod: its number is what counts. */
    c->image_dev = st.st_rdev;
    c->image_ino = 0;
  } else if (!S_ISREG (st.st_mode)) {
    log_error ("%s: the cache image must be a regular file or a block device",
               c->image_path);
    return -1;
  } else {
    c->image_size = st.st_size;
    c->image_dev = st.st_dev;
    c->image_ino = st.st_ino;
  }
  return lock_image (c);
}

/* Record the image in c->meta: grow it to the capacity, give it a new cache id if NEW_ID
 * (or it has none), and put the id into its extended attribute where the filesystem has
 * them.  Made durable (fsync) before the metadata that names it.
 */
static int
record_image (struct dcache *c, bool new_id)
{
  static const uint8_t none[META_CACHE_ID_LEN];
  struct dcache_meta *m = &c->meta;
  bool changed = false;

  if (new_id || memcmp (m->cache_id, none, sizeof none) == 0) {
    if (getrandom (m->cache_id, sizeof m->cache_id, 0) != sizeof m->cache_id) {
      log_error ("getrandom: %m");
      return -1;
    }
    m->flags = 0;
    changed = true;
  }
  if (!c->image_is_blockdev && c->image_size < c->capacity) {
    struct stat st;
    if (ftruncate (c->image_fd, c->capacity) == -1 || fstat (c->image_fd, &st) == -1) {
      log_error ("%s: cannot grow the cache image to %" PRIu64 " bytes: %m", c->image_path,
                 c->capacity);
      return -1;
    }
    c->image_size = st.st_size;
    changed = true;
  }
  if (!c->image_is_blockdev && !(m->flags & META_IMAGE_XATTR)) {
    if (fsetxattr (c->image_fd, IMAGE_XATTR, m->cache_id, sizeof m->cache_id, 0) == 0) {
      m->flags |= META_IMAGE_XATTR;
      changed = true;
    } else
      log_debug ("%s: no extended attribute for the cache id (%m): the image is known "
                 "by its device and inode",
                 c->image_path);
  }
  if (c->image_is_blockdev)
    m->flags |= META_IMAGE_BLOCKDEV;
  m->image_dev = c->image_dev;
  m->image_ino = c->image_ino;
  m->image_size = c->image_size;
  if (changed && fsync (c->image_fd) == -1) {
    log_error ("%s: fsync: %m", c->image_path);
    return -1;
  }
  return 0;
}

/* Why the image is certainly not the one c->meta describes, or NULL.  *VERIFY_ALL is set
 * when it may be (a device or inode number changed, as when a volume is attached
 * elsewhere, and no cache id on the image tells): then every valid block is checked.
 */
static const char *
image_mismatch (struct dcache *c, char *why, size_t whylen, bool *verify_all)
{
  const struct dcache_meta *m = &c->meta;
  uint8_t id[META_CACHE_ID_LEN];

  if (!!(m->flags & META_IMAGE_BLOCKDEV) != c->image_is_blockdev)
    snprintf (why, whylen, "the image was a %s, it is a %s now",
              c->image_is_blockdev ? "file" : "block device",
              c->image_is_blockdev ? "block device" : "file");
  else if (c->image_size != m->image_size)
    snprintf (why, whylen,
              "the image has %" PRIu64 " bytes, %" PRIu64 " were recorded (truncated, "
              "removed or replaced)",
              c->image_size, m->image_size);
  else if (m->flags & META_IMAGE_XATTR) {
    ssize_t r = fgetxattr (c->image_fd, IMAGE_XATTR, id, sizeof id);
    if (r == -1)
      snprintf (why, whylen, "the image has no cache id (%s): removed or replaced",
                strerror (errno));
    else if (r != sizeof id || memcmp (id, m->cache_id, sizeof id) != 0)
      snprintf (why, whylen, "the image belongs to another cache (its cache id differs)");
    else
      return NULL;
  } else {
    if (c->image_dev != m->image_dev || c->image_ino != m->image_ino) {
      log_debug ("%s: device/inode %" PRIx64 "/%" PRIu64 ", recorded %" PRIx64 "/%" PRIu64
                 ": checking every valid block",
                 c->image_path, c->image_dev, c->image_ino, m->image_dev, m->image_ino);
      *verify_all = true;
    }
    return NULL;
  }
  return why;
}

/* Is [off, off+len) of a regular-file image entirely a hole?  *DS, *DE: the data segment
 * found last (start at 0, 0); offsets must not decrease between calls.
 */
static bool
in_hole (struct dcache *c, uint64_t off, uint64_t len, uint64_t *ds, uint64_t *de)
{
  if (c->image_is_blockdev)
    return false;
  if (off >= *de) {
    off_t d = lseek (c->image_fd, off, SEEK_DATA), h;
    if (d == -1) {
      /* ENXIO: nothing but holes from here; otherwise the filesystem cannot tell. */
      *ds = errno == ENXIO ? UINT64_MAX : off;
      *de = UINT64_MAX;
      return errno == ENXIO;
    }
    h = lseek (c->image_fd, d, SEEK_HOLE);
    *ds = d;
    *de = h == -1 ? UINT64_MAX : (uint64_t)h;
  }
  return *ds >= off + len;
}

static uint64_t
block_len (const struct dcache *c, uint64_t b)
{
  return b == c->nblocks - 1 && c->capacity % c->block_size ? c->capacity % c->block_size
                                                            : c->block_size;
}

/* Does block B of the image still hash to HASH?  0 yes, 1 no (WHY set), -1 error. */
static int
check_block (struct dcache *c, uint64_t b, const uint8_t *hash, void *buf, char *why,
             size_t whylen)
{
  uint8_t sum[DCACHE_HASH_LEN];
  int r = pread_full (c->image_fd, buf, block_len (c, b), b * c->block_size);

  if (r == -1) {
    log_error ("%s: read at %" PRIu64 ": %m", c->image_path, b * c->block_size);
    return -1;
  }
  if (r == 0) {
    snprintf (why, whylen, "block %" PRIu64 " is past the end of the image", b);
    return 1;
  }
  block_hash (buf, block_len (c, b), sum);
  if (memcmp (sum, hash, DCACHE_HASH_LEN) == 0)
    return 0;
  snprintf (why, whylen,
            "the bytes of block %" PRIu64 " in the image do not match its recorded SHA-256",
            b);
  return 1;
}

/* The valid blocks against the image: none may be a hole unless it holds zeros, and
 * every one (ALL) or a random sample of SAMPLE_BLOCKS data blocks must hash to its
 * recorded SHA-256.  0 = consistent, 1 = not (WHY set), -1 = error.
 */
static int
check_blocks (struct dcache *c, bool all, char *why, size_t whylen)
{
  const uint64_t chunk = 64 * META_HASHES_PER_PAGE;
  CLEANUP_FREE uint8_t *hashes = malloc (chunk * DCACHE_HASH_LEN);
  CLEANUP_FREE void *buf = malloc (c->block_size);
  uint64_t sample[SAMPLE_BLOCKS];
  uint8_t sample_hash[SAMPLE_BLOCKS][DCACHE_HASH_LEN];
  uint64_t seen = 0, rng, ds = 0, de = 0, checked = 0;
  int r;

  if (hashes == NULL || buf == NULL) {
    log_error ("malloc: %m");
    return -1;
  }
  if (getrandom (&rng, sizeof rng, 0) != sizeof rng)
    rng = (uint64_t)getpid () * 0x9e3779b97f4a7c15;
  rng |= 1;
  for (uint64_t b0 = 0; b0 < c->nblocks; b0 += chunk) {
    uint64_t k = c->nblocks - b0 < chunk ? c->nblocks - b0 : chunk;

    if (bm_find (c->valid, b0, b0 + k, true) >= b0 + k)
      continue;
    /* Zero blocks in a hole of the image: nothing to read (most of a sparse disk). */
    if (meta_hashes_unwritten (c, b0, k) &&
        in_hole (c, b0 * c->block_size,
                 (b0 + k) * c->block_size > c->capacity ? c->capacity - b0 * c->block_size
                                                        : k * c->block_size,
                 &ds, &de))
      continue;
    if (meta_read_hashes (c, b0, k, hashes) == -1)
      return -1;
    for (uint64_t b = bm_find (c->valid, b0, b0 + k, true); b < b0 + k;
         b = bm_find (c->valid, b + 1, b0 + k, true)) {
      const uint8_t *h = meta_real_hash (c, b, hashes + (b - b0) * DCACHE_HASH_LEN);
      const uint8_t *zero = meta_real_hash (c, b, (const uint8_t[DCACHE_HASH_LEN]){ 0 });

      if (in_hole (c, b * c->block_size, block_len (c, b), &ds, &de)) {
        if (memcmp (h, zero, DCACHE_HASH_LEN) != 0) {
          snprintf (why, whylen, "block %" PRIu64 " holds data but is a hole in the image",
                    b);
          return 1;
        }
        continue;
      }
      if (all) {
        if ((r = check_block (c, b, h, buf, why, whylen)) != 0)
          return r;
        checked++;
        continue;
      }
      /* Reservoir sampling: each data block has the same chance to be checked. */
      rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
      if (seen < SAMPLE_BLOCKS || rng % (seen + 1) < SAMPLE_BLOCKS) {
        uint64_t i = seen < SAMPLE_BLOCKS ? seen : rng % SAMPLE_BLOCKS;
        sample[i] = b;
        memcpy (sample_hash[i], h, DCACHE_HASH_LEN);
      }
      seen++;
    }
  }
  for (uint64_t i = 0; i < seen && i < SAMPLE_BLOCKS; i++, checked++)
    if ((r = check_block (c, sample[i], sample_hash[i], buf, why, whylen)) != 0)
      return r;
  log_debug ("%s: the image matches its metadata (%" PRIu64 " valid data blocks read back)",
             c->image_path, checked);
  return 0;
}

/* Is the image the one the loaded metadata describes?  0 yes (bad hash pages' blocks
 * cleared), 1 no (WHY set), -1 error.
 */
static int
check_image (struct dcache *c, bool verify, char *why, size_t whylen)
{
  bool all = verify;
  int64_t bad;

  if (image_mismatch (c, why, whylen, &all))
    return 1;
  bad = meta_check_pages (c, c->valid);
  if (bad == -1)
    return -1;
  c->stats.bad_hash_pages = bad;
  return check_blocks (c, all, why, whylen);
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
  if (reason == NULL) {
    char image_why[400];
    int ir = check_image (c, p->verify, image_why, sizeof image_why);
    if (ir == -1)
      return -1;
    if (ir == 1) {
      snprintf (why, sizeof why, "the image is not the one the metadata %s describes: %s",
                c->meta_path, image_why);
      reason = why;
      c->stats.image_mismatch = true;
    }
  }
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
    /* A fresh layout: no hash of the old state survives into the new one. */
    if (meta_reset_file (c) == -1)
      return -1;
  }
  if (record_image (c, reason != NULL) == -1)
    return -1;
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
  pthread_mutex_init (&c->hash_lock, NULL);
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
  {
    CLEANUP_FREE void *zeros = calloc (1, c->block_size);
    if (zeros == NULL) {
      log_error ("calloc: %m");
      goto err;
    }
    block_hash (zeros, c->block_size, c->zero_hash);
    block_hash (zeros, block_len (c, c->nblocks - 1), c->zero_hash_last);
  }
  if (lock_acquire (c) == -1 || open_image (c) == -1)
    goto err;
  c->meta_fd = open (c->meta_path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
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

  /* After a failed sync the kernel may have dropped data it has reported once and will
   * not report again: nothing fetched since the last persist can be trusted on disk.
   */
  if (__atomic_load_n (&c->sync_failed, __ATOMIC_SEQ_CST)) {
    log_error ("%s: not recording more blocks as valid: an earlier fdatasync failed in "
               "this process",
               c->image_path);
    return -1;
  }
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
    __atomic_store_n (&c->sync_failed, true, __ATOMIC_SEQ_CST);
    log_error ("%s: fdatasync: %m", c->image_path);
    return -1;
  }
  if (fdatasync (c->meta_fd) == -1) {
    __atomic_store_n (&c->sync_failed, true, __ATOMIC_SEQ_CST);
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
  if (c->meta_fd >= 0 && c->image_fd >= 0 &&
      (c->dirty || __atomic_load_n (&c->sync_failed, __ATOMIC_SEQ_CST)))
    r = dcache_flush (c);
  if (c->image_fd >= 0)
    close (c->image_fd);
  if (c->meta_fd >= 0)
    close (c->meta_fd);
  lock_release (c);
  pthread_mutex_destroy (&c->lock);
  pthread_mutex_destroy (&c->persist_lock);
  pthread_mutex_destroy (&c->hash_lock);
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

  /* After a failed sync the kernel may drop the pages it could not write, and a read
   * would then get the old bytes from the disk: serve nothing more from this image.
   */
  if (__atomic_load_n (&c->sync_failed, __ATOMIC_SEQ_CST)) {
    log_error ("%s: read at %" PRIu64 ": refused: an earlier fdatasync of the cache "
               "failed in this process",
               c->image_path, offset);
    return -1;
  }
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
            " persists, %" PRIu64 " bad hash pages",
            st.hit_bytes, st.miss_bytes, st.fetched_bytes, st.fetch_requests,
            st.zeroed_bytes, st.invalidated_bytes,
            st.image_mismatch ? " (full refetch: image mismatch)"
            : st.full_refetch ? " (full refetch)"
                              : "",
            st.valid_bytes, c->capacity, st.persists, st.bad_hash_pages);
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
    for (uint64_t i = 0; i < k; i++)
      EVP_DigestUpdate (ctx, meta_real_hash (c, b + i, hashes + i * DCACHE_HASH_LEN),
                        DCACHE_HASH_LEN);
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
