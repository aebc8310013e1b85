/* SPDX-License-Identifier: Apache-2.0 */
/* ferry: the provider-neutral source (source.h) — the choice of provider, the parameter
 * checks every provider shares, and what is computed the same way for all of them.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/http.h"
#include "common/log.h"
#include "source.h"

extern const struct source_ops vsphere_source_ops, rhv_source_ops;

static const struct source_ops *const providers[] = { &vsphere_source_ops,
                                                      &rhv_source_ops };

static const struct source_ops *
find_provider (const char *name)
{
  for (size_t i = 0; name && i < sizeof providers / sizeof providers[0]; i++)
    if (strcmp (providers[i]->name, name) == 0)
      return providers[i];
  return NULL;
}

int
source_config_check (const struct source_config *c)
{
  const struct source_ops *ops = find_provider (c->provider);
  char tp[128];

  if (ops == NULL) {
    log_error ("provider=%s: only provider=vsphere and provider=rhv are supported",
               c->provider ? c->provider : "(missing)");
    return -1;
  }
  if (c->session && ops == &rhv_source_ops) {
    log_error ("a session cookie is supported with provider=vsphere only");
    return -1;
  }
  if ((ops == &rhv_source_ops ? c->url == NULL : c->server == NULL || *c->server == '\0') ||
      (c->session == NULL && (c->user == NULL || c->password == NULL))) {
    log_error ("%s, user= and password= are required (password=+FILE reads it from a "
               "file, password=- asks for it)",
               ops == &rhv_source_ops ? "url=" : "server=");
    return -1;
  }
  if (c->server && ops == &rhv_source_ops)
    return ops->config_check (c); /* says which parameter rhv takes instead */
  if (c->server && (strchr (c->server, '/') || strchr (c->server, '@'))) {
    log_error ("server=%s: give a host name or address with an optional :PORT, not a URL",
               c->server);
    return -1;
  }
  if ((c->vm == NULL) == (c->vm_uuid == NULL)) {
    log_error ("give exactly one of vm=MOREF|NAME and vm-uuid=UUID");
    return -1;
  }
  if (c->thumbprint && c->cacert) {
    log_error (
        "thumbprint= and cacert= are exclusive: the thumbprint pins the certificate, "
        "the CA file verifies its chain");
    return -1;
  }
  if (!c->sslverify && (c->thumbprint || c->cacert)) {
    log_error ("sslverify=false cannot be combined with cacert= or thumbprint=");
    return -1;
  }
  if (c->thumbprint && http_normalise_thumbprint (c->thumbprint, tp, sizeof tp) == -1) {
    log_error ("thumbprint=%s: expected a SHA-1 (20 bytes) or SHA-256 (32 bytes) "
               "fingerprint in hex, like AA:BB:...",
               c->thumbprint);
    return -1;
  }
  if (c->connections < 1 || c->connections > 64) {
    log_error ("connections=%u: must be between 1 and 64", c->connections);
    return -1;
  }
  return ops->config_check ? ops->config_check (c) : 0;
}

struct source *
source_open (const struct source_config *config)
{
  const struct source_ops *ops = find_provider (config->provider);

  if (ops == NULL) {
    log_error ("provider=%s: unknown provider", config->provider ? config->provider : "");
    return NULL;
  }
  return ops->open (config);
}

int
source_release (struct source *src)
{
  if (src == NULL)
    return 0;
  return src->ops->release (src);
}

void
source_close (struct source *src)
{
  if (src)
    src->ops->close (src);
}

size_t
source_disk_count (const struct source *src)
{
  return src->disks.len;
}

const struct provider_disk *
source_disk (const struct source *src, size_t i)
{
  return &src->disks.ptr[i];
}

const struct source_vm *
source_vm (const struct source *src)
{
  return &src->vm;
}

int
source_find_disk (const struct source *src, const char *name)
{
  char *end;
  unsigned long idx;

  for (size_t i = 0; i < src->disks.len; i++) {
    const struct provider_disk *d = &src->disks.ptr[i];
    if (strcmp (d->export_name, name) == 0 || strcmp (d->key, name) == 0 ||
        strcmp (d->file_name, name) == 0)
      return i;
  }
  /* An index: digits only ("+1" or " 1" are not indexes). */
  if (*name < '0' || *name > '9')
    return -1;
  idx = strtoul (name, &end, 10);
  if (*end == '\0' && idx < src->disks.len)
    return idx;
  return -1;
}

void
source_http_timeouts (const struct source_timeouts *t, struct http_config *hc)
{
  if (t->connect)
    hc->connect_timeout = t->connect;
  if (t->control)
    hc->control_timeout = t->control;
  if (t->read)
    hc->data_timeout = t->read;
  if (t->stall)
    hc->low_speed_time = t->stall;
  if (t->retry_budget)
    hc->retry_budget_ms = t->retry_budget * 1000;
}

