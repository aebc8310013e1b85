/* SPDX-License-Identifier: Apache-2.0 */
/* ferry: the plugin's disk caches (cache.c). */
#ifndef FERRY_PLUGIN_CACHE_H
#define FERRY_PLUGIN_CACHE_H

#include <stdbool.h>

#include "diskcache/dcache.h"
#include "providers/source.h"

struct cache_config {
  const char *cache;     /* cache=PATH: image of the one served disk */
  const char *cache_dir; /* cache-dir=DIR: metadata (and images) per disk */
  bool fill;             /* fill=true: fetch every invalid block before serving */
  bool verify;           /* verify=true: check every valid block's SHA-256 at open */
  unsigned connections;  /* fill workers */
};

int cache_config_check (const struct cache_config *cfg);
/* Open (and with fill, fill) a cache per served disk; reports its own errors. */
int cache_open_all (struct source *src, const struct cache_config *cfg);
/* The cache of disk I, or NULL when reads go to the source directly. */
struct dcache *cache_for (size_t disk);
void cache_after_fork (void);
void cache_stats (void);
void cache_close_all (void);

#endif /* FERRY_PLUGIN_CACHE_H */
