/* SPDX-License-Identifier: Apache-2.0 */
/* ferry: Prometheus metrics over HTTPS while a copy runs (--metrics-port=N,
 * $FERRY_METRICS_PORT; --metrics-address=ADDR, $FERRY_METRICS_ADDRESS, default 0.0.0.0).
 *
 * GET /metrics answers the Prometheus text format (0.0.4) built from the progress of the
 * run (progress.h): bytes done and to do, zero bytes and rate per disk, the total rate,
 * each VM's round, state and predicted downtime, and the progress in percent under the
 * names that controllers already scrape:
 *
 *   kubevirt_cdi_import_progress_total{ownerUID="UID"} 42.50   CDI's importer metric
 *   ferry_populator_progress{ownerUID="UID"} 42.50             a "...progress" name, as
 *                                                              Forklift's populator
 *                                                              controller looks for
 *
 * (CDI matches `kubevirt_cdi_import_progress_total\{ownerUID\="UID"\} (\d{1,3}\.?\d*)`,
 * Forklift `progress\{ownerUID="UID"\} (\d+\.?\d*)`: one label, two decimals, never an
 * exponent.)  UID is $OWNER_UID, the UID of the PVC or DataVolume the pod works for.
 *
 * TLS with a self-signed ECDSA P-256 certificate made in memory at start (as CDI's
 * importer does; scrapers of importer pods skip verification).  Port 0 takes a free port;
 * the address and port are logged ("metrics on https://127.0.0.1:PORT/metrics").
 *
 * THREAD MODEL: one server thread, started by metrics_start and joined by metrics_stop;
 * it answers one connection at a time (a scrape takes milliseconds; a client that stalls
 * is dropped after 5 s) and takes no signals.
 */
#ifndef FERRY_METRICS_H
#define FERRY_METRICS_H

#include <stdio.h>

#include "progress.h"

struct metrics;

/* Serve on ADDRESS (NULL: 0.0.0.0) and PORT (a number) until metrics_stop.  OWNER_UID may
 * be NULL ("").  Reports and returns NULL on failure.
 */
struct metrics *metrics_start (const char *address, const char *port, struct progress *p,
                               const char *owner_uid);
void metrics_stop (struct metrics *m);

/* The port actually listened on. */
int metrics_port (const struct metrics *m);

/* The document GET /metrics answers (for tests and the server). */
void metrics_write (FILE *out, struct progress *p, const char *owner_uid);

#endif /* FERRY_METRICS_H */
