/* SPDX-License-Identifier: Apache-2.0 */
/* ferry: the journal of a plan in its stateDir — what each VM has reached, durably.
 *
 * journal.json holds, per VM (by target name): the state, the round, the changeIds the
 * targets hold, the snapshot in flight, the original power state, per-round figures,
 * digests, warnings and the error.  Every change is written with write_file_atomic, so
 * that after a crash or a power loss the file is the old or the new version, never a mix.
 * results.json is derived from it at the end of a run.
 *
 * VM states:  pending -> copying -> precopy-wait -> copying ... -> cutover -> verified
 *             any state -> failed (a later migrate retries it from where its copy is)
 *
 * The lock file (stateDir/lock, flock) is held by the one process that runs the plan; it
 * holds that process's pid, for ferry cancel.
 *
 * THREAD MODEL: the journal's JSON is shared by the VM threads; every access goes through
 * journal_lock/journal_unlock (a mutex); journal_save is called with it held.
 */
#ifndef FERRY_JOURNAL_H
#define FERRY_JOURNAL_H

#include <stdbool.h>
#include <sys/types.h>

#include <jansson.h>

struct journal;

/* Open (creating the directory and the journal if needed).  With RUN, take the plan's
 * run lock: -1 (reported) if another process holds it.
 */
struct journal *journal_open (const char *state_dir, const char *plan_name, bool run);
void journal_close (struct journal *j);

/* The pid of the process that holds the run lock, or 0 when none does. */
pid_t journal_runner (const char *state_dir);

void journal_lock (struct journal *j);
void journal_unlock (struct journal *j);
/* The VM's object (created "pending" if new); borrowed, valid while locked. */
json_t *journal_vm (struct journal *j, const char *name);
/* Write journal.json durably; reports and returns -1 on failure. */
int journal_save (struct journal *j);
/* Write results.json from the journal's VMs, in the order of NAMES. */
int journal_write_results (struct journal *j, const char *const *names, size_t n);

/* A copy of journal.json as read from STATE_DIR (for status), or NULL (reported). */
json_t *journal_read (const char *state_dir);

/* The predicted seconds of a final round started at NOW (epoch seconds) for the journal's
 * VM object VM: what changed since the last round's snapshot at the measured change rate,
 * fetched at the last round's rate, plus that round's fixed cost.  -1 before any round.
 */
double journal_predict_final_round (json_t *vm, double now);

/* The path of FILE in the state directory (malloc'd). */
char *journal_path (const char *state_dir, const char *file);

#endif /* FERRY_JOURNAL_H */
