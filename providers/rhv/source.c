/* SPDX-License-Identifier: Apache-2.0 */
/* ferry: the RHV / oVirt source (source.h) — one VM at one point in time.
 *
 * Owns the engine session, the VM, the backup being read (if any) and, per disk, its
 * image transfer and allocated map.  The point in time, decided once in rhv_open:
 *   - the VM is down and no checkpoint= is given: each disk is read by a plain download
 *     transfer (cold); the disks have no change id;
 *   - snapshot=ID (a VM snapshot, or one disk snapshot): each disk is read by a transfer
 *     of its disk snapshot in it (format raw: the layers up to it, at virtual size), the
 *     VM up or down; no change id either;
 *   - otherwise (the VM runs, or checkpoint= asks for changes): a backup of the selected
 *     disks — incremental since checkpoint=ID when the engine knows that checkpoint, else
 *     full — read by transfers of that backup; each disk's change id is the backup's new
 *     checkpoint, and source_changed answers for the checkpoint it started from.
 * Every transfer is ended in release (finalize), or cancelled when open fails; the backup
 * is finalized after its transfers.
 *
 * The engine ends a download by itself when its ticket has been idle for the transfer's
 * inactivity timeout, or when every byte was read and it stays idle: a keeper thread
 * touches idle tickets (OPTIONS), and a read that fails on a transfer the engine has ended
 * starts a new one and tries again.
 *
 * THREAD MODEL: after open, each disk's transfer and allocated map change only under the
 * disk's lock; reads take the lock only to find the pool, so they run in parallel.  The
 * keeper thread is started by the first read in a process and stopped in release.  nbdkit
 * forks after open (and reads may happen before, with fill=true): a fork handler stops the
 * keeper before any fork, so no lock is copied held and neither process keeps a keeper it
 * does not need; the next read starts one again where reads happen.
 */
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "common/cleanup.h"
#include "common/http.h"
#include "common/log.h"
#include "common/util.h"
#include "providers/source.h"
#include "rhv.h"

/* Touch a ticket idle for a third of its inactivity timeout (30 s at most). */
static uint64_t
keepalive_ms (const struct rhv_transfer *t)
{
  uint64_t ms = t->inactivity_timeout * 1000 / 3;
  return ms == 0 || ms > 30000 ? 30000 : ms < 500 ? 500 : ms;
}

DEFINE_VECTOR_TYPE (pool_vector, struct http_pool *);

struct rhv_disk_state {
  pthread_mutex_t lock;
  struct rhv_transfer t;
  pool_vector retired; /* pools of ended transfers, which reads may still hold */
  bool incremental;    /* the backup has this disk's changes since from_checkpoint */
  char *disk_snapshot; /* snapshot=: the disk snapshot read, else NULL */
  bool untouchable;    /* the keeper's OPTIONS failed: the ticket is gone */
  uint64_t last_io;    /* monotonic ms of the last request on the ticket */
  bool map_done, map_known;
  extent_vector allocated; /* the data areas (not zero) */
};

struct rhv_source {
  struct source base; /* first: a struct source * is a struct rhv_source * */
  struct rhv_config cfg;
  struct rhv_engine *e;
  struct rhv_vm vm;
  bool metadata_only;
  char *backup_id;
  char *snapshot;        /* snapshot=ID as given, or NULL */
  char *from_checkpoint; /* the backup's start, NULL for a full backup */
  char *to_checkpoint;
  struct rhv_disk_state *state;

  pthread_mutex_t keeper_lock;
  pthread_cond_t keeper_cond;
  pthread_t keeper;
  pid_t keeper_pid; /* the process whose keeper runs, 0 = none */
  bool keeper_stop;
  bool released;           /* no keeper any more */
  struct rhv_source *next; /* in the list the fork handler walks */

  uint64_t zero_bytes, restarts; /* atomics */
};

static void rhv_close (struct source *base);

static uint64_t
now_ms (void)
{
  return (uint64_t)(time_monotonic () * 1000);
}

static char *
what_disk (struct rhv_source *src, size_t i, char *buf, size_t len)
{
  const struct provider_disk *d = &src->base.disks.ptr[i];
  snprintf (buf, len, "vm %s (%s) disk %s (%s)", src->vm.id, src->vm.name, d->key,
            d->label ? d->label : "");
  return buf;
}

