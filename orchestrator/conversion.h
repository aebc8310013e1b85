/* SPDX-License-Identifier: Apache-2.0 */
/* ferry: the last step of a VM — guest conversion (libconvert) and its KubeVirt manifests.
 *
 * VM states after the copy (journal.h):
 *   verified -> converting -> converted
 *                          -> conversion-failed -> (a rerun) converting -> ...
 * A raw copy (skipGuestConversion) stays verified and only gets its manifests.  The copy
 * is never repeated for conversion: a conversion that fails leaves the verified target
 * as it was, so ferry migrate (or ferry convert) converts it again from there.
 *
 * Per disk the journal gets digest.afterConversion (the target re-read after the commit)
 * and conversion.changedBlocks (64 KiB blocks virt-v2v changed); per VM "conversion"
 * (seconds, TCG or not, log, error) and "manifests" (stateDir/VM/vm.yaml).
 */
#ifndef FERRY_CONVERSION_H
#define FERRY_CONVERSION_H

#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "convert/convert.h"
#include "journal.h"
#include "plan.h"
#include "progress.h"

struct conversion {
  struct plan *plan;
  const struct plan_vm *pvm;
  struct journal *journal;
  struct progress *progress;
  const volatile sig_atomic_t *cancel; /* the run's cancel flag (a signal number) */
  /* The first error this thread reported (malloc'd), or FALLBACK; clears it. */
  char *(*take_error) (const char *fallback);
};

/* Whether STATE is one the conversion step handles (verified and after). */
bool conversion_state (const char *state);

/* Convert (unless the plan skips it) and write the manifests.  0 when the VM reached its
 * goal; -1 otherwise, with the state and error in the journal.
 */
int conversion_vm (struct conversion *c);

/* A conversion-only plan ("type": "conversion"): find each disk's target (disk.img, a
 * block device, or a VMDK descriptor and its flat extent) and check it against the source
 * disk — the size, the VMDK's ddb.uuid, and when the VM is powered off block 0 and a few
 * random allocated blocks compared with its current state — then record its digest and
 * mark the VM verified.  No byte is copied.  -1 (reported, the VM's state "checking")
 * when a target is missing or is not the disk's clone: nothing is converted.
 */
int conversion_check (struct conversion *c);

/* Disk I of a conversion-only plan's VM PVM, described by DDESC (an element of
 * source_describe's "disks"): its target found (convert_find_target: disk.img, a block
 * device, or a VMDK descriptor and its flat extent) and checked against the source disk —
 * the size, the VMDK's ddb.uuid, and with READER (the VM powered off, its disks readable)
 * block 0 and a few random allocated blocks.  *T gets the target (convert_target_free it
 * whatever the result), *BLOCKS and *MISMATCHES the sample's counts.  -1 when the target
 * is missing or is not the disk's clone, reported with log_error ("VM disk KEY: ...",
 * the reason last).  Reads only: ferry migrate's checking state and ferry validate.
 */
int conversion_check_target (const struct plan *plan, const struct plan_vm *pvm,
                             struct source *reader, size_t i, json_t *ddesc,
                             struct convert_target *t, uint64_t *blocks,
                             uint64_t *mismatches);

/* Why the blocks of a VM that is not powered off are not compared (a warning). */
extern const char conversion_not_off[];

/* ferry convert PLAN --vm NAME: convert one verified (or conversion-failed) VM now.
 * Exit status: 0, 1 failure, 2 usage (VM not in the plan or not ready).
 */
int conversion_command (struct plan *plan, const char *vm, struct progress *progress);

/* The claim name of a target (DIR/disk.img, or a block device when BLOCK): its PVC
 * directory's (or device's) base name, made DNS-1123.
 */
void conversion_claim_name (const char *target, bool block, char out[64]);

/* The VM's DNS-1123 name, made unique among the plan's VMs (earlier ones win). */
void conversion_vm_name (const struct plan *plan, const struct plan_vm *pvm, char out[64]);

/* The plan's networkMap as convert/ takes it (manifest_params.networks, nr_networks =
 * plan->networks.len), calloc'd (the strings stay the plan's); NULL when out of memory.
 */
struct manifest_network *conversion_networks (const struct plan *plan);

#endif /* FERRY_CONVERSION_H */
