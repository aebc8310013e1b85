/* SPDX-License-Identifier: Apache-2.0 */
/* ferry: what every source provider offers (vSphere now, RHV later).
 *
 * A provider yields the disks of one VM at one point in time, their allocated areas, the
 * areas changed since an earlier point (its change-tracking id), and reads of their bytes.
 * Everything here is read-only: no provider has a code path that writes to a source disk.
 */
#ifndef FERRY_PROVIDER_H
#define FERRY_PROVIDER_H

#include <stdbool.h>
#include <stdint.h>

#include "common/vector.h"

/* A byte range of a disk. */
struct extent {
  uint64_t offset;
  uint64_t length;
};
DEFINE_VECTOR_TYPE (extent_vector, struct extent);

struct provider_disk {
  char *key;         /* the source's id of the disk: vSphere device key ("2000") */
  char *label;       /* "Hard disk 1" */
  char *file_name;   /* "[datastore1] vm/vm.vmdk" */
  char *datastore;   /* "datastore1" */
  char *uuid;        /* backing uuid, may be NULL */
  char *change_id;   /* change-tracking id of this state, NULL when CBT is off */
  char *export_name; /* "2000-hard-disk-1": safe as an NBD export or file name */
  uint64_t capacity;
  bool delta; /* a snapshot delta or linked clone: its file is not the whole disk */
};
DEFINE_VECTOR_TYPE (disk_vector, struct provider_disk);

void provider_disk_free (struct provider_disk *disk);
void disk_vector_free (disk_vector *disks);

/* Append [offset, offset+length) to V, merging with the last extent when they touch.
 * Extents must be appended in increasing order; returns -1 on ENOMEM.
 */
int extent_append_merge (extent_vector *v, uint64_t offset, uint64_t length);

/* "Hard disk 1" + key 2000 -> "2000-hard-disk-1": lower case, runs of anything but
 * [a-z0-9._] become one '-'.  Returns a malloc'd string.
 */
char *provider_export_name (const char *key, const char *label);

#endif /* FERRY_PROVIDER_H */
