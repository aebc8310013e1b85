/* SPDX-License-Identifier: Apache-2.0 */
/* ferry: diskcache internals shared by dcache.c, bitmap.c, meta.c, lock.c and fill.c.
 *
 * THREAD MODEL (of struct dcache): c->lock protects the in-memory valid and busy bitmaps,
 * pending_bytes and the stats; c->cond is broadcast whenever a busy run ends.  A block is
 * fetched by exactly one thread: the one that set its busy bit.  c->persist_lock
 * serialises bitmap persists (dcache_flush); it is taken before c->lock, never after.
 * c->hash_lock serialises the read-modify-write of hash pages (meta_write_hashes); it is
 * taken alone.  c->sync_failed is set under c->persist_lock and read anywhere, atomically.
 * Everything else is set in dcache_open and read-only until dcache_close.
 */
#ifndef FERRY_DCACHE_INTERNAL_H
#define FERRY_DCACHE_INTERNAL_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "dcache.h"

#define DCACHE_HASH_LEN 32 /* SHA-256 */

/* ---- bitmap.c: bit arrays and block/range arithmetic (pure) ---- */

static inline bool
bm_get (const uint8_t *bm, uint64_t i)
{
  return (bm[i >> 3] >> (i & 7)) & 1;
}

size_t bm_bytes (uint64_t nbits);
void bm_set_range (uint8_t *bm, uint64_t first, uint64_t n, bool value);
uint64_t bm_count (const uint8_t *bm, uint64_t nbits);
/* First index in [from, end) whose bit is VALUE, or END. */
uint64_t bm_find (const uint8_t *bm, uint64_t from, uint64_t end, bool value);

/* Blocks of BLOCK_SIZE covering [offset, offset+length), clipped to NBLOCKS. */
void blocks_of_range (uint64_t offset, uint64_t length, uint32_t block_size,
                      uint64_t nblocks, uint64_t *first, uint64_t *end);
/* Set (VALUE) or clear the bits of every block that an area touches; returns how many
 * bits changed.
 */
uint64_t bm_apply_areas (uint8_t *bm, uint64_t nblocks, uint32_t block_size,
                         const extent_vector *areas, bool value);
/* The next run to fetch in [from, end): blocks that are invalid, not busy and of one
 * allocation class (ALLOC NULL = all allocated), at most MAX_BLOCKS long if allocated.
 * Returns false when there is none.
 */
bool next_run (const uint8_t *valid, const uint8_t *busy, const uint8_t *alloc,
               uint64_t from, uint64_t end, uint64_t max_blocks, uint64_t *first,
               uint64_t *n, bool *allocated);

/* ---- meta.c: the metadata file ---- */

#define META_MAGIC "FERRYDC\001"
#define META_VERSION 2
#define META_HEADER_SIZE 4096
#define META_VM_UUID_LEN 80
#define META_DISK_ID_LEN 64
#define META_DISK_UUID_LEN 80
#define META_CHANGE_ID_LEN 256
#define META_CACHE_ID_LEN 16
/* The hash area is made of 4 KiB pages: 127 block hashes and a SHA-256 of the page. */
#define META_PAGE_SIZE 4096
#define META_HASHES_PER_PAGE 127
/* meta.flags */
#define META_IMAGE_XATTR 1 /* the image carries the cache id in an extended attribute */
#define META_IMAGE_BLOCKDEV 2
/* The extended attribute on a regular-file image that names the cache it belongs to. */
#define IMAGE_XATTR "user.ferry.dcache-id"

struct dcache_meta {
  uint32_t version;
  uint32_t block_size;
  uint64_t generation;
  uint64_t capacity;
  uint64_t nblocks;
  char vm_uuid[META_VM_UUID_LEN];
  char disk_id[META_DISK_ID_LEN];
  char disk_uuid[META_DISK_UUID_LEN];
  char change_id[META_CHANGE_ID_LEN]; /* "" = none */
  /* The image these blocks are in: its identity when they were recorded. */
  uint8_t cache_id[META_CACHE_ID_LEN]; /* random, new whenever everything is invalid */
  uint32_t flags;                      /* META_IMAGE_* */
  uint64_t image_dev;                  /* st_dev (st_rdev for a block device) */
  uint64_t image_ino;
  uint64_t image_size;
};

/* File layout: header 0 | header 1 | bitmap 0 | bitmap 1 | hash pages. */
uint64_t meta_bitmap_area (uint64_t nblocks);
uint64_t meta_bitmap_offset (int slot, uint64_t nblocks);
uint64_t meta_hash_offset (uint64_t nblocks);
uint64_t meta_hash_pages (uint64_t nblocks);
uint64_t meta_file_size (uint64_t nblocks);
/* A hash page is good when it is all zeros (never written: every hash in it is the
 * zero-block marker) or its checksum matches its contents and its index.
 */
