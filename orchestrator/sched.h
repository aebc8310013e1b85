/* SPDX-License-Identifier: Apache-2.0 */
/* ferry: limits on concurrent disk transfers — per source host and per datastore.
 *
 * A disk transfer takes one slot of its host and one of its datastore, both at once (so
 * two transfers never each hold half of what the other needs), and gives them back when
 * it ends.  The limits count disks, not VMs: a VM with more disks than a limit still runs,
 * its disks queued.
 *
 * THREAD MODEL: any thread; one mutex and one condition variable.
 */
#ifndef FERRY_SCHED_H
#define FERRY_SCHED_H

#include <signal.h>
#include <stdbool.h>

struct sched;

struct sched *sched_new (unsigned per_host, unsigned per_datastore);
void sched_free (struct sched *s);

/* Wait for a slot of HOST and of DATASTORE; false (without slots) when *CANCEL became
 * non-zero while waiting (sched_wake wakes waiters to look).
 */
bool sched_acquire (struct sched *s, const char *host, const char *datastore,
                    const volatile sig_atomic_t *cancel);
void sched_release (struct sched *s, const char *host, const char *datastore);
void sched_wake (struct sched *s);

#endif /* FERRY_SCHED_H */
