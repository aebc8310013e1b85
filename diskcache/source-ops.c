/* SPDX-License-Identifier: Apache-2.0 */
/* ferry: the adapter from a provider-neutral source to diskcache (source-ops.h). */
#include <string.h>

#include "common/log.h"
#include "source-ops.h"

static int
ops_read (void *opaque, void *buf, size_t count, uint64_t offset)
{
  struct dcache_disk_ref *d = opaque;
  return source_pread (d->src, d->disk, buf, count, offset);
}

static int
ops_changed (void *opaque, const char *since, extent_vector *areas, char **why)
{
  struct dcache_disk_ref *d = opaque;
  return source_changed (d->src, d->disk, since, areas, why);
}

static int
ops_allocated (void *opaque, extent_vector *areas, bool *known)
{
  struct dcache_disk_ref *d = opaque;
  const extent_vector *map;

  if (source_allocated (d->src, d->disk, &map) == -1)
    return -1;
  *known = map != NULL;
  if (map) {
    if (extent_vector_reserve (areas, map->len) == -1) {
      log_error ("malloc: %m");
      return -1;
    }
    memcpy (areas->ptr, map->ptr, map->len * sizeof *map->ptr);
    areas->len = map->len;
  }
  return 0;
}

const struct dcache_source_ops dcache_source_adapter = {
  .read = ops_read,
  .changed_areas = ops_changed,
  .allocated_areas = ops_allocated,
};

void
dcache_params_from_source (struct dcache_params *p, struct source *src, size_t i)
{
  const struct provider_disk *d = source_disk (src, i);

  p->vm_uuid = source_vm (src)->uuid;
  p->disk_id = d->key;
  p->disk_uuid = d->uuid;
  p->capacity = d->capacity;
  p->change_id = d->change_id;
  p->block_size = SOURCE_BLOCK_SIZE;
}