bool meta_page_ok (uint64_t index, const uint8_t *page);
void meta_page_seal (uint64_t index, uint8_t *page);

/* Encode M and BITMAP into HEADER (META_HEADER_SIZE bytes), checksum included.  Returns
 * -1 with WHY if a string does not fit.
 */
int meta_encode (const struct dcache_meta *m, const uint8_t *bitmap, uint8_t *header,
                 char *why, size_t whylen);
/* The nblocks a header claims (unchecked), to know how much bitmap to read. */
uint64_t meta_peek_nblocks (const uint8_t *header);
/* Decode and validate HEADER with its BITMAP (BITMAP_LEN bytes available).  Returns 0,
 * or -1 with WHY (bad magic, version, checksum, inconsistent fields).
 */
int meta_decode (const uint8_t *header, const uint8_t *bitmap, size_t bitmap_len,
                 struct dcache_meta *m, char *why, size_t whylen);

/* ---- the cache ---- */

struct dcache {
  const struct dcache_source_ops *ops;
  void *opaque;
  char *image_path, *meta_path, *lock_path;
  int image_fd, meta_fd, lock_fd;
  bool image_is_blockdev;
  uint64_t image_dev, image_ino, image_size; /* as found at open (see record_image) */

  struct dcache_meta meta; /* as last persisted (generation, change id, identity) */
  int active_slot;         /* the slot holding meta.generation */
  uint64_t nblocks;
  uint32_t block_size;
  uint64_t capacity;
  uint64_t batch_bytes;
  uint32_t request_max;

  pthread_mutex_t lock;
  pthread_cond_t cond;
  uint8_t *valid;         /* in memory: data is in the image (maybe not yet durable) */
  uint8_t *busy;          /* being fetched by some thread */
  uint8_t *alloc;         /* allocated at the source; NULL = all */
  uint64_t pending_bytes; /* fetched and valid since the last persist: the batch */
  bool dirty;             /* some bit became valid since the last persist */
  struct dcache_stats stats;

  pthread_mutex_t persist_lock;
  uint8_t *persist_buf; /* bitmap copy being persisted */
  /* An fdatasync failed: Linux reports a writeback error once and may have dropped the
   * data, so no validity is ever persisted again by this process.
   */
  bool sync_failed;

  pthread_mutex_t hash_lock;
  /* SHA-256 of an all-zero block and of the all-zero last (partial) block: the values the
   * zero marker in the hash area stands for.
   */
  uint8_t zero_hash[DCACHE_HASH_LEN], zero_hash_last[DCACHE_HASH_LEN];
};

/* A stored hash of 32 zero bytes is the marker of a block known to be zeros (SHA-256
 * never yields it in practice), so that zeroing a run writes no hashes at all.
 */
static inline bool
hash_is_marker (const uint8_t *h)
{
  static const uint8_t zero[DCACHE_HASH_LEN];
  return memcmp (h, zero, DCACHE_HASH_LEN) == 0;
}

/* meta.c */
int meta_load (struct dcache *c, uint8_t *bitmap, char *why, size_t whylen);
int meta_reset_file (struct dcache *c);
int meta_persist (struct dcache *c, const uint8_t *bitmap);
/* Store the hashes of blocks [first, first+n); HASHES NULL = the zero marker for all. */
int meta_write_hashes (struct dcache *c, uint64_t first, uint64_t n, const uint8_t *hashes);
/* Read the stored hashes of blocks [first, first+n), each page checked.  A bad page is
 * reported and gives -1.
 */
int meta_read_hashes (struct dcache *c, uint64_t first, uint64_t n, uint8_t *hashes);
/* Are the hashes of blocks [first, first+n) a hole of the file (all zero markers)? */
bool meta_hashes_unwritten (struct dcache *c, uint64_t first, uint64_t n);
/* Check every hash page: blocks of a bad page (torn or corrupted) are cleared in VALID,
 * and the page is rewritten empty.  Returns the number of bad pages, or -1 (reported).
 */
int64_t meta_check_pages (struct dcache *c, uint8_t *valid);
/* Block B's real SHA-256 from a stored hash (the marker stands for zeros). */
const uint8_t *meta_real_hash (const struct dcache *c, uint64_t b, const uint8_t *stored);

/* lock.c */
int lock_acquire (struct dcache *c);
int lock_image (struct dcache *c);
void lock_release (struct dcache *c);
void lock_note_pid (struct dcache *c);

/* fill.c */
int fetch_run (struct dcache *c, uint64_t first, uint64_t n, bool allocated, void *buf);
void block_hash (const void *data, size_t len, uint8_t *out);

/* dcache.c: test-only crash points (FERRY_DCACHE_CRASH_AT=fetch:N|persist:N). */
void crash_point (const char *where);

#endif /* FERRY_DCACHE_INTERNAL_H */
