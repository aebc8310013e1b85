/* ferry: the vSphere source behind the plugin.
 *
 * Owns the session, the VM, the snapshot being served and, per disk, its /folder path and
 * allocated map.  The snapshot policy, decided once in source_open:
 *   - no snapshot= : the VM must be off (or suspended) and have no snapshots; its live
 *     disks are read;
 *   - snapshot=MOREF : that snapshot must be the VM's only one; its frozen base is read;
 *   - snapshot=create : the VM must have no snapshots; we create one, read its frozen base
 *     and remove it in source_release (nbdkit's cleanup, also on SIGTERM).
 * Anything else would need delta-chain reading, which ferry does not do yet, so it is
 * refused with the reason rather than served stale.
 *
 * THREAD MODEL: after source_open everything is read-only except each disk's allocated
 * map, which is computed once under the disk's lock.
 */
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>

#include "common/cleanup.h"
#include "common/log.h"
#include "providers/vsphere/vsphere.h"
#include "source.h"

struct source_disk {
  char *flat_path;
  pthread_mutex_t lock;
  bool map_done;
  bool map_known;          /* false: CBT cannot tell, everything is data */
  extent_vector allocated; /* valid once map_done && map_known */
};

struct source {
  struct vs_session *session;
  struct vs_vm vm;
  char *snapshot;        /* moref being served, or NULL for the live disks */
  char *snapshot_name;   /* the name we gave it, when we created it */
  bool created_snapshot; /* we made it, so we remove it */
  disk_vector disks;     /* the served disks, as of the snapshot */
  struct source_disk *state;
  uint64_t zero_bytes; /* read as known zeros without fetching */
};

static bool
is_delta_file (const char *file_name)
{
  size_t n = strlen (file_name);
  /* NAME-000001.vmdk: the head of a snapshot chain, not a flat base. */
  if (n < 12 || strcmp (file_name + n - 5, ".vmdk") != 0 || file_name[n - 12] != '-')
    return false;
  for (size_t i = n - 11; i < n - 5; i++)
    if (file_name[i] < '0' || file_name[i] > '9')
      return false;
  return true;
}

static char *
snapshot_names (const struct vs_vm *vm)
{
  char *buf = NULL;
  size_t len = 0;
  FILE *fp = open_memstream (&buf, &len);

  if (fp == NULL)
    return NULL;
  for (size_t i = 0; i < vm->snapshots.len; i++)
    fprintf (fp, "%s\"%s\" (%s)", i ? ", " : "", vm->snapshots.ptr[i].name,
             vm->snapshots.ptr[i].moref);
  fclose (fp);
  return buf;
}

static int
refuse_snapshots (const struct vs_vm *vm)
{
  CLEANUP_FREE char *names = snapshot_names (vm);
  log_error (
      "%s (%s): the VM has %zu snapshot(s): %s; ferry reads only the flat base "
      "disks of a VM without snapshots (snapshot delta chains are not supported yet): "
      "delete or consolidate them first",
      vm->moref, vm->name, vm->snapshots.len, names ? names : "?");
  return -1;
}

/* Decide which point in time to serve; see the comment at the top. */
static int
choose_snapshot (struct source *src, const struct source_config *config)
{
  struct vs_vm *vm = &src->vm;
  bool powered_on = vm->power_state && strcmp (vm->power_state, "poweredOn") == 0;

  if (config->snapshot == NULL) {
    if (vm->snapshots.len > 0)
      return refuse_snapshots (vm);
    if (powered_on) {
      log_error ("%s (%s): the VM is powered on, so its disks change while they are read; "
                 "pass snapshot=create to read a consistent point in time (the snapshot is "
                 "removed when nbdkit exits), or power the VM off",
                 vm->moref, vm->name);
      return -1;
    }
    return 0;
  }
  if (strcmp (config->snapshot, "create") == 0) {
    char name[64], desc[128];
    if (vm->snapshots.len > 0)
      return refuse_snapshots (vm);
    snprintf (name, sizeof name, "ferry-inspect-%lld", (long long)time (NULL));
    snprintf (desc, sizeof desc,
              "Created by ferry (nbdkit ferry snapshot=create); removed "
              "when it exits. Safe to delete.");
    if (vs_create_snapshot (src->session, vm, name, desc, &src->snapshot) == -1)
      return -1;
    src->snapshot_name = strdup (name);
    src->created_snapshot = true;
    return 0;
  }
  for (size_t i = 0; i < vm->snapshots.len; i++) {
    if (strcmp (vm->snapshots.ptr[i].moref, config->snapshot) == 0) {
      if (vm->snapshots.len > 1)
        return refuse_snapshots (vm);
      src->snapshot = strdup (config->snapshot);
      return src->snapshot ? 0 : -1;
    }
  }
  log_error ("%s (%s): the VM has no snapshot %s", vm->moref, vm->name, config->snapshot);
  return -1;
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
  idx = strtoul (name, &end, 10);
  if (*name && *end == '\0' && idx < src->disks.len)
    return idx;
  return -1;
}