static int
rhv_config_check (const struct source_config *c)
{
  CLEANUP_FREE char *base = NULL, *api = NULL, *sso = NULL, *logout = NULL;

  if (c->url == NULL || c->server) {
    log_error ("provider=rhv takes url=https://ENGINE/ovirt-engine/api (not server=)");
    return -1;
  }
  if (rhv_parse_url (c->url, &base, &api, &sso, &logout) == -1) {
    log_error ("url=%s: expected https://ENGINE/ovirt-engine/api", c->url);
    return -1;
  }
  if (c->vm == NULL) {
    log_error ("provider=rhv: give the VM as vm=ID|NAME");
    return -1;
  }
  if (c->datacenter) {
    log_error ("provider=rhv does not take datacenter= (the engine finds the host)");
    return -1;
  }
  if (c->snapshot && strcmp (c->snapshot, "create") == 0) {
    log_error ("provider=rhv: snapshot=create is vSphere's; a running VM is read through "
               "a backup without it, and snapshot=ID reads an existing snapshot");
    return -1;
  }
  if (c->snapshot && c->checkpoint) {
    log_error ("provider=rhv: give snapshot=ID (read a snapshot) or checkpoint=ID (a "
               "backup since that checkpoint), not both");
    return -1;
  }
  return 0;
}

/* The provider-neutral disks from the engine's. */
static int
make_disks (struct rhv_source *src)
{
  for (size_t i = 0; i < src->vm.disks.len; i++) {
    const struct rhv_disk *rd = &src->vm.disks.ptr[i];
    struct provider_disk d = { 0 };
    char *sd =
        rd->storage_domain ? rhv_storage_domain_name (src->e, rd->storage_domain) : NULL;

    d.key = strdup (rd->id);
    d.label = strdup (rd->alias ? rd->alias : rd->id);
    d.datastore = sd ? sd : strdup (rd->storage_domain ? rd->storage_domain : "");
    if (asprintf (&d.file_name, "[%s] %s", d.datastore ? d.datastore : "",
                  rd->alias ? rd->alias : rd->id) == -1)
      d.file_name = NULL;
    d.uuid = strdup (rd->id);
    d.export_name = provider_export_name (rd->id, rd->alias);
    d.capacity = rd->provisioned_size;
    if (!d.key || !d.label || !d.datastore || !d.file_name || !d.uuid || !d.export_name ||
        disk_vector_append (&src->base.disks, d) == -1) {
      provider_disk_free (&d);
      log_error ("vm %s: out of memory", src->vm.id);
      return -1;
    }
  }
  return 0;
}

static const struct rhv_disk *
engine_disk (struct rhv_source *src, const char *id)
{
  for (size_t i = 0; i < src->vm.disks.len; i++)
    if (strcmp (src->vm.disks.ptr[i].id, id) == 0)
      return &src->vm.disks.ptr[i];
  return NULL;
}

/* Only image disks that are not illegal can be transferred. */
static int
check_disks (struct rhv_source *src)
{
  for (size_t i = 0; i < src->base.disks.len; i++) {
    const struct rhv_disk *d = engine_disk (src, src->base.disks.ptr[i].key);
    char what[512];

    what_disk (src, i, what, sizeof what);
    if (d->storage_type && strcmp (d->storage_type, "image") != 0) {
      log_error ("%s: storage type %s cannot be downloaded (only image disks can)", what,
                 d->storage_type);
      return -1;
    }
    /* A locked disk may be unlocked soon (a transfer ending): transfers wait for it. */
    if (d->status && strcmp (d->status, "illegal") == 0) {
      log_error ("%s: the disk is illegal in the engine (a failed operation left it so)",
                 what);
      return -1;
    }
  }
  return 0;
}

/* snapshot=ID: each served disk's disk snapshot that is ID or belongs to VM snapshot ID. */
static int
find_disk_snapshots (struct rhv_source *src, const char *snapshot)
{
  if ((src->snapshot = strdup (snapshot)) == NULL)
    return -1;
  for (size_t i = 0; i < src->base.disks.len; i++) {
    char what[512];
    int r = rhv_disk_snapshot (src->e, src->base.disks.ptr[i].key, snapshot,
                               what_disk (src, i, what, sizeof what),
                               &src->state[i].disk_snapshot);
    if (r == -1)
      return -1;
    if (r == 0) {
      log_error ("%s: no disk snapshot %s, nor one in VM snapshot %s (GET "
                 "/disks/%s/disksnapshots); a snapshot that does not include every disk "
                 "needs disk= to choose those it has",
                 what, snapshot, snapshot, src->base.disks.ptr[i].key);
      return -1;
    }
    log_debug ("%s: reading disk snapshot %s", what, src->state[i].disk_snapshot);
  }
  return 0;
}

