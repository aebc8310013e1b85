/* SPDX-License-Identifier: Apache-2.0 */
/* ferry: the preflight inspection of a VM, before any copy (inspection.c).
 *
 * The VM's disks are opened at a ferry snapshot (the lifecycle of a round: made, then
 * removed, also on SIGTERM), served read-only as NBD exports on localhost ports from
 * ferry's own read path, and virt-v2v-inspector (convert_inspect) reads what it needs
 * through them: nothing is copied, only the blocks it reads are fetched.
 *
 * The result is convert_inspect's plus "bytesRead" (what the inspector read),
 * "bytesFetched" (what was fetched from the source for it: known-unallocated areas read
 * as zeros unfetched), "diskBytes" (the disks' capacity) and "snapshot" (the name of
 * ferry's snapshot, removed since).  ferry validate --inspect shows it as concerns;
 * ferry migrate records it in the journal (and results.json) as the VM's "inspection" and
 * refuses, before round 1, a VM that virt-v2v cannot convert.
 */
#ifndef FERRY_INSPECTION_H
#define FERRY_INSPECTION_H

#include <signal.h>

#include <jansson.h>

#include "plan.h"
#include "progress.h"

struct inspection {
  const struct plan *plan;
  const struct plan_vm *pvm;
  const char *work_dir;                /* inspect.xml, inspection.xml, inspection.log */
  struct progress *progress;           /* stages as "inspection" events, or NULL */
  const volatile sig_atomic_t *cancel; /* a signal number when cancelled, or NULL */
};

/* Inspect; the result above, or NULL when the inspection could not run (reported; the
 * snapshot is removed all the same).
 */
json_t *inspection_vm (struct inspection *in);

/* Whether the plan wants the preflight (preflightInspection and not a raw copy). */
bool inspection_wanted (const struct plan *plan);

#endif /* FERRY_INSPECTION_H */
