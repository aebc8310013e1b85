/* SPDX-License-Identifier: Apache-2.0 */
/* ferry: error and debug reporting shared by the libraries, the plugin and the CLIs.
 *
 * Library code reports an error once, where it happens, with log_error(), and returns
 * -1/NULL.  Where the message goes is the caller's choice: the nbdkit plugin routes errors
 * to nbdkit_error and debug lines to nbdkit_debug; the CLIs print "ferry: ..." to stderr
 * (the default).  A warning (something works but is unsafe, e.g. sslverify=false) is
 * neither: it goes to its own handler, by default "ferry: warning: ..." on stderr, which
 * is where nbdkit's own messages go too.
 *
 * THREAD MODEL: the handlers are set once at start-up, before any thread exists; the log
 * functions may then be called from any thread.
 */
#ifndef FERRY_LOG_H
#define FERRY_LOG_H

#include <stdbool.h>

typedef void (*log_handler) (const char *msg);

void log_set_handlers (log_handler error, log_handler debug);
/* Only where errors go (debug lines keep their handler); NULL = the default. */
void log_set_error_handler (log_handler error);
/* Where log_info goes (default: stderr, "ferry: MSG"). */
void log_set_info_handler (log_handler info);
void log_error (const char *fs, ...) __attribute__ ((format (printf, 1, 2)));
/* While ON in the calling thread, log_error goes to the debug handler instead, and the
 * last such message is kept (log_last_demoted): for an attempt whose failure the caller
 * recovers from, such as a fallback to another server.  Returns the previous setting.
 */
bool log_errors_as_debug (bool on);
/* The last error demoted in this thread, or "" (valid until the next one). */
const char *log_last_demoted (void);
void log_debug (const char *fs, ...) __attribute__ ((format (printf, 1, 2)));
/* Something the user should know that is not an error ("removing a leftover ..."). */
void log_info (const char *fs, ...) __attribute__ ((format (printf, 1, 2)));

/* Debug flags, set by nbdkit as -D ferry.soap=1 etc. (nbdkit finds them by symbol name in
 * the plugin), or by the CLIs from their own options.
 */
extern int ferry_debug_soap;  /* every SOAP call with its timing */
extern int ferry_debug_http;  /* every HTTP request, retry and backoff */
extern int ferry_debug_stats; /* counters printed at the end */

/* Something that works but is unsafe or surprising: "ferry: warning: MSG" on stderr by
 * default, never through the error handler (nbdkit would print "error: warning: ...").
 */
void log_set_warning_handler (log_handler warning);
void log_warning (const char *fs, ...) __attribute__ ((format (printf, 1, 2)));

/* An error that retrying later may cure (the server or the network failed, for good only
 * for now): reported like log_error, and while the error handler runs,
 * log_error_is_transient () is true in that thread, so that a CLI can tell a retryable
 * failure (exit 75) from a final one.
 */
void log_error_transient (const char *fs, ...) __attribute__ ((format (printf, 1, 2)));
bool log_error_is_transient (void);

#endif /* FERRY_LOG_H */