/* A backup of the served disks, incremental since CHECKPOINT when the engine knows it. */
static int
start_backup (struct rhv_source *src, const char *checkpoint)
{
  size_t n = src->base.disks.len;
  const char **ids = calloc (n, sizeof *ids);
  char **modes = calloc (n, sizeof *modes);
  int r = -1;

  if (ids == NULL || modes == NULL)
    goto out;
  if (checkpoint) {
    int known = rhv_checkpoint_exists (src->e, &src->vm, checkpoint);
    if (known == -1)
      goto out;
    if (known == 0)
      log_info ("vm %s (%s): the engine has no valid checkpoint %s; taking a full backup "
                "(every block is read again)",
                src->vm.id, src->vm.name, checkpoint);
    else if ((src->from_checkpoint = strdup (checkpoint)) == NULL)
      goto out;
  }
  for (size_t i = 0; i < n; i++)
    ids[i] = src->base.disks.ptr[i].key;
  if (rhv_backup_start (src->e, &src->vm, src->from_checkpoint, ids, n, &src->backup_id,
                        &src->to_checkpoint, modes) == -1)
    goto out;
  r = 0;
  for (size_t i = 0; i < n; i++) {
    src->state[i].incremental =
        src->from_checkpoint && modes[i] && strcmp (modes[i], "incremental") == 0;
    free (src->base.disks.ptr[i].change_id);
    src->base.disks.ptr[i].change_id = strdup (src->to_checkpoint);
    if (src->base.disks.ptr[i].change_id == NULL)
      r = -1;
  }
out:
  for (size_t i = 0; modes && i < n; i++)
    free (modes[i]);
  free (modes);
  free (ids);
  return r;
}

static bool
disk_incremental (const struct rhv_disk *d)
{
  return d && d->backup && strcmp (d->backup, "incremental") == 0;
}

static int
fill_base_vm (struct rhv_source *src)
{
  struct source_vm *b = &src->base.vm;
  const char *st = src->vm.status;

  source_vm_free (b);
  b->id = strdup (src->vm.id);
  b->name = strdup (src->vm.name ? src->vm.name : src->vm.id);
  b->uuid = strdup (src->vm.id);
  b->power_state = strdup (strcmp (st, "down") == 0        ? "poweredOff"
                           : strcmp (st, "suspended") == 0 ? "suspended"
                                                           : "poweredOn");
  b->host = src->vm.host ? strdup (src->vm.host) : NULL;
  /* Warm rounds need an incremental backup of every served disk. */
  b->change_tracking = src->base.disks.len > 0;
  for (size_t i = 0; i < src->base.disks.len; i++)
    if (!disk_incremental (engine_disk (src, src->base.disks.ptr[i].key)))
      b->change_tracking = false;
  if (src->backup_id) {
    b->snapshot_id = strdup (src->backup_id);
    b->snapshot_name = strdup (src->to_checkpoint);
  } else if (src->snapshot)
    b->snapshot_id = strdup (src->snapshot);
  if (b->id == NULL || b->name == NULL || b->uuid == NULL || b->power_state == NULL) {
    log_error ("vm %s: out of memory", src->vm.id);
    return -1;
  }
  return 0;
}

/* Stop the keeper thread (if this process runs one) and wait for it. */
static void
halt_keeper (struct rhv_source *src)
{
  pid_t pid;

  {
    ACQUIRE_LOCK_FOR_CURRENT_SCOPE (&src->keeper_lock);
    pid = src->keeper_pid;
    src->keeper_stop = true;
    pthread_cond_broadcast (&src->keeper_cond);
  }
  if (pid == getpid ())
    pthread_join (src->keeper, NULL);
  ACQUIRE_LOCK_FOR_CURRENT_SCOPE (&src->keeper_lock);
  src->keeper_pid = 0;
  src->keeper_stop = false;
}

static pthread_mutex_t sources_lock = PTHREAD_MUTEX_INITIALIZER;
static struct rhv_source *sources;
static pthread_once_t atfork_once = PTHREAD_ONCE_INIT;

static void
before_fork (void)
{
  pthread_mutex_lock (&sources_lock);
  for (struct rhv_source *s = sources; s; s = s->next)
    halt_keeper (s);
}

