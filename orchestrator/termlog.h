/* SPDX-License-Identifier: Apache-2.0 */
/* ferry: the termination log — a JSON result that Kubernetes shows as the container's
 * termination message (--termination-log=PATH, $FERRY_TERMINATION_LOG; the kubelet reads
 * /dev/termination-log and keeps at most 4096 bytes, so what is written always fits).
 *
 *   {"command": "migrate", "plan": "wave-1", "exitCode": 75, "result": "retryable",
 *    "counts": {"vms": 3, "verified": 1, "copying": 1, "failed": 1, "cancelled": 1},
 *    "vms": [{"name": "web01", "state": "failed", "round": 2, "error": "..."}, ...],
 *    "error": "the first error of the run", "truncated": false}
 *
 * result is "succeeded" (0), "failed" (1), "usage" (2) or "retryable" (75).  When the
 * whole does not fit, errors are shortened first, then VMs are left out (failed ones are
 * listed first, so they stay longest) and "vmsOmitted" says how many; the document is
 * always valid JSON.
 *
 * THREAD MODEL: called from the main thread only, at exit.
 */
#ifndef FERRY_TERMLOG_H
#define FERRY_TERMLOG_H

#include <stddef.h>

#include "plan.h"

/* Kubernetes' limit on a termination message. */
#define TERMLOG_MAX 4096

/* Route errors through a handler that prints them as the default one does ("ferry:
 * MSG") and keeps the first for the termination log.
 */
void termlog_capture_errors (void);
/* The first error captured since termlog_capture_errors, or NULL. */
const char *termlog_first_error (void);

/* The result of COMMAND with exit STATUS: the plan's VMs from its journal when PLAN is
 * not NULL.  Written to PATH (truncated to fit TERMLOG_MAX); -1 (reported) on failure.
 */
int termlog_write (const char *path, const char *command, const struct plan *plan,
                   int status);

/* Write TEXT (at most TERMLOG_MAX bytes of it) to PATH; -1 (reported) on failure. */
int termlog_write_text (const char *path, const char *text);

/* "result" for an exit status. */
const char *termlog_result (int status);

/* Copy S into a malloc'd string of at most MAX bytes, cut on a UTF-8 boundary and ending
 * in "..." when cut.
 */
char *termlog_shorten (const char *s, size_t max);

#endif /* FERRY_TERMLOG_H */
