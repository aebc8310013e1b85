/* ferry: small system helpers (see util.h). */
#include <errno.h>
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