static void
after_fork (void)
{
  pthread_mutex_unlock (&sources_lock);
}

static void
register_atfork (void)
{
  pthread_atfork (before_fork, after_fork, after_fork);
}

static void
list_source (struct rhv_source *src, bool add)
{
  ACQUIRE_LOCK_FOR_CURRENT_SCOPE (&sources_lock);
  struct rhv_source **p = &sources;

  while (*p && *p != src)
    p = &(*p)->next;
  if (add && *p == NULL) {
    src->next = sources;
    sources = src;
  } else if (!add && *p)
    *p = src->next;
}

static struct source *
rhv_open (const struct source_config *config)
{
  extern const struct source_ops rhv_source_ops;
  struct rhv_source *src;
  disk_vector *disks;

  /* Callers that skip source_config_check (ferry) still get a message, not a crash. */
  if (config->url == NULL || config->user == NULL || config->password == NULL ||
      config->vm == NULL) {
    log_error ("provider=rhv needs url=https://ENGINE/ovirt-engine/api, user=, password= "
               "and vm=");
    return NULL;
  }
  src = calloc (1, sizeof *src);
  if (src == NULL)
    return NULL;
  src->base.ops = &rhv_source_ops;
  disks = &src->base.disks;
  pthread_mutex_init (&src->keeper_lock, NULL);
  pthread_cond_init (&src->keeper_cond, NULL);
  pthread_once (&atfork_once, register_atfork);
  list_source (src, true);
  src->metadata_only = config->metadata_only;
  src->cfg = (struct rhv_config){
    .url = strdup (config->url),
    .user = strdup (config->user),
    .cacert = config->cacert ? strdup (config->cacert) : NULL,
    .thumbprint = config->thumbprint ? strdup (config->thumbprint) : NULL,
    .sslverify = config->sslverify,
    .connections = config->connections,
    .timeouts = config->timeouts,
  };
  src->cfg.password = NULL; /* only the engine keeps it */
  if (src->cfg.url == NULL || src->cfg.user == NULL ||
      (config->cacert && !src->cfg.cacert) || (config->thumbprint && !src->cfg.thumbprint))
    goto err;
  {
    struct rhv_config ec = src->cfg;
    ec.password = config->password;
    src->e = rhv_engine_open (&ec);
  }
  if (src->e == NULL || rhv_find_vm (src->e, config->vm, &src->vm) == -1 ||
      make_disks (src) == -1)
    goto err;
  /* The VM's identity now (for messages); its point in time once the backup exists. */
  if (fill_base_vm (src) == -1 ||
      (config->disk && source_keep_disk (&src->base, config->disk) == -1))
    goto err;
  src->state = calloc (disks->len, sizeof *src->state);
  if (src->state == NULL)
    goto err;
  for (size_t i = 0; i < disks->len; i++)
    pthread_mutex_init (&src->state[i].lock, NULL);
  if (config->metadata_only)
    return fill_base_vm (src) == -1 ? (rhv_close (&src->base), NULL) : &src->base;

  if (check_disks (src) == -1)
    goto err;
  /* ferry asks for snapshot=create: for RHV that is the default point in time. */
  if (config->snapshot && strcmp (config->snapshot, "create") != 0) {
    if (find_disk_snapshots (src, config->snapshot) == -1)
      goto err;
  } else if ((config->checkpoint || strcmp (src->vm.status, "down") != 0) &&
             start_backup (src, config->checkpoint) == -1)
    goto err;
  for (size_t i = 0; i < disks->len; i++) {
    char what[512];
    what_disk (src, i, what, sizeof what);
    if (rhv_transfer_start (src->e, &src->cfg, disks->ptr[i].key, src->backup_id,
                            src->state[i].disk_snapshot, what, &src->state[i].t) == -1)
      goto err;
    src->state[i].last_io = now_ms ();
  }
  if (fill_base_vm (src) == -1)
    goto err;
  return &src->base;

err:
  /* Cancel what was started (not finalize: nothing was read). */
  for (size_t i = 0; src->state && i < disks->len; i++) {
    char what[512];
    rhv_transfer_finish (src->e, &src->state[i].t, false,
                         what_disk (src, i, what, sizeof what));
  }
  rhv_close (&src->base);
  return NULL;
}

