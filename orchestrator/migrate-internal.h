/* SPDX-License-Identifier: Apache-2.0 */
/* ferry: running a plan, the parts shared by migrate.c (the run, its VM threads and their
 * states, errors, signals) and migrate-round.c (one round of a VM: the snapshot, a copy
 * thread per disk, verification, the journal's record of the round).
 *
 * THREAD MODEL: as migrate.c says.  The error slots below are per thread (a VM thread
 * and the disk threads of its round each keep their own first error).
 */
#ifndef FERRY_MIGRATE_INTERNAL_H
#define FERRY_MIGRATE_INTERNAL_H

#include <pthread.h>
#include <signal.h>
#include <stdbool.h>

#include <jansson.h>

#include "journal.h"
#include "migrate.h"
#include "plan.h"
#include "progress.h"
#include "sched.h"

struct run {
  struct plan *plan;
  enum run_mode mode;
  struct journal *journal;
  struct sched *sched;
  struct progress *progress;
  /* The signal that cancels the run (0: none): providers, waits and slots look at it. */
  volatile sig_atomic_t cancel;
  pthread_mutex_t lock;
  pthread_cond_t cond;
};

struct vm_job {
  struct run *run;
  const struct plan_vm *pvm;
  const char *label;
  pthread_t thread;
  bool ok;
  bool retryable; /* failed, but for a reason that retrying later may cure */
};

/* ---- migrate.c: errors, cancellation, the journal ---- */

extern __thread bool tracking; /* a VM or disk thread: keeps its first error */
extern __thread char *thread_error;
extern __thread bool thread_error_transient; /* log_error_is_transient of thread_error */

/* Forget this thread's error (the work it was about succeeded, or the thread ends). */
void drop_error (void);
/* The first error of this thread (or the last one anywhere), malloc'd; clears it.
 * *TRANSIENT (if not NULL) says whether retrying later may cure it (log.h).
 */
char *take_error_ex (const char *fallback, bool *transient);
bool cancelled (struct run *run);
/* Called with the journal locked. */
void jset_str (json_t *obj, const char *key, const char *value);
/* Record the VM's STATE and ROUND in the journal (saved) and as a progress event. */
void set_state (struct vm_job *vj, const char *state, unsigned round);

/* ---- migrate-round.c ---- */

/* One round of VJ at a new snapshot: copy every disk into its target and record the
 * round; with FINAL, verify the copies before the snapshot goes.  0 or -1 (the first
 * error in this thread's slot).
 */
int do_round (struct vm_job *vj, unsigned round, bool final);

#endif /* FERRY_MIGRATE_INTERNAL_H */