/* Keep only the disk the user asked for. */
static int
select_disk (struct source *src, const char *which)
{
  int i = source_find_disk (src, which);

  if (i == -1) {
    char *buf = NULL;
    size_t len = 0;
    FILE *fp = open_memstream (&buf, &len);
    for (size_t j = 0; fp && j < src->disks.len; j++)
      fprintf (fp, "%s%s \"%s\"", j ? ", " : "", src->disks.ptr[j].key,
               src->disks.ptr[j].file_name);
    if (fp)
      fclose (fp);
    log_error ("%s (%s): no disk \"%s\"; the VM's disks are (key, file): %s", src->vm.moref,
               src->vm.name, which, buf ? buf : "?");
    free (buf);
    return -1;
  }
  for (size_t j = 0; j < src->disks.len; j++)
    if ((int)j != i)
      provider_disk_free (&src->disks.ptr[j]);
  src->disks.ptr[0] = src->disks.ptr[i];
  src->disks.len = 1;
  return 0;
}

struct source *
source_open (const struct source_config *config)
{
  struct source *src = calloc (1, sizeof *src);
  struct vs_config vc = {
    .server = config->server,
    .user = config->user,
    .password = config->password,
    .cacert = config->cacert,
    .thumbprint = config->thumbprint,
    .sslverify = config->sslverify,
    .connections = config->connections,
  };

  if (src == NULL)
    return NULL;
  src->session = vs_open (&vc);
  if (src->session == NULL)
    goto err;
  if (vs_find_vm (src->session, config->vm ? config->vm : config->vm_uuid,
                  config->vm == NULL, config->datacenter, &src->vm) == -1)
    goto err;
  if (choose_snapshot (src, config) == -1)
    goto err;
  if (src->snapshot) {
    if (vs_snapshot_disks (src->session, &src->vm, src->snapshot, &src->disks) == -1)
      goto err;
  } else {
    src->disks = src->vm.disks;
    src->vm.disks = (disk_vector)empty_vector;
  }
  for (size_t i = 0; i < src->disks.len; i++) {
    if (is_delta_file (src->disks.ptr[i].file_name)) {
      log_error ("%s (%s) disk %s: %s is a snapshot delta, not a flat base disk; ferry "
                 "cannot read delta chains yet",
                 src->vm.moref, src->vm.name, src->disks.ptr[i].key,
                 src->disks.ptr[i].file_name);
      goto err;
    }
  }
  if (config->disk && select_disk (src, config->disk) == -1)
    goto err;

  src->state = calloc (src->disks.len, sizeof *src->state);
  if (src->state == NULL)
    goto err;
  for (size_t i = 0; i < src->disks.len; i++) {
    pthread_mutex_init (&src->state[i].lock, NULL);
    src->state[i].flat_path = vs_flat_path (&src->vm, &src->disks.ptr[i]);
    if (src->state[i].flat_path == NULL)
      goto err;
  }
  return src;

err:
  source_close (src);
  return NULL;
}

void
source_release (struct source *src)
{
  if (src == NULL || !src->created_snapshot)
    return;
  if (vs_remove_snapshot (src->session, &src->vm, src->snapshot) == -1)
    log_error ("%s (%s): the snapshot %s that ferry created could not be removed; remove "
               "it in vSphere",
               src->vm.moref, src->vm.name, src->snapshot);
  src->created_snapshot = false;
}

