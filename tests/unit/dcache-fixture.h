/* SPDX-License-Identifier: Apache-2.0 */
/* ferry: the fixture the diskcache unit tests share (tests/unit/test-dcache*.c).
 *
 * The image and metadata I/O goes through a seam: pwrite, fallocate, ftruncate,
 * fdatasync and fsync are wrapped (-Wl,--wrap, tests/unit/dcache-fixture.wrap) so that a
 * test can record every write and sync to the cache's two files (and replay the durable
 * ones as a power loss would leave them), or make an fdatasync fail.  The errors the cache
 * logs are kept for tests that check what it says.  A fake source serves a disk from
 * memory, answers for changed and allocated areas as a test sets them, and counts what
 * was read; each test that uses files gets a fresh directory (setup_dir, teardown_dir).
 */
#ifndef FERRY_DCACHE_FIXTURE_H
#define FERRY_DCACHE_FIXTURE_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "diskcache/dcache-internal.h"

#define BS 65536u

/* ---- the I/O seam ---- */

extern char dir[];
extern char image[64], meta[64];

enum { F_IMAGE, F_META, NFILES };
enum { OP_WRITE, OP_ZERO, OP_TRUNCATE, OP_SYNC };
struct op {
  int file, kind;
  uint64_t off, len;
  uint8_t *data;
};
struct io_log {
  pthread_mutex_t lock;
  bool recording;
  struct op *ops;
  size_t n, cap;
  int fail_image_syncs; /* fdatasync on the image fails with EIO this many times */
  unsigned meta_writes; /* pwrites to the metadata file, always counted */
};
extern struct io_log io;

ssize_t __real_pwrite (int fd, const void *buf, size_t count, off_t offset);
int __real_fdatasync (int fd);
int __real_fsync (int fd);
int __real_fallocate (int fd, int mode, off_t offset, off_t len);
int __real_ftruncate (int fd, off_t length);

/* Forget the recorded ops; stop recording and failing syncs. */
void io_reset (void);

/* Errors logged by the cache, for tests that check what it says. */
extern char errors[8192];
void capture_error (const char *msg);
void print_debug (const char *msg);

/* ---- a fake source ---- */

struct fake {
  uint64_t capacity;
  uint8_t *data;
  extent_vector changed;
  int verdict; /* 0: answer with CHANGED; 1: cannot answer */
  int changed_calls;
  extent_vector allocated; /* empty + known = all unallocated */
  bool known;
  uint64_t read_bytes;
};

int fake_changed (void *opaque, const char *since, extent_vector *areas, char **why);
extern const struct dcache_source_ops fake_ops;
/* The parameters of a cache of F at CHANGE_ID in the test's directory. */
struct dcache_params params (struct fake *f, const char *change_id);
void assert_image_equals (struct fake *f);
/* A source of CAPACITY random bytes. */
struct fake *new_fake (uint64_t capacity);
void free_fake (struct fake *f);
int setup_dir (void **state);
int teardown_dir (void **state);
/* Open F's cache at CHANGE_ID, fill it, close it, check the image; the bytes read. */
uint64_t fill_round (struct fake *f, const char *change_id, struct dcache_stats *st);

#endif /* FERRY_DCACHE_FIXTURE_H */
