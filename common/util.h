/* SPDX-License-Identifier: Apache-2.0 */
/* ferry: small system helpers every part may use: a monotonic clock, sleeping, and
 * positioned I/O that finishes what it starts.
 */
#ifndef FERRY_UTIL_H
#define FERRY_UTIL_H

#include <stddef.h>
#include <stdint.h>

/* Seconds on the monotonic clock, for measuring durations. */
double time_monotonic (void);

/* Sleep MS milliseconds, resuming after signals. */
void sleep_ms (long ms);

/* Write all of BUF at OFFSET (retrying short writes and EINTR); 0, or -1 with errno. */
int pwrite_full (int fd, const void *buf, size_t count, uint64_t offset);

/* Read COUNT bytes at OFFSET: 1 when all were read, 0 at end of file first, -1 with
 * errno.
 */
int pread_full (int fd, void *buf, size_t count, uint64_t offset);

/* Replace PATH with BUF durably: a temporary file beside it, written and synced, renamed
 * over PATH, then the directory synced.  A reader (or a power loss) sees the old or the new
 * content, never a mix.  0, or -1 with errno (nothing reported).
 */
int write_file_atomic (const char *path, const void *buf, size_t len);

/* S with XML's five special characters escaped: malloc'd, NULL on ENOMEM. */
char *xml_escape (const char *s);

/* free and realloc that wipe the block first, for libraries that copy secrets into memory
 * of their own (libcurl's request buffer holds a Login body, jansson's strings an RHV
 * token).  The blocks are malloc's, so either free may release them.
 */
void wiping_free (void *p);
void *wiping_realloc (void *p, size_t n);

/* A seam for crash tests: with FERRY_TEST_STOP_AT=POINT[:N][,POINT[:N]...] (N defaults to
 * FERRY_TEST_STOP_ROUND, else any), the process stops itself (SIGSTOP) when it reaches
 * POINT with that N, once per entry; the test then kills it or lets it go on.
 */
void test_stop (const char *point, unsigned n);

#endif /* FERRY_UTIL_H */
