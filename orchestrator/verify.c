/* SPDX-License-Identifier: Apache-2.0 */
/* ferry: target digests and sampled comparison with the source (verify.h). */
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "common/cleanup.h"
#include "common/log.h"
#include "common/util.h"
#include "verify.h"

#define READ_SIZE (4 * 1024 * 1024)

/* The SHA-256 of a 64 KiB block of zeros. */
static void
zero_block_hash (uint8_t out[32])
{
  static const char zeros[DIGEST_BLOCK_SIZE];
  unsigned n = 32;

  EVP_Digest (zeros, sizeof zeros, out, &n, EVP_sha256 (), NULL);
}

/* Where the next data of FD at or after POS starts (SIZE when none: the rest is a hole).
 * Files without SEEK_DATA (block devices, some filesystems) are all data.
 */
static uint64_t
next_data (int fd, uint64_t pos, uint64_t size)
{
  off_t d = lseek (fd, pos, SEEK_DATA);

  if (d == -1)
    return errno == ENXIO ? size : pos;
  return (uint64_t)d < size ? (uint64_t)d : size;
}

int
verify_digest (const char *path, uint64_t size, char hex[65],
               const volatile sig_atomic_t *cancel)
{
  CLEANUP_FREE char *buf = malloc (READ_SIZE);
  EVP_MD_CTX *ctx = EVP_MD_CTX_new ();
  uint8_t sum[32], zero_hash[32];
  struct stat st;
  unsigned n = 32;
  int fd = -1, r = -1;

  if (buf == NULL || ctx == NULL) {
    log_error ("%s: out of memory", path);
    goto out;
  }
  fd = open (path, O_RDONLY | O_CLOEXEC);
  if (fd == -1) {
    log_error ("%s: %m", path);
    goto out;
  }
  /* Read what storage holds, not what this host's page cache remembers. */
  if (fdatasync (fd) == -1 && errno != EINVAL && errno != EBADF) {
    log_error ("%s: fdatasync: %m", path);
    goto out;
  }
  posix_fadvise (fd, 0, 0, POSIX_FADV_DONTNEED);
  if (fstat (fd, &st) == 0 && S_ISREG (st.st_mode) && (uint64_t)st.st_size < size) {
    log_error ("%s: the target is shorter (%" PRIu64 " bytes) than the disk (%" PRIu64 ")",
               path, (uint64_t)st.st_size, size);
    goto out;
  }
  EVP_DigestInit_ex (ctx, EVP_sha256 (), NULL);
  zero_block_hash (zero_hash);
  for (uint64_t pos = 0; pos < size;) {
    /* Whole blocks in a hole of the file read as zeros: their hash is a constant. */
    uint64_t data = next_data (fd, pos, size);
    uint64_t hole_blocks = (data - pos) / DIGEST_BLOCK_SIZE;
    if (hole_blocks > 0 && pos + hole_blocks * DIGEST_BLOCK_SIZE <= size) {
      for (uint64_t b = 0; b < hole_blocks; b++)
        EVP_DigestUpdate (ctx, zero_hash, sizeof zero_hash);
      pos += hole_blocks * DIGEST_BLOCK_SIZE;
      continue;
    }
    size_t len = size - pos < READ_SIZE ? size - pos : READ_SIZE;
    int got = pread_full (fd, buf, len, pos);
    if (got != 1) {
      log_error ("%s: read at %" PRIu64 ": %s", path, pos,
                 got == 0 ? "the target is shorter than the disk" : strerror (errno));
      goto out;
    }
    if (cancel && *cancel) {
      log_error ("%s: verification cancelled", path);
      goto out;
    }
    for (size_t off = 0; off < len; off += DIGEST_BLOCK_SIZE) {
      uint8_t h[32];
      unsigned hn = 32;
      size_t bl = len - off < DIGEST_BLOCK_SIZE ? len - off : DIGEST_BLOCK_SIZE;
      EVP_Digest (buf + off, bl, h, &hn, EVP_sha256 (), NULL);
      EVP_DigestUpdate (ctx, h, sizeof h);
    }
    posix_fadvise (fd, pos, len, POSIX_FADV_DONTNEED);
    pos += len;
  }
  EVP_DigestFinal_ex (ctx, sum, &n);
  for (unsigned i = 0; i < 32; i++)
    snprintf (hex + 2 * i, 3, "%02x", sum[i]);
  r = 0;

out:
  if (fd != -1)
    close (fd);
  EVP_MD_CTX_free (ctx);
  return r;
}

