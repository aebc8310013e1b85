/* SPDX-License-Identifier: Apache-2.0 */
/* ferry: proving what a target holds — its digest re-read from storage, and a sample of
 * blocks compared byte for byte with the source.
 *
 * The digest (documented in ferry.pod and ferry-plan.md): SHA-256 over the concatenation
 * of the binary SHA-256 of each 64 KiB block, in order, the last block as long as the
 * disk allows.  It equals diskcache's dcache_digest, computed at fill time from the bytes
 * fetched from the source, so the two compare the source side with the target side.
 */
#ifndef FERRY_VERIFY_H
#define FERRY_VERIFY_H

#include <signal.h>
#include <stdbool.h>
#include <stdint.h>

#include "providers/source.h"

#define DIGEST_BLOCK_SIZE 65536

/* The digest of the first SIZE bytes of PATH, read from storage (the file is synced and
 * its cached pages dropped first).  HEX gets 64 hex digits and a NUL.  Stops with -1 when
 * *CANCEL becomes non-zero.  Reports its own errors.
 */
int verify_digest (const char *path, uint64_t size, char hex[65],
                   const volatile sig_atomic_t *cancel);

/* Compare PERCENT % of disk I's allocated 64 KiB blocks (at least one when it has data),
 * chosen at random, between SRC and the target PATH.  *BLOCKS and *MISMATCHES get the
 * counts; a mismatch is reported with its offset.  -1 on I/O errors (reported).
 */
int verify_sample (struct source *src, size_t i, const char *path, double percent,
                   uint64_t *blocks, uint64_t *mismatches);

/* Whether the target PATH is disk I's: block 0 (partition table, boot code) and COUNT - 1
 * random allocated blocks compared between SRC and PATH, as verify_sample counts them.
 * Bounded by COUNT whatever the disk's size.
 */
int verify_identity (struct source *src, size_t i, const char *path, unsigned count,
                     uint64_t *blocks, uint64_t *mismatches);

#endif /* FERRY_VERIFY_H */
