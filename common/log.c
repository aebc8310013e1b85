/* SPDX-License-Identifier: Apache-2.0 */
/* ferry: error and debug reporting (see log.h). */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

#include "log.h"

/* Exported by name so that nbdkit's -D ferry.FLAG=N can set them. */
__attribute__ ((visibility ("default"))) int ferry_debug_soap;
__attribute__ ((visibility ("default"))) int ferry_debug_http;
__attribute__ ((visibility ("default"))) int ferry_debug_stats;

static void
stderr_error (const char *msg)
{
  fprintf (stderr, "ferry: %s\n", msg);
}

static void
stderr_debug (const char *msg)
{
  fprintf (stderr, "ferry: debug: %s\n", msg);
}

static log_handler error_handler = stderr_error;
static log_handler info_handler = stderr_error;
static log_handler debug_handler = stderr_debug;

void
log_set_handlers (log_handler error, log_handler debug)
{
  error_handler = error ? error : stderr_error;
  debug_handler = debug ? debug : stderr_debug;
}

static void
vlog (log_handler handler, const char *fs, va_list args)
{
  char *msg = NULL;

  if (vasprintf (&msg, fs, args) == -1) {
    handler (fs);
    return;
  }
  handler (msg);
  free (msg);
}

void
log_set_error_handler (log_handler error)
{
  error_handler = error ? error : stderr_error;
}

void
log_set_info_handler (log_handler info)
{
  info_handler = info ? info : stderr_error;
}

void
log_info (const char *fs, ...)
{
  va_list args;

  va_start (args, fs);
  vlog (info_handler, fs, args);
  va_end (args);
}

static __thread bool demote;
static __thread char demoted[1024];

bool
log_errors_as_debug (bool on)
{
  bool was = demote;
  demote = on;
  if (on)
    demoted[0] = '\0';
  return was;
}

const char *
log_last_demoted (void)
{
  return demoted;
}

/* An error, or a debug message kept as the last demoted one (log_errors_as_debug). */
static void
verror (const char *fs, va_list args)
{
  if (demote) {
    vsnprintf (demoted, sizeof demoted, fs, args);
    log_debug ("%s", demoted);
  } else
    vlog (error_handler, fs, args);
}

void
log_error (const char *fs, ...)
{
  va_list args;

  va_start (args, fs);
  verror (fs, args);
  va_end (args);
}

void
log_debug (const char *fs, ...)
{
  va_list args;

  va_start (args, fs);
  vlog (debug_handler, fs, args);
  va_end (args);
}

static void
stderr_warning (const char *msg)
{
  fprintf (stderr, "ferry: warning: %s\n", msg);
}

static log_handler warning_handler = stderr_warning;

void
log_set_warning_handler (log_handler warning)
{
  warning_handler = warning ? warning : stderr_warning;
}

void
log_warning (const char *fs, ...)
{
  va_list args;

  va_start (args, fs);
  vlog (warning_handler, fs, args);
  va_end (args);
}

static __thread bool error_transient;

void
log_error_transient (const char *fs, ...)
{
  va_list args;

  va_start (args, fs);
  error_transient = true;
  verror (fs, args);
  error_transient = false;
  va_end (args);
}

bool
log_error_is_transient (void)
{
  return error_transient;
}
