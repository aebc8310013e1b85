/* SPDX-License-Identifier: Apache-2.0 */
/* ferry: fuzz target — the migration plan (orchestrator/plan.c, plan_load).
 *
 * The input is the plan file, read by plan_load from an anonymous file.  The plan's
 * source.secret may name FUZZ_SECRET_DIR, which the harness fills with a Secret (user,
 * password, thumbprint) at start-up, so that the seeds reach past the Secret into the
 * storage map and the VM list.  A loaded plan must be complete, and each VM's first disk
 * is then resolved to a target path as ferry does it.
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "orchestrator/plan.h"

#include "fuzz/fuzz.h"

#define FUZZ_SECRET_DIR "/tmp/ferry-fuzz-secret"

static void
write_secret (const char *name, const char *value)
{
  char path[128];
  FILE *fp;

  snprintf (path, sizeof path, "%s/%s", FUZZ_SECRET_DIR, name);
  fp = fopen (path, "w");
  if (fp == NULL || fputs (value, fp) == EOF || fclose (fp) != 0)
    abort ();
}

int
LLVMFuzzerInitialize (int *argc, char ***argv)
{
  fuzz_quiet ();
  if (mkdir (FUZZ_SECRET_DIR, 0700) == -1 && errno != EEXIST)
    abort ();
  write_secret ("user", "administrator@vsphere.local\n");
  write_secret ("password", "secret\n");
  write_secret ("thumbprint",
                "AA:BB:CC:DD:EE:FF:00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD\n");
  return 0;
}

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
  char path[64];
  int fd = fuzz_memfd (data, size, path, sizeof path);
  struct plan *p = plan_load (path);

  if (p) {
    if (p->vms.len == 0 || p->server == NULL || p->user == NULL || p->password == NULL ||
        p->state_dir == NULL || p->connections_per_disk == 0)
      abort ();
    for (size_t i = 0; i < p->vms.len; i++) {
      const struct plan_vm *vm = &p->vms.ptr[i];
      struct source_config config = plan_source_config (p, vm);
      const char *datastore = p->storage.len ? p->storage.ptr[0].datastore : "datastore1";
      char *target = NULL, *why = NULL;
      enum target_kind kind;

      if (config.vm == NULL || plan_vm_label (vm) == NULL)
        abort ();
      if (plan_resolve_target (p, vm, 0, "2000", datastore, &target, &kind, &why) == 0) {
        if (target == NULL || why != NULL)
          abort ();
      }
      free (target);
      free (why);
    }
  }
  plan_free (p);
  close (fd);
  return 0;
}