/* Compare the block at OFF of disk I between SRC and FD, counting it in *BLOCKS and
 * *MISMATCHES.
 */
static int
compare_block (struct source *src, size_t i, int fd, const char *path, uint64_t off,
               uint64_t *blocks, uint64_t *mismatches)
{
  const struct provider_disk *d = source_disk (src, i);
  char a[DIGEST_BLOCK_SIZE], b[DIGEST_BLOCK_SIZE];
  size_t len =
      d->capacity - off < DIGEST_BLOCK_SIZE ? d->capacity - off : DIGEST_BLOCK_SIZE;

  if (source_pread (src, i, a, len, off) == -1)
    return -1;
  if (pread_full (fd, b, len, off) != 1) {
    log_error ("%s: read at %" PRIu64 ": %m", path, off);
    return -1;
  }
  (*blocks)++;
  if (memcmp (a, b, len) != 0) {
    (*mismatches)++;
    log_error ("%s: the block at offset %" PRIu64 " differs from the source disk %s", path,
               off, d->key);
  }
  return 0;
}

/* WANT random allocated blocks (after FIRST, when set: block 0). */
static int
sample (struct source *src, size_t i, const char *path, uint64_t want, bool first,
        uint64_t *blocks, uint64_t *mismatches)
{
  const struct provider_disk *d = source_disk (src, i);
  const extent_vector *map;
  uint64_t nblocks = (d->capacity + DIGEST_BLOCK_SIZE - 1) / DIGEST_BLOCK_SIZE;
  uint64_t data_blocks, tried = 0;
  int fd, r = -1;

  *blocks = *mismatches = 0;
  if (nblocks == 0)
    return 0;
  if (source_allocated (src, i, &map) == -1)
    return -1;
  data_blocks = map ? (source_data_bytes (src, i, 0, d->capacity) + DIGEST_BLOCK_SIZE - 1) /
                          DIGEST_BLOCK_SIZE
                    : nblocks;
  if (data_blocks == 0 && !first)
    return 0;
  fd = open (path, O_RDONLY | O_CLOEXEC);
  if (fd == -1) {
    log_error ("%s: %m", path);
    return -1;
  }
  if (first && compare_block (src, i, fd, path, 0, blocks, mismatches) == -1)
    goto out;
  want += *blocks;
  /* Random blocks, kept when they hold data (bounded tries for very sparse disks). */
  while (data_blocks > 0 && *blocks < want && tried < want * 64 + 1024) {
    uint64_t rnd, off;
    size_t len;
    if (getrandom (&rnd, sizeof rnd, 0) != sizeof rnd)
      rnd = random ();
    tried++;
    off = (rnd % nblocks) * DIGEST_BLOCK_SIZE;
    len = d->capacity - off < DIGEST_BLOCK_SIZE ? d->capacity - off : DIGEST_BLOCK_SIZE;
    if (map && source_data_bytes (src, i, off, len) == 0)
      continue;
    if (compare_block (src, i, fd, path, off, blocks, mismatches) == -1)
      goto out;
  }
  r = 0;

out:
  close (fd);
  return r;
}

int
verify_sample (struct source *src, size_t i, const char *path, double percent,
               uint64_t *blocks, uint64_t *mismatches)
{
  const struct provider_disk *d = source_disk (src, i);
  const extent_vector *map;
  uint64_t nblocks = (d->capacity + DIGEST_BLOCK_SIZE - 1) / DIGEST_BLOCK_SIZE;
  uint64_t data_blocks, want;

  *blocks = *mismatches = 0;
  if (percent <= 0 || nblocks == 0)
    return 0;
  if (source_allocated (src, i, &map) == -1)
    return -1;
  data_blocks = map ? (source_data_bytes (src, i, 0, d->capacity) + DIGEST_BLOCK_SIZE - 1) /
                          DIGEST_BLOCK_SIZE
                    : nblocks;
  if (data_blocks == 0)
    return 0;
  want = data_blocks * percent / 100;
  return sample (src, i, path, want ? want : 1, false, blocks, mismatches);
}

int
verify_identity (struct source *src, size_t i, const char *path, unsigned count,
                 uint64_t *blocks, uint64_t *mismatches)
{
  return sample (src, i, path, count > 0 ? count - 1 : 0, true, blocks, mismatches);
}
