/* SPDX-License-Identifier: Apache-2.0 */
/* ferry: the provider-neutral source — one VM at one point in time, its disks, their
 * allocated and changed areas, and reads of their bytes.
 *
 * The plugin, ferry and ferryfs's users see only this interface; each provider
 * (providers/vsphere/, later providers/rhv/) fills in a struct source_ops, the way
 * nbdcopy's struct rw_ops hides its backends.  The snapshot lifecycle is the provider's:
 * a snapshot it creates is named so that ferry recognises its own leftovers (removed at
 * the next open, never anyone else's) and is removed by source_release.
 *
 * THREAD MODEL: source_open and source_close from one thread with nothing else in flight;
 * everything else from any number of threads (reads borrow connections from a pool, the
 * allocated map is computed once under a lock).
 */
#ifndef FERRY_SOURCE_H
#define FERRY_SOURCE_H

#include <signal.h>
#include <stdbool.h>
#include <stdint.h>

#include "providers/provider.h"

/* The user's HTTP timeouts, in seconds; 0 takes common/http.h's default (in brackets).
 * Each is at most SOURCE_TIMEOUT_MAX.
 */
struct source_timeouts {
  unsigned connect;      /* TCP connect plus TLS handshake [30] */
  unsigned control;      /* one attempt of a control call: SOAP, REST, HEAD [120] */
  unsigned read;         /* one attempt of a range read [600] */
  unsigned stall;        /* a read moving < 1 KiB/s this long is abandoned, retried [30] */
  unsigned retry_budget; /* one request, all its attempts and retries included [300] */
};
#define SOURCE_TIMEOUT_MAX 86400

struct source_config {
  const char *provider; /* "vsphere", "rhv" */
  const char *server;   /* HOST[:PORT] */
  const char *url;      /* rhv: https://ENGINE/ovirt-engine/api */
  const char *user;
  const char *password;
  /* vsphere: a logged-in session to use instead of logging in (the vmware_soap_session
   * cookie); never logged out here.  USER and PASSWORD, when given, log in again if it
   * expires; without them they may be NULL.
   */
  const char *session;
  const char *vm; /* moref or name */
  const char *vm_uuid;
  const char *disk;     /* key, index, "[ds] path.vmdk" or export name; NULL = all */
  const char *snapshot; /* moref, "create", or NULL */
  const char *datacenter;
  const char *cacert;
  const char *thumbprint;
  bool sslverify;
  unsigned connections;
  const char *checkpoint; /* rhv: back up the changes since this checkpoint */
  /* Why ferry makes its snapshot, shown in its name and description ("inspect" when
   * NULL; ferry: "wave-1/web01 round 3").
   */
  const char *purpose;
  /* Open the VM without choosing a point in time: no snapshot is made or required,
   * leftovers are left alone, and reads are refused.  For validation, power operations and
   * CBT.
   */
  bool metadata_only;
  /* Seconds a provider task (snapshot creation or removal, reconfiguration) may take
   * before ferry gives up on it and says so; 0 = the provider's default.
   */
  unsigned task_timeout;
  struct source_timeouts timeouts;
  /* When *STOP becomes non-zero (a signal handler sets it), reads fail and source_open
   * gives up at its next step, so that the caller unwinds through source_close, which
   * removes a snapshot that was made.  A task being waited for is still waited for, so
   * that what it made can be removed.  NULL: never.
   */
  const volatile sig_atomic_t *stop;
};

/* The VM behind a source, as every provider can tell it. */
struct source_vm {
  char *id;             /* the provider's id: vSphere moref */
  char *name;           /* display name */
  char *uuid;           /* identity for caches: BIOS uuid, or the id when there is none */
  char *power_state;    /* poweredOn, poweredOff, suspended */
  char *host;           /* the host whose disks are read (ESXi host), for scheduling */
  bool change_tracking; /* CBT on at the VM level */
  bool tools_running;   /* a guest agent can shut the guest down */
  char *snapshots;      /* others' snapshots, "\"name\" (id), ...", NULL when none */
  char *leftovers;      /* ferry's own leftover snapshots, the same way, NULL when none */
  char *snapshot_id;    /* the snapshot served (NULL: the live disks of a VM that is off) */
  char *snapshot_name;
};

struct source;

