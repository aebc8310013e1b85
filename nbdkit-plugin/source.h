/* ferry: the plugin's view of a source — one VM at one point in time, its disks, their
 * allocated maps and reads.  ferry.c (nbdkit glue) uses only this interface, so a second
 * provider plugs in behind it.
 */
#ifndef FERRY_SOURCE_H
#define FERRY_SOURCE_H

#include <stdbool.h>
#include <stdint.h>

#include "providers/provider.h"

struct source_config {
  const char *provider; /* "vsphere" */
  const char *server;
  const char *user;
  const char *password;
  const char *vm; /* moref or name */
  const char *vm_uuid;
  const char *disk;     /* key, index, "[ds] path.vmdk" or export name; NULL = all */
  const char *snapshot; /* moref, "create", or NULL */
  const char *datacenter;
  const char *cacert;
  const char *thumbprint;
  bool sslverify;
  unsigned connections;
};

struct source;

/* Check the parameters before connecting; reports what is wrong and how to fix it. */
int source_config_check (const struct source_config *config);

/* Connect, find the VM, apply the snapshot policy (refusing what cannot be read
 * consistently) and select the disks.  Reports its own errors.
 */
struct source *source_open (const struct source_config *config);
/* Remove the snapshot we created (if any); safe to call twice. */
void source_release (struct source *src);
void source_close (struct source *src);

size_t source_disk_count (const struct source *src);
const struct provider_disk *source_disk (const struct source *src, size_t i);
/* Index of the disk named NAME (export name, key, or index); -1 if none. */
int source_find_disk (const struct source *src, const char *name);

/* Read [offset, offset+count) of disk I; known-unallocated parts are zeros, not fetched. */
int source_pread (struct source *src, size_t i, void *buf, uint32_t count, uint64_t offset);

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

/* The VM's identity for caches: its BIOS uuid (or moref when it has none). */
const char *source_vm_uuid (const struct source *src);

/* The VM as vm.json shows it (see nbdkit-ferry-plugin.pod, vm-json=). */
typedef struct json_t json_t;
json_t *source_describe (struct source *src, const char *server);

void source_stats (struct source *src, char *buf, size_t len);

#endif /* FERRY_SOURCE_H */