static int
rhv_release (struct source *base)
{
  struct rhv_source *src = (struct rhv_source *)base;
  int r = 0;

  if (src->e == NULL)
    return 0;
  {
    ACQUIRE_LOCK_FOR_CURRENT_SCOPE (&src->keeper_lock);
    src->released = true;
  }
  halt_keeper (src);
  for (size_t i = 0; src->state && i < base->disks.len; i++) {
    char what[512];
    ACQUIRE_LOCK_FOR_CURRENT_SCOPE (&src->state[i].lock);
    if (rhv_transfer_finish (src->e, &src->state[i].t, true,
                             what_disk (src, i, what, sizeof what)) == -1)
      r = -1;
  }
  if (src->backup_id) {
    if (rhv_backup_finalize (src->e, &src->vm, src->backup_id) == -1)
      r = -1;
    free (src->backup_id);
    src->backup_id = NULL;
  }
  return r;
}

static void
rhv_close (struct source *base)
{
  struct rhv_source *src = (struct rhv_source *)base;

  rhv_release (base);
  list_source (src, false);
  for (size_t i = 0; src->state && i < base->disks.len; i++) {
    rhv_transfer_free (&src->state[i].t);
    for (size_t k = 0; k < src->state[i].retired.len; k++)
      http_pool_free (src->state[i].retired.ptr[k]);
    pool_vector_reset (&src->state[i].retired);
    free (src->state[i].disk_snapshot);
    extent_vector_reset (&src->state[i].allocated);
    pthread_mutex_destroy (&src->state[i].lock);
  }
  free (src->state);
  disk_vector_free (&base->disks);
  source_vm_free (&base->vm);
  rhv_vm_free (&src->vm);
  rhv_engine_close (src->e);
  free ((char *)src->cfg.url);
  free ((char *)src->cfg.user);
  free ((char *)src->cfg.cacert);
  free ((char *)src->cfg.thumbprint);
  free (src->snapshot);
  free (src->from_checkpoint);
  free (src->to_checkpoint);
  free (src->backup_id);
  pthread_cond_destroy (&src->keeper_cond);
  pthread_mutex_destroy (&src->keeper_lock);
  free (src);
}

/* Touch every ticket that has been idle for a while, so the engine keeps it. */
static void *
keeper_main (void *opaque)
{
  struct rhv_source *src = opaque;

  for (;;) {
    {
      ACQUIRE_LOCK_FOR_CURRENT_SCOPE (&src->keeper_lock);
      struct timespec ts;
      clock_gettime (CLOCK_REALTIME, &ts);
      ts.tv_nsec += 250 * 1000 * 1000;
      if (ts.tv_nsec >= 1000000000) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000;
      }
      if (!src->keeper_stop)
        pthread_cond_timedwait (&src->keeper_cond, &src->keeper_lock, &ts);
      if (src->keeper_stop)
        return NULL;
    }
    for (size_t i = 0; i < src->base.disks.len; i++) {
      struct rhv_disk_state *sd = &src->state[i];
      struct http_response resp = { 0 };
      ACQUIRE_LOCK_FOR_CURRENT_SCOPE (&sd->lock);
      if (sd->t.pool == NULL || sd->untouchable ||
          now_ms () - __atomic_load_n (&sd->last_io, __ATOMIC_RELAXED) <
              keepalive_ms (&sd->t))
        continue;
      if (http_request (sd->t.pool, "OPTIONS", sd->t.path, NULL, NULL, 0, true, &resp) ==
              0 &&
          resp.status == 200)
        __atomic_store_n (&sd->last_io, now_ms (), __ATOMIC_RELAXED);
      else {
        /* A read will find out why, and start a new transfer if the engine ended it. */
        log_debug ("vm %s disk %s: keep-alive OPTIONS failed (HTTP %ld); not trying again",
                   src->vm.id, src->base.disks.ptr[i].key, resp.status);
        sd->untouchable = true;
      }
      http_response_reset (&resp);
    }
  }
}

/* Start the keeper in this process (the first read after nbdkit forked). */
static void
ensure_keeper (struct rhv_source *src)
{
  ACQUIRE_LOCK_FOR_CURRENT_SCOPE (&src->keeper_lock);
  if (src->keeper_pid == getpid () || src->keeper_stop || src->released)
    return;
  if (pthread_create (&src->keeper, NULL, keeper_main, src) == 0)
    src->keeper_pid = getpid ();
  else
    log_debug ("vm %s: no keep-alive thread: %m", src->vm.id);
}

