/* SPDX-License-Identifier: Apache-2.0 */
/* ferry: the vSphere provider — SOAP session, inventory, snapshots, CBT and datastore
 * reads.
 *
 * One vs_session talks to one vCenter or ESXi: SOAP on POST /sdk and disk bytes on
 * GET /folder, both through one HTTP pool that carries the vmware_soap_session cookie.  The
 * session logs in again by itself when the server says NotAuthenticated (SOAP) or 401
 * (/folder), so callers never see an expired session.
 *
 * THREAD MODEL: every function may be called from any thread; re-login is serialised by
 * the session's login lock.
 */
#ifndef FERRY_VSPHERE_H
#define FERRY_VSPHERE_H

#include <stdbool.h>
#include <stdint.h>

#include "providers/provider.h"
#include "providers/source.h"

struct vs_session;

struct vs_config {
  const char *server; /* HOST[:PORT] */
  const char *user;
  const char *password; /* copied; wiped at close */
  /* A logged-in session to reuse instead of logging in: the vmware_soap_session cookie,
   * as "vmware_soap_session=VALUE" or VALUE alone.  It is checked at open and never logged
   * out (it is the caller's); USER and PASSWORD, when given, log in again if it expires.
   */
  const char *cookie;
  const char *cacert;
  const char *thumbprint;
  bool sslverify;
  unsigned connections;
  struct source_timeouts timeouts; /* the user's HTTP timeouts; 0 = the default */
  unsigned backoff_ms;             /* first retry delay and floor (FERRY_HTTP_BACKOFF_MS) */
};

/* A snapshot in the VM's tree. */
struct vs_snapshot {
  char *moref;
  char *name;
  char *description;
};
DEFINE_VECTOR_TYPE (snapshot_vector, struct vs_snapshot);

/* A network adapter. */
struct vs_nic {
  char *label; /* "Network adapter 1" */
  char *type;  /* VirtualVmxnet3, VirtualE1000e, ... */
  char *mac;
  char *network;    /* network or port group name/key */
  char *network_id; /* the network's moref (a distributed port group's key), or NULL */
};
DEFINE_VECTOR_TYPE (nic_vector, struct vs_nic);

struct vs_vm {
  char *moref;
  char *name;
  char *uuid; /* BIOS uuid (config.uuid) */
  char *instance_uuid;
  char *power_state; /* poweredOn, poweredOff, suspended */
  char *host;        /* runtime.host: the ESXi host's moref */
  bool tools_running;
  bool cbt_enabled;
  char *guest_id;
  char *firmware; /* bios or efi */
  unsigned cpus;
  uint64_t memory_mb;
  nic_vector nics;
  char *dc_path; /* inventory path of its datacenter, for /folder */
  snapshot_vector snapshots;
  disk_vector disks; /* as the VM's live config shows them */
};

/* A SOAP fault, returned to callers that want to decide themselves. */
struct vs_fault {
  char *type;    /* "InvalidArgument", "FileFault", "NotAuthenticated", ... */
  char *message; /* the server's faultstring */
};
void vs_fault_reset (struct vs_fault *fault);

/* Session: RetrieveServiceContent + Login (or the cookie); Logout at close (unless the
 * session is the caller's cookie).
 */
struct vs_session *vs_open (const struct vs_config *config);
/* The session's current cookie, for vs_config.cookie of another session on the same
 * server (one login shared); malloc'd, a secret; NULL when out of memory.
 */
char *vs_session_cookie (struct vs_session *s);
void vs_close (struct vs_session *s);
void vs_stats (struct vs_session *s, char *buf, size_t len);

/* Inventory.  WHICH is a moref ("vm-42"), a VM name, or with by_uuid a BIOS or instance
 * uuid.  DATACENTER, if given, overrides the datacenter path found by walking the VM's
 * parents.
 */
int vs_find_vm (struct vs_session *s, const char *which, bool by_uuid,
                const char *datacenter, struct vs_vm *vm);
void vs_vm_free (struct vs_vm *vm);

/* The disks as of snapshot SNAP (their changeIds are the snapshot's). */
int vs_snapshot_disks (struct vs_session *s, const struct vs_vm *vm, const char *snap,
                       disk_vector *disks);

/* Tasks, polled until done or until the task deadline (vs_set_task_timeout); errors carry
 * the task fault's own message, or the task's last state when it did not finish in time.
 */
#define VS_TASK_TIMEOUT_DEFAULT 1800 /* seconds */
/* The deadline of every task of this process; 0 restores the default. */
void vs_set_task_timeout (unsigned seconds);
int vs_create_snapshot (struct vs_session *s, const struct vs_vm *vm, const char *name,
                        const char *description, char **snap_moref);
int vs_remove_snapshot (struct vs_session *s, const struct vs_vm *vm, const char *snap);
int vs_enable_cbt (struct vs_session *s, const struct vs_vm *vm);
/* Ask the guest to shut down (VMware Tools), or power the VM off (a task). */
int vs_shutdown_guest (struct vs_session *s, const struct vs_vm *vm);
int vs_power_off (struct vs_session *s, const struct vs_vm *vm);
/* Read runtime.powerState again; malloc'd, NULL on error (reported). */
char *vs_power_state (struct vs_session *s, const struct vs_vm *vm);

/* QueryChangedDiskAreas from CHANGE_ID ("*" = allocated areas) up to snapshot SNAP (NULL
 * only for a powered-off VM), looping over the server's windows until the capacity, merged.
 * On a SOAP fault, if FAULT is not NULL it is returned there without an error message.
 */
int vs_query_changed (struct vs_session *s, const struct vs_vm *vm, const char *snap,
                      const struct provider_disk *disk, const char *change_id,
                      extent_vector *areas, struct vs_fault *fault);

/* Datastore reads of the disk's flat file through /folder. */
char *vs_flat_path (const struct vs_vm *vm, const struct provider_disk *disk);
int vs_read (struct vs_session *s, const char *flat_path, void *buf, size_t count,
             uint64_t offset);

/* Pure helpers (unit-tested). */
int vs_parse_change_id (const char *change_id, char *uuid, size_t uuid_len, uint64_t *seq);
int vs_parse_file_name (const char *file_name, char **datastore, char **path);
char *vs_folder_url (const char *datastore, const char *path, const char *dc_path);

#endif /* FERRY_VSPHERE_H */
