/* SPDX-License-Identifier: Apache-2.0 */
/* ferry: small system helpers (see util.h). */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <libgen.h>
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "util.h"

double
time_monotonic (void)
{
  struct timespec ts;

  clock_gettime (CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec / 1e9;
}

void
sleep_ms (long ms)
{
  struct timespec ts = { .tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000 };

  while (nanosleep (&ts, &ts) == -1 && errno == EINTR)
    ;
}

int
pwrite_full (int fd, const void *buf, size_t count, uint64_t offset)
{
  const char *p = buf;

  while (count > 0) {
    ssize_t r = pwrite (fd, p, count, offset);
    if (r == -1 && errno == EINTR)
      continue;
    if (r == -1)
      return -1;
    p += r;
    count -= r;
    offset += r;
  }
  return 0;
}

int
pread_full (int fd, void *buf, size_t count, uint64_t offset)
{
  char *p = buf;

  while (count > 0) {
    ssize_t r = pread (fd, p, count, offset);
    if (r == -1 && errno == EINTR)
      continue;
    if (r <= 0)
      return r == 0 ? 0 : -1;
    p += r;
    count -= r;
    offset += r;
  }
  return 1;
}

void
wiping_free (void *p)
{
  if (p) {
    explicit_bzero (p, malloc_usable_size (p));
    free (p);
  }
}

void *
wiping_realloc (void *p, size_t n)
{
  size_t have = p ? malloc_usable_size (p) : 0;
  void *q;

  if (p && n <= have)
    return p;
  if (n == 0) {
    wiping_free (p);
    return NULL;
  }
  q = malloc (n);
  if (q && p) {
    memcpy (q, p, have);
    wiping_free (p);
  }
  return q;
}

int
write_file_atomic (const char *path, const void *buf, size_t len)
{
  char *tmp = NULL, *dir = NULL;
  int fd = -1, dfd = -1, r = -1, saved;

  if (asprintf (&tmp, "%s.tmp.%ld", path, (long)getpid ()) == -1) {
    tmp = NULL;
    goto out;
  }
  dir = strdup (path);
  if (dir == NULL)
    goto out;
  fd = open (tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd == -1 || pwrite_full (fd, buf, len, 0) == -1 || fsync (fd) == -1)
    goto out;
  if (close (fd) == -1) {
    fd = -1;
    goto out;
  }
  fd = -1;
  if (rename (tmp, path) == -1)
    goto out;
  dfd = open (dirname (dir), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd == -1 || fsync (dfd) == -1)
    goto out;
  r = 0;

out:
  saved = errno;
  if (fd != -1)
    close (fd);
  if (dfd != -1)
    close (dfd);
  if (r == -1 && tmp)
    unlink (tmp);
  free (tmp);
  free (dir);
  errno = saved;
  return r;
}

char *
xml_escape (const char *s)
{
  char *buf = NULL;
  size_t len = 0;
  FILE *fp = open_memstream (&buf, &len);

  if (fp == NULL)
    return NULL;
  for (; *s; s++) {
    switch (*s) {
      case '&':
        fputs ("&amp;", fp);
        break;
      case '<':
        fputs ("&lt;", fp);
        break;
      case '>':
        fputs ("&gt;", fp);
        break;
      case '"':
        fputs ("&quot;", fp);
        break;
      case '\'':
        fputs ("&apos;", fp);
        break;
      default:
        fputc (*s, fp);
    }
  }
  if (fclose (fp) != 0) {
    free (buf);
    return NULL;
  }
  return buf;
}

void
test_stop (const char *point, unsigned n)
{
  static unsigned fired; /* a bit per entry */
  const char *at = getenv ("FERRY_TEST_STOP_AT");
  const char *dflt = getenv ("FERRY_TEST_STOP_ROUND");
  size_t len = strlen (point);

  for (unsigned i = 0; at && *at && i < 32; i++) {
    size_t k = strcspn (at, ",");
    const char *colon = memchr (at, ':', k);
    const char *want = colon ? colon + 1 : dflt;
    size_t name_len = colon ? (size_t)(colon - at) : k;
    if (name_len == len && strncmp (at, point, len) == 0 &&
        (want == NULL || strtoul (want, NULL, 10) == n) &&
        !(__atomic_fetch_or (&fired, 1u << i, __ATOMIC_RELAXED) & (1u << i))) {
      fprintf (stderr, "ferry: test stop at %s (%u)\n", point, n);
      raise (SIGSTOP);
    }
    at += k + (at[k] == ',');
  }
}
