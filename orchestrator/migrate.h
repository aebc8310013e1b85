/* SPDX-License-Identifier: Apache-2.0 */
/* ferry: running a plan — cold and warm migrations of its VMs into their targets.
 *
 * One thread per VM runs that VM's states (journal.h); inside a round, one thread per
 * disk copies it through diskcache into its target (the target image is the cache image),
 * each disk transfer holding a slot of its host and of its datastore (sched.h).
 *
 * A round: open the VM at a new ferry snapshot (the provider removes ferry's leftovers
 * first), open each disk's cache at the snapshot's changeIds (which invalidates what
 * changed since the last round the target holds), fill, then remove the snapshot.  The
 * changeId the target holds is recorded by diskcache in the same durable write as the
 * invalidation, so a crash anywhere costs at most the blocks in flight.
 *
 * Cancellation (SIGTERM, SIGINT, SIGHUP, ferry cancel): the run's cancel flag makes
 * source reads fail, waits end and slots be refused; every round then releases its
 * snapshot and the journal is saved, so a later migrate resumes.
 */
#ifndef FERRY_MIGRATE_H
#define FERRY_MIGRATE_H

#include <stdbool.h>

#include "plan.h"
#include "progress.h"

enum run_mode {
  RUN_MIGRATE, /* to the end: rounds, cutover, verification */
  RUN_PRECOPY, /* one round for every VM not yet cut over */
  RUN_CUTOVER, /* cut over now (ferry cutover without a running migrate) */
};

/* ferry's exit status for "failed, but a retry may succeed" (EX_TEMPFAIL). */
#define EXIT_RETRY 75

/* Run PLAN; 0 when every VM reached its goal; EXIT_RETRY when the run was cancelled (a
 * signal) or every failure was transient (network, server: log_error_transient) or the
 * plan's lock is held; 1 when a VM failed for good (plan, verification, conversion).
 * Installs its own signal handling for the duration.
 */
int migrate_run (struct plan *plan, enum run_mode mode, struct progress *progress);

#endif /* FERRY_MIGRATE_H */