/* After a failed request: if the engine ended the transfer, start another one.  1 when
 * the read may be tried again.
 */
static int
restart_transfer (struct rhv_source *src, size_t i, const struct http_pool *used)
{
  struct rhv_disk_state *sd = &src->state[i];
  char what[512];
  ACQUIRE_LOCK_FOR_CURRENT_SCOPE (&sd->lock);
  int alive;

  if (sd->t.pool != used)
    return sd->t.pool ? 1 : 0; /* another read has started a new transfer already */
  alive = rhv_transfer_alive (src->e, &sd->t, what_disk (src, i, what, sizeof what));
  if (alive == -1 || alive == 1)
    return 0;
  log_info ("%s: the engine ended transfer %s; starting a new one", what, sd->t.id);
  if (pool_vector_append (&sd->retired, sd->t.pool) == -1)
    return -1;
  sd->t.pool = NULL;
  if (alive == 2) /* paused or stuck: cancel it, never leave it open */
    rhv_transfer_finish (src->e, &sd->t, false, what);
  sd->t.open = false; /* over already: nothing to finalize */
  rhv_transfer_free (&sd->t);
  if (rhv_transfer_start (src->e, &src->cfg, src->base.disks.ptr[i].key, src->backup_id,
                          sd->disk_snapshot, what, &sd->t) == -1)
    return -1;
  sd->untouchable = false;
  __atomic_add_fetch (&src->restarts, 1, __ATOMIC_RELAXED);
  return 1;
}

/* An imageio request on disk I's transfer, restarted once if the engine ended it. */
static int
get_range (struct rhv_source *src, size_t i, void *buf, size_t count, uint64_t offset)
{
  struct rhv_disk_state *sd = &src->state[i];

  for (int attempt = 0;; attempt++) {
    struct http_pool *pool;
    CLEANUP_FREE char *path = NULL;
    int r;
    /* A restart retires the pool (freed at close) and frees the path: copy it. */
    {
      ACQUIRE_LOCK_FOR_CURRENT_SCOPE (&sd->lock);
      pool = sd->t.pool;
      path = sd->t.path ? strdup (sd->t.path) : NULL;
    }
    if (pool == NULL || path == NULL) {
      log_error ("vm %s disk %s: the transfer is closed", src->vm.id,
                 src->base.disks.ptr[i].key);
      return -1;
    }
    r = http_get_range (pool, path, buf, count, offset);
    __atomic_store_n (&sd->last_io, now_ms (), __ATOMIC_RELAXED);
    if (r == 0 || attempt > 0 || restart_transfer (src, i, pool) != 1)
      return r;
  }
}

static int
rhv_allocated (struct source *base, size_t i, const extent_vector **map)
{
  struct rhv_source *src = (struct rhv_source *)base;
  struct rhv_disk_state *sd = &src->state[i];
  ACQUIRE_LOCK_FOR_CURRENT_SCOPE (&sd->lock);

  if (!sd->map_done && sd->t.pool) {
    rhv_extent_vector ext = empty_vector;
    if (rhv_imageio_extents (sd->t.pool, sd->t.path, "zero", &ext) == -1) {
      rhv_extent_vector_reset (&ext);
      return -1;
    }
    for (size_t k = 0; k < ext.len; k++)
      if (!ext.ptr[k].zero &&
          extent_append_merge (&sd->allocated, ext.ptr[k].start, ext.ptr[k].length) == -1) {
        rhv_extent_vector_reset (&ext);
        log_error ("vm %s: out of memory", src->vm.id);
        return -1;
      }
    rhv_extent_vector_reset (&ext);
    sd->map_known = true;
    sd->map_done = true;
  }
  *map = sd->map_known ? &sd->allocated : NULL;
  return 0;
}