void
source_close (struct source *src)
{
  if (src == NULL)
    return;
  source_release (src);
  for (size_t i = 0; src->state && i < src->disks.len; i++) {
    free (src->state[i].flat_path);
    extent_vector_reset (&src->state[i].allocated);
    pthread_mutex_destroy (&src->state[i].lock);
  }
  free (src->state);
  disk_vector_free (&src->disks);
  vs_vm_free (&src->vm);
  free (src->snapshot);
  free (src->snapshot_name);
  vs_close (src->session);
  free (src);
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

int
source_allocated (struct source *src, size_t i, const extent_vector **map)
{
  struct source_disk *sd = &src->state[i];
  const struct provider_disk *disk = &src->disks.ptr[i];
  bool powered_off = src->vm.power_state && strcmp (src->vm.power_state, "poweredOn") != 0;
  ACQUIRE_LOCK_FOR_CURRENT_SCOPE (&sd->lock);

  if (!sd->map_done) {
    /* "*" needs CBT on the disk, and a snapshot unless the VM is off. */
    if (disk->change_id && (src->snapshot || powered_off)) {
      struct vs_fault fault = { 0 };
      if (vs_query_changed (src->session, &src->vm, src->snapshot, disk, "*",
                            &sd->allocated, &fault) == 0)
        sd->map_known = true;
      else if (fault.type) {
        log_debug ("%s disk %s: no allocation map (%s: %s); serving every block as data",
                   src->vm.moref, disk->key, fault.type,
                   fault.message ? fault.message : "");
        vs_fault_reset (&fault);
      } else
        return -1;
    }
    sd->map_done = true;
  }
  *map = sd->map_known ? &sd->allocated : NULL;
  return 0;
}

int
source_changed (struct source *src, size_t i, const char *change_id, extent_vector *areas,
                char **why)
{
  const struct provider_disk *disk = &src->disks.ptr[i];
  bool powered_off = src->vm.power_state && strcmp (src->vm.power_state, "poweredOn") != 0;
  char was[64], now[64];
  uint64_t seq;
  struct vs_fault fault = { 0 };

  *why = NULL;
  if (disk->change_id == NULL) {
    *why = strdup ("change tracking is off on the disk (no changeId)");
    return 1;
  }
  if (!src->snapshot && !powered_off) {
    *why = strdup ("no snapshot to compare against on a running VM");
    return 1;
  }
  if (vs_parse_change_id (change_id, was, sizeof was, &seq) == -1 ||
      vs_parse_change_id (disk->change_id, now, sizeof now, &seq) == -1) {
    if (asprintf (why, "changeId \"%s\" or \"%s\" is not a vSphere changeId", change_id,
                  disk->change_id) == -1)
      *why = NULL;
    return 1;
  }
  if (strcmp (was, now) != 0) {
    if (asprintf (why, "CBT was reset (changeId %s, now %s)", change_id, disk->change_id) ==
        -1)
      *why = NULL;
    return 1;
  }
  if (vs_query_changed (src->session, &src->vm, src->snapshot, disk, change_id, areas,
                        &fault) == 0)
    return 0;
  if (fault.type == NULL)
    return -1;
  if (asprintf (why, "%s disk %s: QueryChangedDiskAreas since %s: %s %s", src->vm.moref,
                disk->key, change_id, fault.type, fault.message ? fault.message : "") == -1)
    *why = NULL;
  vs_fault_reset (&fault);
  extent_vector_reset (areas);
  return 1;
}

const char *
source_vm_uuid (const struct source *src)
{
  return src->vm.uuid ? src->vm.uuid : src->vm.moref;
}

/* First extent that ends after OFFSET (binary search). */
static size_t
first_extent_after (const extent_vector *map, uint64_t offset)
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

uint64_t
source_data_bytes (struct source *src, size_t i, uint64_t offset, uint64_t count)
{
  const extent_vector *map;
  uint64_t end = offset + count, sum = 0;

  if (source_allocated (src, i, &map) == -1 || map == NULL)
    return count;
  for (size_t e = first_extent_after (map, offset);
       e < map->len && map->ptr[e].offset < end; e++) {
    uint64_t s = map->ptr[e].offset > offset ? map->ptr[e].offset : offset;
    uint64_t t = map->ptr[e].offset + map->ptr[e].length;
    sum += (t < end ? t : end) - s;
  }
  return sum;
}

int
source_pread (struct source *src, size_t i, void *buf, uint32_t count, uint64_t offset)
{
  const char *path = src->state[i].flat_path;
  const extent_vector *map;
  uint64_t end = offset + count, pos = offset;
  char *out = buf;

  if (source_allocated (src, i, &map) == -1)
    return -1;
  if (map == NULL)
    return vs_read (src->session, path, buf, count, offset);

  /* Fetch the allocated parts; the rest are known zeros. */
  for (size_t e = first_extent_after (map, offset); pos < end; e++) {
    uint64_t dstart = e < map->len ? map->ptr[e].offset : end;
    if (dstart > end)
      dstart = end;
    if (dstart > pos) {
      memset (out + (pos - offset), 0, dstart - pos);
      __atomic_add_fetch (&src->zero_bytes, dstart - pos, __ATOMIC_RELAXED);
      pos = dstart;
    }
    if (e >= map->len || pos >= end)
      break;
    uint64_t dend = map->ptr[e].offset + map->ptr[e].length;
    if (dend > end)
      dend = end;
    if (vs_read (src->session, path, out + (pos - offset), dend - pos, pos) == -1)
      return -1;
    pos = dend;
  }
  return 0;
}

void
source_stats (struct source *src, char *buf, size_t len)
{
  char vs[256];

  vs_stats (src->session, vs, sizeof vs);
  snprintf (buf, len, "%s, known-zero bytes not fetched %" PRIu64, vs,
            __atomic_load_n (&src->zero_bytes, __ATOMIC_RELAXED));
}

static json_t *
json_string_or_null (const char *s)
{
  return s ? json_string (s) : json_null ();
}

json_t *
source_describe (struct source *src, const char *server)
{
  const struct vs_vm *vm = &src->vm;
  json_t *disks = json_array (), *nics = json_array (), *snap = json_null ();

  for (size_t i = 0; i < src->disks.len; i++) {
    const struct provider_disk *d = &src->disks.ptr[i];
    const extent_vector *map;
    json_t *allocated = json_null ();
    if (source_allocated (src, i, &map) == -1)
      goto err;
    if (map) { /* known only with CBT */
      json_decref (allocated);
      allocated = json_integer (source_data_bytes (src, i, 0, d->capacity));
    }
    json_array_append_new (
        disks,
        json_pack ("{s:s, s:o, s:s, s:s, s:I, s:o, s:o, s:o}", "key", d->key, "label",
                   json_string_or_null (d->label), "fileName", d->file_name, "export",
                   d->export_name, "capacity", (json_int_t)d->capacity, "allocated",
                   allocated, "changeId", json_string_or_null (d->change_id), "uuid",
                   json_string_or_null (d->uuid)));
  }
  for (size_t i = 0; i < vm->nics.len; i++) {
    const struct vs_nic *n = &vm->nics.ptr[i];
    json_array_append_new (nics, json_pack ("{s:o, s:o, s:o, s:o}", "label",
                                            json_string_or_null (n->label), "type",
                                            json_string_or_null (n->type), "mac",
                                            json_string_or_null (n->mac), "network",
                                            json_string_or_null (n->network)));
  }
  if (src->snapshot) {
    const char *name = NULL;
    for (size_t i = 0; i < vm->snapshots.len; i++)
      if (strcmp (vm->snapshots.ptr[i].moref, src->snapshot) == 0)
        name = vm->snapshots.ptr[i].name;
    json_decref (snap);
    snap = json_pack ("{s:s, s:o, s:b}", "moref", src->snapshot, "name",
                      json_string_or_null (name ? name : src->snapshot_name),
                      "createdByFerry", src->created_snapshot);
  }
  return json_pack (
      "{s:s, s:o, s:o, s:o, s:o, s:i, s:I, s:o, s:o, s:o, s:o, s:o, s:{s:s, s:s}}", "moref",
      vm->moref, "name", json_string_or_null (vm->name), "uuid",
      json_string_or_null (vm->uuid), "instanceUuid",
      json_string_or_null (vm->instance_uuid), "guestId",
      json_string_or_null (vm->guest_id), "cpus", (int)vm->cpus, "memoryMB",
      (json_int_t)vm->memory_mb, "firmware", json_string_or_null (vm->firmware),
      "powerState", json_string_or_null (vm->power_state), "snapshot", snap, "disks", disks,
      "nics", nics, "source", "provider", "vsphere", "server", server);

err:
  json_decref (disks);
  json_decref (nics);
  json_decref (snap);
  return NULL;
}
