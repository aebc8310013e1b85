/* SPDX-License-Identifier: Apache-2.0 */
/* ferry: helpers shared by the libFuzzer targets in fuzz/.
 *
 * Each target is one C file with LLVMFuzzerTestOneInput; it includes this header once.
 * Log lines are dropped unless FUZZ_VERBOSE is set (a fuzzer printing every error runs
 * ten times slower); set it when replaying a crash to see what the code said.
 */
#ifndef FERRY_FUZZ_H
#define FERRY_FUZZ_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "common/log.h"

int LLVMFuzzerTestOneInput (const uint8_t *data, size_t size);
int LLVMFuzzerInitialize (int *argc, char ***argv);

static inline void
fuzz_drop (const char *msg)
{
  (void)msg;
}

/* Known bugs, reported and waiting for a fix in code the fuzz targets do not own, are
 * filtered by the harnesses (each filter is marked XXX with its reproducer in
 * fuzz/crashes/) so that a long run goes on finding new ones.  FUZZ_UNFILTERED=1 turns the
 * filters off: fuzz/run.sh replays each reproducer that way, and it must still crash
 * until the bug is fixed.
 */
static inline bool
fuzz_unfiltered (void)
{
  return getenv ("FUZZ_UNFILTERED") != NULL;
}

/* Called from LLVMFuzzerInitialize. */
static inline void
fuzz_quiet (void)
{
  if (getenv ("FUZZ_VERBOSE") == NULL) {
    log_set_handlers (fuzz_drop, fuzz_drop);
    log_set_info_handler (fuzz_drop);
  } else {
    ferry_debug_soap = 1;
  }
}

/* DATA as a NUL-terminated string (the fuzzer's buffer is not terminated). */
static inline char *
fuzz_strndup (const uint8_t *data, size_t size)
{
  char *s = malloc (size + 1);

  if (s == NULL)
    abort ();
  memcpy (s, data, size);
  s[size] = '\0';
  return s;
}

/* An anonymous file holding DATA, for code that reads a file by descriptor or by path
 * (/proc/self/fd/N in PATH).  Returns the descriptor; abort()s on failure, which is the
 * harness's fault, not the code's.
 */
static inline int
fuzz_memfd (const uint8_t *data, size_t size, char *path, size_t pathlen)
{
  int fd = memfd_create ("ferry-fuzz", MFD_CLOEXEC);
  size_t done = 0;

  if (fd == -1)
    abort ();
  while (done < size) {
    ssize_t n = write (fd, data + done, size - done);
    if (n <= 0)
      abort ();
    done += n;
  }
  if (lseek (fd, 0, SEEK_SET) == -1)
    abort ();
  if (path)
    snprintf (path, pathlen, "/proc/self/fd/%d", fd);
  return fd;
}

#endif /* FERRY_FUZZ_H */
