/* SPDX-License-Identifier: Apache-2.0 */
/* ferry: a disk of a provider-neutral source as a diskcache source (the one adapter from
 * providers/source.h to struct dcache_source_ops).
 *
 *   struct dcache_disk_ref ref = { src, i };
 *   struct dcache_params p = { .image = ..., .meta = ... };
 *   dcache_params_from_source (&p, src, i);
 *   struct dcache *c = dcache_open (&p, &dcache_source_adapter, &ref);
 *
 * REF must outlive the cache.
 */
#ifndef FERRY_DCACHE_SOURCE_OPS_H
#define FERRY_DCACHE_SOURCE_OPS_H

#include "diskcache/dcache.h"
#include "providers/source.h"

/* The change granularity of the providers (vSphere CBT: 64 KiB). */
#define SOURCE_BLOCK_SIZE 65536

struct dcache_disk_ref {
  struct source *src;
  size_t disk;
};

extern const struct dcache_source_ops dcache_source_adapter;

/* Fill the identity and point-in-time fields of P from disk I of SRC. */
void dcache_params_from_source (struct dcache_params *p, struct source *src, size_t i);

#endif /* FERRY_DCACHE_SOURCE_OPS_H */