static int
rhv_changed (struct source *base, size_t i, const char *since, extent_vector *areas,
             char **why)
{
  struct rhv_source *src = (struct rhv_source *)base;
  struct rhv_disk_state *sd = &src->state[i];
  rhv_extent_vector ext = empty_vector;
  struct http_pool *pool;
  int r;

  *why = NULL;
  if (src->backup_id == NULL) {
    *why =
        strdup (src->snapshot ? "a snapshot is read, not a backup: the engine reports "
                                "no changes"
                              : "no backup: the VM is down and no checkpoint= was given, "
                                "so the engine reports no changes");
    return 1;
  }
  if (src->from_checkpoint == NULL || strcmp (since, src->from_checkpoint) != 0) {
    if (asprintf (why, "the changes are since checkpoint %s, not %s",
                  src->from_checkpoint ? src->from_checkpoint : "(none: a full backup)",
                  since) == -1)
      *why = NULL;
    return 1;
  }
  if (!sd->incremental) {
    if (asprintf (why,
                  "the engine made a full backup of disk %s (no usable bitmap since "
                  "checkpoint %s)",
                  base->disks.ptr[i].key, since) == -1)
      *why = NULL;
    return 1;
  }
  {
    ACQUIRE_LOCK_FOR_CURRENT_SCOPE (&sd->lock);
    pool = sd->t.pool;
    r = pool ? rhv_imageio_extents (pool, sd->t.path, "dirty", &ext) : -1;
  }
  if (r == -1) {
    rhv_extent_vector_reset (&ext);
    return -1;
  }
  for (size_t k = 0; k < ext.len; k++)
    if (ext.ptr[k].dirty &&
        extent_append_merge (areas, ext.ptr[k].start, ext.ptr[k].length) == -1) {
      rhv_extent_vector_reset (&ext);
      return -1;
    }
  rhv_extent_vector_reset (&ext);
  return 0;
}

/* Reads of one disk's transfer, for source_read_mapped. */
struct disk_read {
  struct rhv_source *src;
  size_t disk;
};

static int
read_disk (void *opaque, void *buf, size_t count, uint64_t offset)
{
  const struct disk_read *r = opaque;
  return get_range (r->src, r->disk, buf, count, offset);
}

static int
rhv_pread (struct source *base, size_t i, void *buf, size_t count, uint64_t offset)
{
  struct rhv_source *src = (struct rhv_source *)base;
  const extent_vector *map;
  struct disk_read r = { src, i };

  if (src->metadata_only) {
    log_error (
        "vm %s: reads need a point in time (the source was opened for metadata only)",
        src->vm.id);
    return -1;
  }
  ensure_keeper (src);
  if (rhv_allocated (base, i, &map) == -1)
    return -1;
  return source_read_mapped (map, buf, count, offset, read_disk, &r, &src->zero_bytes);
}

/* Wait until the VM is down, polling, for at most TIMEOUT seconds.  1 = down. */
static int
wait_down (struct rhv_source *src, unsigned timeout)
{
  double deadline = time_monotonic () + timeout;
  unsigned delay = 200;

  for (;;) {
    if (rhv_vm_status (src->e, &src->vm) == -1)
      return -1;
    if (strcmp (src->vm.status, "down") == 0)
      return 1;
    if (time_monotonic () >= deadline)
      return 0;
    sleep_ms (delay);
    if (delay < 2000)
      delay *= 2;
  }
}

static int
vm_action (struct rhv_source *src, const char *action)
{
  CLEANUP_FREE char *path = NULL, *body = rhv_xml ("action", (const char *)NULL);
  char what[256];

  snprintf (what, sizeof what, "vm %s (%s)", src->vm.id, src->vm.name);
  if (body == NULL || asprintf (&path, "/vms/%s/%s", src->vm.id, action) == -1)
    return -1;
  return rhv_call_ok (src->e, what, "POST", path, body, NULL);
}

static int
rhv_shutdown (struct source *base, unsigned timeout)
{
  struct rhv_source *src = (struct rhv_source *)base;
  int r;

  if (strcmp (src->vm.status, "down") == 0)
    return 0;
  log_info ("vm %s (%s): shutting the guest down (up to %u s)", src->vm.id, src->vm.name,
            timeout);
  if (vm_action (src, "shutdown") == 0 && (r = wait_down (src, timeout)) != 0)
    goto done;
  log_info ("vm %s (%s): the guest did not shut down within %u s; stopping the VM",
            src->vm.id, src->vm.name, timeout);
  if (vm_action (src, "stop") == -1)
    return -1;
  r = wait_down (src, 60);
done:
  if (r == 0)
    log_error ("vm %s (%s): the VM is still %s after stop", src->vm.id, src->vm.name,
               src->vm.status);
  if (r != 1)
    return -1;
  free (base->vm.power_state);
  base->vm.power_state = strdup ("poweredOff");
  return 0;
}