struct source_ops {
  const char *name; /* "vsphere" */
  /* Parameters the provider needs beyond the common ones; reports what is wrong. */
  int (*config_check) (const struct source_config *config);
  struct source *(*open) (const struct source_config *config);
  int (*pread) (struct source *src, size_t i, void *buf, size_t count, uint64_t offset);
  /* Computed once per disk; *MAP is NULL when the source cannot tell. */
  int (*allocated) (struct source *src, size_t i, const extent_vector **map);
  int (*changed) (struct source *src, size_t i, const char *since, extent_vector *areas,
                  char **why);
  struct json_t *(*describe) (struct source *src);
  int (*shutdown) (struct source *src, unsigned timeout_seconds);
  int (*enable_change_tracking) (struct source *src);
  int (*release) (struct source *src);
  void (*close) (struct source *src);
  void (*stats) (struct source *src, char *buf, size_t len);
};

/* What every provider's source starts with. */
struct source {
  const struct source_ops *ops;
  struct source_vm vm;
  disk_vector disks; /* the served disks, as of the point in time */
};

/* Check the parameters before connecting; reports what is wrong and how to fix it. */
int source_config_check (const struct source_config *config);

/* Connect, find the VM, remove ferry's own leftover snapshots, apply the snapshot policy
 * (refusing what cannot be read consistently) and select the disks.  Reports its own
 * errors.
 */
struct source *source_open (const struct source_config *config);
/* Remove the snapshot ferry created (if any); safe to call twice.  -1 if it could not. */
int source_release (struct source *src);
void source_close (struct source *src);

size_t source_disk_count (const struct source *src);
const struct provider_disk *source_disk (const struct source *src, size_t i);
const struct source_vm *source_vm (const struct source *src);
/* Index of the disk named NAME (export name, key, file name or index); -1 if none. */
int source_find_disk (const struct source *src, const char *name);

/* Read [offset, offset+count) of disk I; known-unallocated parts are zeros, not fetched. */
int source_pread (struct source *src, size_t i, void *buf, size_t count, uint64_t offset);

/* The allocated areas of disk I (from CBT "*", queried once and kept): *MAP is NULL when
 * the source cannot tell (CBT off), and then everything is data.
 */
int source_allocated (struct source *src, size_t i, const extent_vector **map);

/* How many bytes of [offset, offset+count) of disk I are allocated (all when unknown). */
uint64_t source_data_bytes (struct source *src, size_t i, uint64_t offset, uint64_t count);

/* The areas of disk I changed since the state CHANGE_ID, up to the point in time served
 * (all windows, merged).  0 with *AREAS; 1 with a malloc'd *WHY and no error reported
 * when the source cannot answer for CHANGE_ID (CBT reset, unknown changeId, CBT off),
 * which makes a cache refetch everything; -1 on other errors (reported).
 */
int source_changed (struct source *src, size_t i, const char *change_id,
                    extent_vector *areas, char **why);

/* Shut the guest down (through its agent when it runs, else power off), waiting up to
 * TIMEOUT_SECONDS for the guest before the hard power-off.  A VM that is off is left so.
 */
int source_shutdown (struct source *src, unsigned timeout_seconds);
/* Turn change tracking on; it takes effect at the next snapshot. */
int source_enable_change_tracking (struct source *src);

/* The VM as vm.json shows it (see nbdkit-ferry-plugin.pod, vm-json=). */
typedef struct json_t json_t;
json_t *source_describe (struct source *src);

void source_stats (struct source *src, char *buf, size_t len);

/* For providers: put the timeouts T that the user gave into HC (the others keep HC's). */
struct http_config;
void source_http_timeouts (const struct source_timeouts *t, struct http_config *hc);

/* For providers: the base part of their source. */
/* Keep only the disk named WHICH (see source_find_disk) in SRC's disks; reports the
 * disks there are when there is no such disk.  SRC's vm must be filled in.
 */
int source_keep_disk (struct source *src, const char *which);
void source_vm_free (struct source_vm *vm);
/* Read [offset, offset+count) of a disk whose allocated areas are MAP (NULL: unknown, all
 * data): data through READ (ARG, ...), the rest set to zeros and added to *ZERO_BYTES.
 */
int source_read_mapped (const extent_vector *map, void *buf, size_t count, uint64_t offset,
                        int (*read) (void *arg, void *buf, size_t count, uint64_t offset),
                        void *arg, uint64_t *zero_bytes);
/* First extent of MAP that ends after OFFSET (binary search). */
size_t extent_first_after (const extent_vector *map, uint64_t offset);

#endif /* FERRY_SOURCE_H */
