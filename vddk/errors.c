/* SPDX-License-Identifier: Apache-2.0 */
/* ferry: VixDiskLib logging and error texts.
 *
 * ferry's libraries report an error once, where it happens, with log_error.  Here that
 * message is kept as this thread's pending detail; the VixDiskLib call that fails then
 * turns it (with its own context in front) into a VixError with vddk_fail.  The message is
 * stored in a small ring and its id rides in the high 32 bits of the VixError, so that
 * GetErrorText gives the server's own words even when the error travelled to another
 * thread (ReadAsync callbacks run on ferry's workers; nbdkit asks for the text on its
 * own).  The low 16 bits stay the VIX code, as VIX_ERROR_CODE expects.
 *
 * Every failure is also given to the consumer's warn callback (nbdkit prints those as
 * errors, and hides them while it probes for extents); debug lines go to its log callback.
 * NULL callbacks (nbdkit --dump-plugin) silence that output.
 *
 * THREAD MODEL: the callbacks are set by InitEx before any thread of ours exists; the
 * ring is guarded by a mutex; the pending detail is thread-local.
 */
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "vddk.h"

#define RING_SIZE 256
#define PENDING_MAX 2048

static VixDiskLibGenericLogFunc *log_fn, *warn_fn;

static pthread_mutex_t ring_lock = PTHREAD_MUTEX_INITIALIZER;
static struct {
  uint32_t id;
  char *msg;
} ring[RING_SIZE];
static uint32_t next_id = 1;

static __thread char pending[PENDING_MAX];

static void
call (VixDiskLibGenericLogFunc *fn, const char *fmt, ...)
{
  va_list args;

  va_start (args, fmt);
  fn (fmt, args);
  va_end (args);
}

/* The first error of a failing call is its cause; later ones are its consequences. */
static void
error_handler (const char *msg)
{
  if (pending[0] == '\0')
    snprintf (pending, sizeof pending, "%s", msg);
}

static void
debug_handler (const char *msg)
{
  if (log_fn)
    call (log_fn, "ferry: %s\n", msg);
}

static void
warning_handler (const char *msg)
{
  if (warn_fn)
    call (warn_fn, "ferry: warning: %s\n", msg);
}

void
vddk_log_setup (VixDiskLibGenericLogFunc *log, VixDiskLibGenericLogFunc *warn)
{
  log_fn = log;
  warn_fn = warn;
  log_set_handlers (error_handler, debug_handler);
  log_set_info_handler (debug_handler);
  log_set_warning_handler (warning_handler);
}

void
vddk_log_reset (void)
{
  log_fn = warn_fn = NULL;
  pthread_mutex_lock (&ring_lock);
  for (size_t i = 0; i < RING_SIZE; i++) {
    free (ring[i].msg);
    ring[i].msg = NULL;
    ring[i].id = 0;
  }
  pthread_mutex_unlock (&ring_lock);
}

void
vddk_debug (const char *fmt, ...)
{
  va_list args;
  char *msg;

  if (log_fn == NULL)
    return;
  va_start (args, fmt);
  if (vasprintf (&msg, fmt, args) != -1) {
    call (log_fn, "ferry: %s\n", msg);
    free (msg);
  }
  va_end (args);
}

void
vddk_clear_pending (void)
{
  pending[0] = '\0';
}

bool
vddk_pending_has (const char *s)
{
  return strstr (pending, s) != NULL;
}

VixError
vddk_fail (VixError code, const char *fmt, ...)
{
  char *ctx = NULL, *msg = NULL;
  uint32_t id;
  va_list args;

  if (fmt) {
    va_start (args, fmt);
    if (vasprintf (&ctx, fmt, args) == -1)
      ctx = NULL;
    va_end (args);
  }
  if (ctx && pending[0]) {
    if (asprintf (&msg, "%s: %s", ctx, pending) == -1)
      msg = NULL;
    free (ctx);
  } else if (ctx)
    msg = ctx;
  else if (pending[0])
    msg = strdup (pending);
  pending[0] = '\0';
  if (msg == NULL)
    return code;
  if (warn_fn)
    call (warn_fn, "ferry: %s\n", msg);

  pthread_mutex_lock (&ring_lock);
  id = next_id++;
  if (next_id == 0)
    next_id = 1;
  free (ring[id % RING_SIZE].msg);
  ring[id % RING_SIZE].msg = msg;
  ring[id % RING_SIZE].id = id;
  pthread_mutex_unlock (&ring_lock);
  return code | ((VixError)id << 32);
}

static const char *
code_text (VixError code)
{
  switch (code) {
    case VIX_OK:
      return "The operation was successful";
    case VIX_E_FAIL:
      return "Unknown error";
    case VIX_E_OUT_OF_MEMORY:
      return "Memory allocation failed: out of memory";
    case VIX_E_INVALID_ARG:
      return "One of the parameters was invalid";
    case VIX_E_FILE_NOT_FOUND:
      return "The file was not found";
    case VIX_E_NOT_SUPPORTED:
      return "The operation is not supported";
    case VIX_E_FILE_READ_ONLY:
      return "The file is write-protected";
    case VIX_E_AUTHENTICATION_FAIL:
      return "Authentication failed";
    case VIX_E_HOST_CONNECTION_LOST:
      return "The connection to the host was lost";
    case VIX_E_DISK_OUTOFRANGE:
      return "The request refers to an area beyond the end of the disk";
    case VIX_E_CANNOT_CONNECT_TO_HOST:
      return "Cannot connect to the host";
    case VIX_ASYNC:
      return "The operation is running asynchronously";
    default:
      return "Unknown error";
  }
}

char *
VixDiskLib_GetErrorText (VixError err, const char *locale)
{
  VixError code = VIX_ERROR_CODE (err);
  uint32_t id = err >> 32;
  char *text = NULL;

  if (id) {
    pthread_mutex_lock (&ring_lock);
    if (ring[id % RING_SIZE].id == id &&
        asprintf (&text, "%s (error %u: %s)", ring[id % RING_SIZE].msg, (unsigned)code,
                  code_text (code)) == -1)
      text = NULL;
    pthread_mutex_unlock (&ring_lock);
  }
  if (text == NULL &&
      asprintf (&text, "%s (error %u)", code_text (code), (unsigned)code) == -1)
    return NULL;
  return text;
}

void
VixDiskLib_FreeErrorText (char *text)
{
  free (text);
}