static int
rhv_enable_change_tracking (struct source *base)
{
  struct rhv_source *src = (struct rhv_source *)base;
  char list[1024] = "";
  size_t len = 0;

  for (size_t i = 0; i < base->disks.len; i++) {
    const struct rhv_disk *d = engine_disk (src, base->disks.ptr[i].key);
    if (!disk_incremental (d) && len < sizeof list)
      len += snprintf (list + len, sizeof list - len, "%s%s (%s, %s, backup %s)",
                       len ? ", " : "", d->id, d->alias ? d->alias : "?",
                       d->format ? d->format : "?", d->backup ? d->backup : "none");
  }
  log_error ("vm %s (%s): disk %s has no incremental backup: turn on \"Enable Incremental "
             "Backup\" on it in the engine (qcow2 disks only), or migrate cold; ferry "
             "does not change the VM's disks",
             src->vm.id, src->vm.name, list[0] ? list : "(none)");
  return -1;
}

static void
rhv_stats (struct source *base, char *buf, size_t len)
{
  struct rhv_source *src = (struct rhv_source *)base;
  char es[256];
  uint64_t bytes = 0;

  rhv_engine_stats (src->e, es, sizeof es);
  for (size_t i = 0; i < base->disks.len; i++) {
    struct http_stats hs;
    ACQUIRE_LOCK_FOR_CURRENT_SCOPE (&src->state[i].lock);
    if (src->state[i].t.pool) {
      http_pool_stats (src->state[i].t.pool, &hs);
      bytes += hs.bytes;
    }
  }
  snprintf (buf, len,
            "%s, imageio bytes %" PRIu64 ", known-zero bytes not fetched %" PRIu64
            ", transfers restarted %" PRIu64,
            es, bytes, __atomic_load_n (&src->zero_bytes, __ATOMIC_RELAXED),
            __atomic_load_n (&src->restarts, __ATOMIC_RELAXED));
}

static json_t *
str_or_null (const char *s)
{
  return s ? json_string (s) : json_null ();
}

static json_t *
rhv_describe (struct source *base)
{
  struct rhv_source *src = (struct rhv_source *)base;
  json_t *disks = json_array ();

  for (size_t i = 0; i < base->disks.len; i++) {
    const struct provider_disk *d = &base->disks.ptr[i];
    const struct rhv_disk *rd = engine_disk (src, d->key);
    const extent_vector *map = NULL;
    json_t *allocated = json_null ();

    if (!src->metadata_only && rhv_allocated (base, i, &map) == -1) {
      json_decref (disks);
      return NULL;
    }
    if (map) {
      json_decref (allocated);
      allocated = json_integer (source_data_bytes (base, i, 0, d->capacity));
    }
    json_array_append_new (
        disks,
        json_pack ("{s:s, s:s, s:s, s:s, s:s, s:I, s:o, s:o, s:o, s:o, s:b, s:o, s:I}",
                   "key", d->key, "label", d->label, "fileName", d->file_name, "datastore",
                   d->datastore, "export", d->export_name, "capacity",
                   (json_int_t)d->capacity, "allocated", allocated, "changeId",
                   str_or_null (d->change_id), "uuid", str_or_null (d->uuid), "format",
                   str_or_null (rd ? rd->format : NULL), "bootable", rd && rd->bootable,
                   "diskSnapshot",
                   str_or_null (src->state ? src->state[i].disk_snapshot : NULL),
                   "actualSize", (json_int_t)(rd ? rd->actual_size : 0)));
  }
  return json_pack ("{s:s, s:s, s:s, s:o, s:o, s:o, s:o, s:o, s:o, s:{s:s, s:s}}", "id",
                    src->vm.id, "name", base->vm.name, "status", src->vm.status, "host",
                    str_or_null (src->vm.host), "backup", str_or_null (src->backup_id),
                    "fromCheckpoint", str_or_null (src->from_checkpoint), "toCheckpoint",
                    str_or_null (src->to_checkpoint), "snapshot",
                    str_or_null (src->snapshot), "disks", disks, "source", "provider",
                    "rhv", "url", src->cfg.url);
}

const struct source_ops rhv_source_ops = {
  .name = "rhv",
  .config_check = rhv_config_check,
  .open = rhv_open,
  .pread = rhv_pread,
  .allocated = rhv_allocated,
  .changed = rhv_changed,
  .describe = rhv_describe,
  .shutdown = rhv_shutdown,
  .enable_change_tracking = rhv_enable_change_tracking,
  .release = rhv_release,
  .close = rhv_close,
  .stats = rhv_stats,
};