int
source_keep_disk (struct source *src, const char *which)
{
  disk_vector *disks = &src->disks;
  int i = source_find_disk (src, which);

  if (i == -1) {
    char *buf = NULL;
    size_t len = 0;
    FILE *fp = open_memstream (&buf, &len);
    for (size_t j = 0; fp && j < disks->len; j++)
      fprintf (fp, "%s%s \"%s\"", j ? ", " : "", disks->ptr[j].key,
               disks->ptr[j].file_name ? disks->ptr[j].file_name : disks->ptr[j].label);
    if (fp)
      fclose (fp);
    log_error ("%s (%s): no disk \"%s\"; the VM's disks are (key, file): %s",
               src->vm.id ? src->vm.id : "vm", src->vm.name ? src->vm.name : "?", which,
               buf ? buf : "?");
    free (buf);
    return -1;
  }
  for (size_t j = 0; j < disks->len; j++)
    if ((int)j != i)
      provider_disk_free (&disks->ptr[j]);
  disks->ptr[0] = disks->ptr[i];
  disks->len = 1;
  return 0;
}

int
source_pread (struct source *src, size_t i, void *buf, size_t count, uint64_t offset)
{
  return src->ops->pread (src, i, buf, count, offset);
}

int
source_allocated (struct source *src, size_t i, const extent_vector **map)
{
  return src->ops->allocated (src, i, map);
}

size_t
extent_first_after (const extent_vector *map, uint64_t offset)
{
  size_t lo = 0, hi = map->len;

  while (lo < hi) {
    size_t mid = lo + (hi - lo) / 2;
    if (map->ptr[mid].offset + map->ptr[mid].length <= offset)
      lo = mid + 1;
    else
      hi = mid;
  }
  return lo;
}

int
source_read_mapped (const extent_vector *map, void *buf, size_t count, uint64_t offset,
                    int (*read) (void *arg, void *buf, size_t count, uint64_t offset),
                    void *arg, uint64_t *zero_bytes)
{
  uint64_t end = offset + count, pos = offset;
  char *out = buf;

  if (map == NULL)
    return read (arg, buf, count, offset);
  for (size_t e = extent_first_after (map, offset); pos < end; e++) {
    uint64_t dstart = e < map->len ? map->ptr[e].offset : end;
    if (dstart > end)
      dstart = end;
    if (dstart > pos) {
      memset (out + (pos - offset), 0, dstart - pos);
      __atomic_add_fetch (zero_bytes, dstart - pos, __ATOMIC_RELAXED);
      pos = dstart;
    }
    if (e >= map->len || pos >= end)
      break;
    uint64_t dend = map->ptr[e].offset + map->ptr[e].length;
    if (dend > end)
      dend = end;
    if (read (arg, out + (pos - offset), dend - pos, pos) == -1)
      return -1;
    pos = dend;
  }
  return 0;
}

uint64_t
source_data_bytes (struct source *src, size_t i, uint64_t offset, uint64_t count)
{
  const extent_vector *map;
  uint64_t end = offset + count, sum = 0;

  if (source_allocated (src, i, &map) == -1 || map == NULL)
    return count;
  for (size_t e = extent_first_after (map, offset);
       e < map->len && map->ptr[e].offset < end; e++) {
    uint64_t s = map->ptr[e].offset > offset ? map->ptr[e].offset : offset;
    uint64_t t = map->ptr[e].offset + map->ptr[e].length;
    sum += (t < end ? t : end) - s;
  }
  return sum;
}

int
source_changed (struct source *src, size_t i, const char *change_id, extent_vector *areas,
                char **why)
{
  return src->ops->changed (src, i, change_id, areas, why);
}

int
source_shutdown (struct source *src, unsigned timeout_seconds)
{
  return src->ops->shutdown (src, timeout_seconds);
}

int
source_enable_change_tracking (struct source *src)
{
  return src->ops->enable_change_tracking (src);
}

json_t *
source_describe (struct source *src)
{
  return src->ops->describe (src);
}

void
source_stats (struct source *src, char *buf, size_t len)
{
  src->ops->stats (src, buf, len);
}

void
source_vm_free (struct source_vm *vm)
{
  free (vm->id);
  free (vm->name);
  free (vm->uuid);
  free (vm->power_state);
  free (vm->host);
  free (vm->snapshots);
  free (vm->leftovers);
  free (vm->snapshot_id);
  free (vm->snapshot_name);
  memset (vm, 0, sizeof *vm);
}
