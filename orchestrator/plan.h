/* SPDX-License-Identifier: Apache-2.0 */
/* ferry: the migration plan (ferry-plan.md) — parsed, checked and resolved.
 *
 * plan_load reads the JSON file strictly (an unknown key is an error naming it), reads
 * the provider Secret directory, and fills the source configuration that providers take.
 * Targets are resolved per disk once the VM's disks are known (plan_resolve_target).
 */
#ifndef FERRY_PLAN_H
#define FERRY_PLAN_H

#include <stdbool.h>
#include <stdint.h>
#include <time.h>

#include "common/vector.h"
#include "providers/source.h"

enum target_kind { TARGET_FILESYSTEM, TARGET_BLOCK };

struct storage_map_entry {
  char *datastore;
  enum target_kind kind;
  char *path; /* template with {vm}, {index}, {key} */
  /* The PVC (ferry kube, vm.yaml), Forklift's StorageMap names; NULL: the cluster's
   * default class, ReadWriteOnce.  FS_OVERHEAD: CDI's filesystemOverhead, 0 = 5.5%.
   */
  char *storage_class;
  char *access_mode;
  double fs_overhead;
};
DEFINE_VECTOR_TYPE (storage_map, struct storage_map_entry);

/* A per-VM target override: device key or index -> path. */
struct target_override {
  char *disk;
  char *path;
};
DEFINE_VECTOR_TYPE (override_vector, struct target_override);

/* networkMap[]: a source network (by id, the moref, or by name) -> a pod network, a Multus
 * NetworkAttachmentDefinition, or no interface (Forklift's NetworkMap pairs).
 */
struct network_map_entry {
  char *source_id;
  char *source_name;
  char *type;      /* "pod", "multus", "ignored" */
  char *namespace; /* multus */
  char *name;      /* multus */
};
DEFINE_VECTOR_TYPE (network_map, struct network_map_entry);

struct plan_vm {
  char *name; /* source VM name, or NULL */
  char *id;   /* source VM moref, or NULL */
  char *target_name;
  override_vector targets;
};
DEFINE_VECTOR_TYPE (plan_vm_vector, struct plan_vm);

struct plan {
  char *path; /* the plan file */
  char *name;
  char *source_type; /* "vsphere" */
  char *url;
  char *server; /* HOST[:PORT] from the url */
  char *secret_dir;
  char *datacenter;
  struct source_timeouts timeouts; /* source.timeouts; 0 = the default */
  /* From the Secret. */
  char *user;
  char *password; /* wiped at plan_free */
  char *cacert;   /* a path: SECRET/cacert */
  char *thumbprint;
  bool insecure;

  bool warm;
  unsigned precopy_interval; /* seconds */
  bool has_cutover;
  time_t cutover; /* when has_cutover */
  unsigned max_per_host;
  unsigned max_per_datastore;
  unsigned connections_per_disk;
  double verify_sample_percent;
  unsigned shutdown_timeout;
  bool enable_cbt;
  bool skip_guest_conversion; /* raw copy: no virt-v2v, SATA + e1000e in vm.yaml */
  bool preflight_inspection;  /* migrate inspects each VM before round 1 (default on) */
  char *state_dir;
  storage_map storage;
  plan_vm_vector vms;
  /* "type": "conversion": the disks already sit in the targets (e.g. cloned on the array);
   * ferry checks them against the source disks, converts and writes the manifests.
   */
  bool conversion_only;
  network_map networks; /* empty: the first NIC on the pod network */
};

/* Parse and check PATH.  Reports every problem with log_error (each naming the key or
 * object) and returns NULL when there was one.
 */
struct plan *plan_load (const char *path);
void plan_free (struct plan *plan);

/* The source configuration for VM (pointers into PLAN). */
struct source_config plan_source_config (const struct plan *plan, const struct plan_vm *vm);

/* How a VM is shown in messages: its target name. */
const char *plan_vm_label (const struct plan_vm *vm);

/* Where disk INDEX (device key KEY, on DATASTORE) of VM goes: a malloc'd path of the disk
 * image (DIR/disk.img for a filesystem target) and its kind.  Returns -1 with a malloc'd
 * *WHY (not reported) when no mapping or override covers it.
 */
int plan_resolve_target (const struct plan *plan, const struct plan_vm *vm, size_t index,
                         const char *key, const char *datastore, char **path,
                         enum target_kind *kind, char **why);

/* The storageMap entry of DATASTORE, or NULL. */
const struct storage_map_entry *plan_storage_for (const struct plan *plan,
                                                  const char *datastore);

/* "2026-12-01T02:00:00+01:00" (or Z) -> time_t; -1 if not RFC 3339. */
int plan_parse_time (const char *s, time_t *t);

#endif /* FERRY_PLAN_H */
