/* SPDX-License-Identifier: Apache-2.0 */
/* ferry: the plugin's disk caches (cache=, cache-dir=, fill=).
 *
 * With a cache, reads of disk I go through dcache_pread: valid blocks come from the
 * cache image, the rest is fetched from the source once and kept.  The cache is opened at
 * the point in time the source serves (the snapshot's changeIds), which invalidates what
 * changed since the cache's recorded changeId.  With fill=true every invalid block is
 * fetched in get_ready, before nbdkit serves: one warm-migration round.
 *
 * Owns: one struct dcache per served disk (or none), each fed by diskcache's adapter over
 * the provider-neutral source.
 *
 * THREAD MODEL: caches are opened and filled in get_ready and closed at unload, on
 * nbdkit's main thread; in between only dcache_pread/dcache_stats are called, which are
 * thread-safe (PARALLEL).
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#define NBDKIT_API_VERSION 2
#include <nbdkit-plugin.h>

#include "common/cleanup.h"
#include "common/log.h"
#include "diskcache/dcache.h"
#include "diskcache/source-ops.h"
#include "cache.h"

struct disk_cache {
  struct dcache_disk_ref ref; /* the source disk, for the adapter */
  struct dcache *dc;
  struct timespec last_report;
};

static struct disk_cache *caches;
static size_t ncaches;

int
cache_config_check (const struct cache_config *cfg)
{
  if (cfg->fill && cfg->cache == NULL && cfg->cache_dir == NULL) {
    nbdkit_error ("fill=true needs a cache to fill: add cache=PATH or cache-dir=DIR");
    return -1;
  }
  return 0;
}

/* Image and metadata paths of disk I; see the pod (cache=, cache-dir=). */
static int
cache_paths (const struct cache_config *cfg, const struct provider_disk *d, char **image,
             char **meta)
{
  struct stat st;

  *image = *meta = NULL;
  if (cfg->cache) {
    bool blockdev = stat (cfg->cache, &st) == 0 && S_ISBLK (st.st_mode);
    if (blockdev && cfg->cache_dir == NULL) {
      nbdkit_error ("cache=%s is a block device, which has no room for the cache's "
                    "metadata: add cache-dir=DIR to keep it there",
                    cfg->cache);
      return -1;
    }
    *image = strdup (cfg->cache);
    if (cfg->cache_dir) {
      if (asprintf (meta, "%s/%s.dcache", cfg->cache_dir, d->export_name) == -1)
        *meta = NULL;
    } else if (asprintf (meta, "%s.dcache", cfg->cache) == -1)
      *meta = NULL;
  } else {
    if (asprintf (image, "%s/%s.img", cfg->cache_dir, d->export_name) == -1)
      *image = NULL;
    if (asprintf (meta, "%s/%s.dcache", cfg->cache_dir, d->export_name) == -1)
      *meta = NULL;
  }
  if (*image == NULL || *meta == NULL) {
    nbdkit_error ("malloc: %m");
    free (*image);
    free (*meta);
    return -1;
  }
  return 0;
}

static void
progress (void *data, uint64_t done, uint64_t total)
{
  struct disk_cache *d = data;
  struct timespec now;

  clock_gettime (CLOCK_MONOTONIC, &now);
  if (done < total && now.tv_sec == d->last_report.tv_sec)
    return;
  d->last_report = now;
  nbdkit_debug ("fill %s: %" PRIu64 " of %" PRIu64 " bytes (%.0f%%)",
                source_disk (d->ref.src, d->ref.disk)->export_name, done, total,
                total ? 100.0 * done / total : 100.0);
}

int
cache_open_all (struct source *src, const struct cache_config *cfg)
{
  size_t n = source_disk_count (src);

  if (cfg->cache == NULL && cfg->cache_dir == NULL)
    return 0;
  if (cfg->cache && n != 1) {
    nbdkit_error ("cache=%s holds one disk, but %zu are served: pick one with disk=, or "
                  "use cache-dir=DIR for a cache per disk",
                  cfg->cache, n);
    return -1;
  }
  caches = calloc (n, sizeof *caches);
  if (caches == NULL) {
    nbdkit_error ("calloc: %m");
    return -1;
  }
  ncaches = n;
  for (size_t i = 0; i < n; i++) {
    const struct provider_disk *d = source_disk (src, i);
    CLEANUP_FREE char *image = NULL;
    CLEANUP_FREE char *meta = NULL;
    struct dcache_params p = { .verify = cfg->verify };

    caches[i].ref = (struct dcache_disk_ref){ src, i };
    if (cache_paths (cfg, d, &image, &meta) == -1)
      return -1;
    p.image = image;
    p.meta = meta;
    dcache_params_from_source (&p, src, i);
    caches[i].dc = dcache_open (&p, &dcache_source_adapter, &caches[i].ref);
    if (caches[i].dc == NULL)
      return -1;
    if (cfg->fill) {
      struct timespec t0, t1;
      char stats[512];
      clock_gettime (CLOCK_MONOTONIC, &t0);
      if (dcache_fill (caches[i].dc, cfg->connections, progress, &caches[i]) == -1)
        return -1;
      clock_gettime (CLOCK_MONOTONIC, &t1);
      dcache_stats_string (caches[i].dc, stats, sizeof stats);
      nbdkit_debug ("fill %s: done in %.3f s: %s", d->export_name,
                    (t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) / 1e9, stats);
    }
  }
  return 0;
}

struct dcache *
cache_for (size_t disk)
{
  return disk < ncaches ? caches[disk].dc : NULL;
}

void
cache_after_fork (void)
{
  for (size_t i = 0; i < ncaches; i++)
    if (caches[i].dc)
      dcache_after_fork (caches[i].dc);
}

void
cache_stats (void)
{
  for (size_t i = 0; i < ncaches; i++) {
    char buf[512];
    if (caches[i].dc == NULL)
      continue;
    dcache_stats_string (caches[i].dc, buf, sizeof buf);
    nbdkit_debug ("cache %s: %s", source_disk (caches[i].ref.src, i)->export_name, buf);
  }
}

void
cache_close_all (void)
{
  for (size_t i = 0; i < ncaches; i++)
    dcache_close (caches[i].dc);
  free (caches);
  caches = NULL;
  ncaches = 0;
}
