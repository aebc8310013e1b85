/* SPDX-License-Identifier: Apache-2.0 */
/* ferry: the vSphere source (source.h) — one VM at one point in time.
 *
 * Owns the session, the VM, the snapshot being served and, per disk, its /folder path and
 * allocated map.  The snapshot policy, decided once in vsphere_open:
 *   - no snapshot= : the VM must be off (or suspended) and have no snapshots; its live
 *     disks are read;
 *   - snapshot=MOREF : that snapshot must be the VM's only one; its frozen base is read;
 *   - snapshot=create : the VM must have no snapshots; we create one, read its frozen base
 *     and remove it in release.
 * Anything else would need delta-chain reading, which ferry does not do yet, so it is
 * refused with the reason rather than served stale.
 *
 * Snapshots ferry creates are named "ferry:PURPOSE:TOKEN" and their description records
 * the host and pid that made them.  At open, ferry's own leftovers (from a run that was
 * killed, or whose CreateSnapshot_Task answer was lost) are removed and logged, unless the
 * process that made one still runs on this host; snapshots of anyone else are never
 * touched.
 *
 * THREAD MODEL: after open everything is read-only except each disk's allocated map,
 * which is computed once under the disk's lock.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "common/cleanup.h"
#include "common/http.h"
#include "common/log.h"
#include "common/util.h"
#include "providers/source.h"
#include "soap.h"
#include "vsphere.h"

#define SNAPSHOT_PREFIX "ferry:"
#define MAKER_LOCK_DIR "/tmp"

struct vs_disk_state {
  char *flat_path;
  pthread_mutex_t lock;
  bool map_done;
  bool map_known;          /* false: CBT cannot tell, everything is data */
  extent_vector allocated; /* valid once map_done && map_known */
};

struct vs_source {
  struct source base; /* first: a struct source * is a struct vs_source * */
  struct vs_session *session;
  struct vs_vm vm;
  char *server;
  bool metadata_only;
  char *snapshot;        /* moref being served, or NULL for the live disks */
  char *snapshot_name;   /* the name we gave it, when we created it */
  bool created_snapshot; /* we made it, so we remove it */
  int maker_fd;          /* our maker lock (flock held), or -1 */
  char maker_path[256];
  struct vs_disk_state *state;
  uint64_t zero_bytes;               /* read as known zeros without fetching */
  const volatile sig_atomic_t *stop; /* source_config.stop */
  bool stop_said;                    /* the interruption was reported */
};

/* Has a signal asked us to give up?  Says so once, as the error of what it stops. */
static bool
stopped (struct vs_source *src, const char *what)
{
  int sig = src->stop ? *src->stop : 0;

  if (sig == 0)
    return false;
  if (__atomic_exchange_n (&src->stop_said, true, __ATOMIC_RELAXED))
    return true;
  log_error ("%s: %s: interrupted by signal %d (%s)", src->vm.moref ? src->vm.moref : "vm",
             what, sig, strsignal (sig));
  return true;
}

static void vsphere_close (struct source *base);

static bool
is_ferry_snapshot (const struct vs_snapshot *snap)
{
  return snap->name && strncmp (snap->name, SNAPSHOT_PREFIX, strlen (SNAPSHOT_PREFIX)) == 0;
}

/* The maker's lock of the snapshot with TOKEN: held (flock) for as long as the snapshot is
 * in use.  The pid in the description is not enough: nbdkit makes the snapshot in
 * .get_ready and then forks into the background, so the pid that made it exits while its
 * child serves.  A flock is shared with the child across fork and dies with the last
 * holder, SIGKILL included.
 */
static int
maker_lock_path (const char *token, char *path, size_t len)
{
  if (strlen (token) != 12 || strspn (token, "0123456789abcdef") != 12)
    return -1; /* not a token of ours: never a path from a name someone chose */
  snprintf (path, len, "%s/ferry-snapshot-%s.lock", MAKER_LOCK_DIR, token);
  return 0;
}

static const char *
snapshot_token (const struct vs_snapshot *snap)
{
  const char *colon = strrchr (snap->name, ':');
  return colon ? colon + 1 : "";
}

/* The process that made a ferry snapshot: still running on this host (and not us)?  Its
 * lock is held, or the pid of its description "... by pid P on host H; ..." runs.
 */
static bool
maker_is_alive (const struct vs_snapshot *snap)
{
  char host[256], me[256], path[256];
  long pid;
  const char *p = snap->description ? strstr (snap->description, " by pid ") : NULL;
  int fd;

  if (p == NULL || sscanf (p, " by pid %ld on host %255[^;]", &pid, host) != 2)
    return false;
  if (gethostname (me, sizeof me) == -1 || strcmp (host, me) != 0)
    return false;
  if (maker_lock_path (snapshot_token (snap), path, sizeof path) == 0 &&
      (fd = open (path, O_RDWR | O_CLOEXEC)) >= 0) {
    bool held = flock (fd, LOCK_EX | LOCK_NB) == -1 && errno == EWOULDBLOCK;
    if (!held)
      unlink (path); /* stale: its maker died */
    close (fd);
    if (held)
      return true;
  }
  if (pid == getpid ())
    return false;
  return kill ((pid_t)pid, 0) == 0 || errno == EPERM;
}

/* "\"name\" (moref), ..." of the snapshots for which FERRY says ferry made them. */
static char *
snapshot_list (const struct vs_vm *vm, bool ferry)
{
  char *buf = NULL;
  size_t len = 0, n = 0;
  FILE *fp = open_memstream (&buf, &len);

  if (fp == NULL)
    return NULL;
  for (size_t i = 0; i < vm->snapshots.len; i++)
    if (is_ferry_snapshot (&vm->snapshots.ptr[i]) == ferry)
      fprintf (fp, "%s\"%s\" (%s)", n++ ? ", " : "", vm->snapshots.ptr[i].name,
               vm->snapshots.ptr[i].moref);
  fclose (fp);
  if (n == 0) {
    free (buf);
    return NULL;
  }
  return buf;
}

static int
refuse_snapshots (const struct vs_vm *vm)
{
  CLEANUP_FREE char *names = snapshot_list (vm, false);
  log_error (
      "%s (%s): the VM has snapshot(s): %s; ferry reads only the flat base "
      "disks of a VM without snapshots (snapshot delta chains are not supported yet): "
      "delete or consolidate them first",
      vm->moref, vm->name, names ? names : "?");
  return -1;
}

/* Read the VM again (after snapshots changed). */
static int
reread_vm (struct vs_source *src, const struct source_config *config)
{
  CLEANUP_FREE char *moref = strdup (src->vm.moref);

  vs_vm_free (&src->vm);
  if (moref == NULL)
    return -1;
  return vs_find_vm (src->session, moref, false, config->datacenter, &src->vm);
}

/* Remove ferry's own leftover snapshots; one whose maker still runs here is in use. */
static int
remove_leftovers (struct vs_source *src, const struct source_config *config)
{
  struct vs_vm *vm = &src->vm;
  size_t removed = 0;

  for (size_t i = 0; i < vm->snapshots.len; i++) {
    const struct vs_snapshot *snap = &vm->snapshots.ptr[i];
    if (!is_ferry_snapshot (snap) ||
        (config->snapshot && strcmp (snap->moref, config->snapshot) == 0))
      continue; /* not ours, or the one asked for */
    if (maker_is_alive (snap)) {
      log_error ("%s (%s): snapshot \"%s\" (%s) is in use by another ferry process on this "
                 "host (%s); wait for it to finish",
                 vm->moref, vm->name, snap->name, snap->moref, snap->description);
      return -1;
    }
    log_info ("%s (%s): removing ferry's leftover snapshot \"%s\" (%s) from an earlier run "
              "that did not finish",
              vm->moref, vm->name, snap->name, snap->moref);
    if (vs_remove_snapshot (src->session, vm, snap->moref) == -1)
      return -1;
    removed++;
  }
  return removed ? reread_vm (src, config) : 0;
}

/* A request whose connection died before its answer may have been sent twice (libcurl
 * resends a request on a reused connection that closed without answering): then the VM
 * has two snapshots with our unique NAME.  Keep the one the task answered with, remove
 * the other.
 */
static int
remove_twins (struct vs_source *src, const struct source_config *config, const char *name)
{
  struct vs_vm *vm = &src->vm;
  size_t removed = 0;

  if (reread_vm (src, config) == -1)
    return -1;
  for (size_t i = 0; i < vm->snapshots.len; i++) {
    const struct vs_snapshot *snap = &vm->snapshots.ptr[i];
    if (strcmp (snap->name, name) != 0 || strcmp (snap->moref, src->snapshot) == 0)
      continue;
    log_info ("%s: removing snapshot \"%s\" (%s), a second one made by a resent "
              "CreateSnapshot_Task; serving %s",
              vm->moref, name, snap->moref, src->snapshot);
    if (vs_remove_snapshot (src->session, vm, snap->moref) == -1)
      return -1;
    removed++;
  }
  return removed ? reread_vm (src, config) : 0;
}

static int
create_snapshot (struct vs_source *src, const struct source_config *config)
{
  struct vs_vm *vm = &src->vm;
  unsigned char rnd[6];
  char token[16], host[256], name[512], desc[1024];
  const char *purpose = config->purpose ? config->purpose : "inspect";

  if (getrandom (rnd, sizeof rnd, 0) != sizeof rnd) {
    log_error ("%s: getrandom: %m", vm->moref);
    return -1;
  }
  for (size_t i = 0; i < sizeof rnd; i++)
    snprintf (token + 2 * i, 3, "%02x", rnd[i]);
  if (gethostname (host, sizeof host) == -1)
    snprintf (host, sizeof host, "unknown");
  host[sizeof host - 1] = '\0';
  snprintf (name, sizeof name, SNAPSHOT_PREFIX "%s:%s", purpose, token);
  snprintf (desc, sizeof desc,
            "Made by ferry for %s (token %s) by pid %ld on host %s; ferry removes it when "
            "done and removes its leftovers at its next run. Safe to delete.",
            purpose, token, (long)getpid (), host);
  /* Hold the maker lock before the snapshot exists, so that no other run on this host
   * ever sees it unlocked while we use it.
   */
  maker_lock_path (token, src->maker_path, sizeof src->maker_path);
  src->maker_fd =
      open (src->maker_path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
  if (src->maker_fd == -1 || flock (src->maker_fd, LOCK_EX | LOCK_NB) == -1) {
    log_error ("%s: %s: cannot create the snapshot's lock file: %m", vm->moref,
               src->maker_path);
    return -1;
  }
  if (vs_create_snapshot (src->session, vm, name, desc, &src->snapshot) == 0) {
    src->snapshot_name = strdup (name);
    src->created_snapshot = true;
    return remove_twins (src, config, name);
  }
  /* The task may have run although we lost its answer: find it by its unique name. */
  if (reread_vm (src, config) == 0) {
    for (size_t i = 0; i < vm->snapshots.len; i++)
      if (strcmp (vm->snapshots.ptr[i].name, name) == 0) {
        log_info ("%s: removing snapshot \"%s\" (%s) whose creation was reported as failed",
                  vm->moref, name, vm->snapshots.ptr[i].moref);
        vs_remove_snapshot (src->session, vm, vm->snapshots.ptr[i].moref);
      }
  }
  return -1;
}

/* Decide which point in time to serve; see the comment at the top. */
static int
choose_snapshot (struct vs_source *src, const struct source_config *config)
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
    if (vm->snapshots.len > 0)
      return refuse_snapshots (vm);
    return create_snapshot (src, config);
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

/* The provider-neutral view of the VM. */
static int
fill_base_vm (struct vs_source *src)
{
  const struct vs_vm *vm = &src->vm;
  struct source_vm *b = &src->base.vm;

  source_vm_free (b);
  b->id = strdup (vm->moref);
  b->name = strdup (vm->name ? vm->name : vm->moref);
  b->uuid = strdup (vm->uuid ? vm->uuid : vm->moref);
  b->power_state = strdup (vm->power_state ? vm->power_state : "unknown");
  b->host = vm->host ? strdup (vm->host) : NULL;
  b->change_tracking = vm->cbt_enabled;
  b->tools_running = vm->tools_running;
  b->snapshots = snapshot_list (vm, false);
  b->leftovers = snapshot_list (vm, true);
  if (src->snapshot) {
    b->snapshot_id = strdup (src->snapshot);
    for (size_t i = 0; i < vm->snapshots.len; i++)
      if (strcmp (vm->snapshots.ptr[i].moref, src->snapshot) == 0)
        b->snapshot_name = strdup (vm->snapshots.ptr[i].name);
    if (b->snapshot_name == NULL && src->snapshot_name)
      b->snapshot_name = strdup (src->snapshot_name);
  }
  if (b->id == NULL || b->name == NULL || b->uuid == NULL || b->power_state == NULL) {
    log_error ("%s: out of memory", vm->moref);
    return -1;
  }
  return 0;
}

/* HEAD disk I's flat file, so that a datacenter or datastore that /folder does not know is
 * said now, by name, rather than as a bare 404 on every read.  (A HEAD, not a read: no
 * byte is fetched that a cache would not have fetched.)
 */
static int
probe_disk (struct vs_source *src, size_t i)
{
  const struct provider_disk *d = &src->base.disks.ptr[i];
  CLEANUP_FREE char *ds = NULL, *path = NULL;
  uint64_t size;

  if (http_head_size (src->session->pool, src->state[i].flat_path, &size) == 0)
    return 0;
  vs_parse_file_name (d->file_name, &ds, &path);
  log_error ("%s (%s) disk %s: cannot read %s through /folder with datacenter \"%s\" and "
             "datastore \"%s\": check datacenter= (or leave it out: ferry finds the VM's "
             "own), and that the datastore is one /folder serves",
             src->vm.moref, src->vm.name, d->key, d->file_name, src->vm.dc_path,
             ds ? ds : "?");
  return -1;
}

static struct source *
vsphere_open (const struct source_config *config)
{
  extern const struct source_ops vsphere_source_ops;
  struct vs_source *src = calloc (1, sizeof *src);
  struct vs_config vc = {
    .server = config->server,
    .user = config->user,
    .password = config->password,
    .cookie = config->session,
    .cacert = config->cacert,
    .thumbprint = config->thumbprint,
    .sslverify = config->sslverify,
    .connections = config->connections,
    .timeouts = config->timeouts,
  };
  disk_vector *disks;

  if (src == NULL)
    return NULL;
  src->maker_fd = -1;
  src->base.ops = &vsphere_source_ops;
  disks = &src->base.disks;
  src->metadata_only = config->metadata_only;
  src->stop = config->stop;
  vs_set_task_timeout (config->task_timeout);
  src->server = strdup (config->server);
  src->session = vs_open (&vc);
  if (src->session == NULL || src->server == NULL)
    goto err;
  if (vs_find_vm (src->session, config->vm ? config->vm : config->vm_uuid,
                  config->vm == NULL, config->datacenter, &src->vm) == -1)
    goto err;
  if (config->metadata_only) {
    *disks = src->vm.disks;
    src->vm.disks = (disk_vector)empty_vector;
    if (fill_base_vm (src) == -1)
      goto err;
    return &src->base;
  }
  if (remove_leftovers (src, config) == -1 || stopped (src, "open") ||
      choose_snapshot (src, config) == -1 || stopped (src, "open"))
    goto err;
  if (src->snapshot) {
    if (vs_snapshot_disks (src->session, &src->vm, src->snapshot, disks) == -1)
      goto err;
  } else {
    *disks = src->vm.disks;
    src->vm.disks = (disk_vector)empty_vector;
  }
  for (size_t i = 0; i < disks->len; i++) {
    if (disks->ptr[i].delta) {
      log_error ("%s (%s) disk %s: %s is a snapshot delta or linked clone (its backing has "
                 "a parent), not a flat base disk; ferry cannot read delta chains yet",
                 src->vm.moref, src->vm.name, disks->ptr[i].key, disks->ptr[i].file_name);
      goto err;
    }
  }
  if (fill_base_vm (src) == -1 ||
      (config->disk && source_keep_disk (&src->base, config->disk) == -1))
    goto err;

  src->state = calloc (disks->len, sizeof *src->state);
  if (src->state == NULL)
    goto err;
  for (size_t i = 0; i < disks->len; i++) {
    pthread_mutex_init (&src->state[i].lock, NULL);
    src->state[i].flat_path = vs_flat_path (&src->vm, &disks->ptr[i]);
    if (src->state[i].flat_path == NULL || probe_disk (src, i) == -1)
      goto err;
  }
  if (stopped (src, "open"))
    goto err;
  return &src->base;

err:
  vsphere_close (&src->base);
  return NULL;
}

static int
vsphere_release (struct source *base)
{
  struct vs_source *src = (struct vs_source *)base;
  int r = 0;

  if (!src->created_snapshot)
    return 0;
  if (vs_remove_snapshot (src->session, &src->vm, src->snapshot) == -1) {
    log_error ("%s (%s): the snapshot \"%s\" (%s) that ferry created could not be removed; "
               "ferry removes it at its next run on this VM, or remove it in vSphere",
               src->vm.moref, src->vm.name, src->snapshot_name, src->snapshot);
    r = -1;
  }
  src->created_snapshot = false;
  return r;
}

static void
vsphere_close (struct source *base)
{
  struct vs_source *src = (struct vs_source *)base;

  if (src->session)
    vsphere_release (base);
  if (src->maker_fd >= 0) {
    if (!src->created_snapshot) /* removed (else it stays locked until we exit) */
      unlink (src->maker_path);
    close (src->maker_fd);
  }
  for (size_t i = 0; src->state && i < base->disks.len; i++) {
    free (src->state[i].flat_path);
    extent_vector_reset (&src->state[i].allocated);
    pthread_mutex_destroy (&src->state[i].lock);
  }
  free (src->state);
  disk_vector_free (&base->disks);
  source_vm_free (&base->vm);
  vs_vm_free (&src->vm);
  free (src->snapshot);
  free (src->snapshot_name);
  free (src->server);
  vs_close (src->session);
  free (src);
}

static bool
is_powered_off (const struct vs_vm *vm)
{
  return vm->power_state && strcmp (vm->power_state, "poweredOn") != 0;
}

static int
vsphere_allocated (struct source *base, size_t i, const extent_vector **map)
{
  struct vs_source *src = (struct vs_source *)base;
  struct vs_disk_state *sd = &src->state[i];
  const struct provider_disk *disk = &base->disks.ptr[i];
  ACQUIRE_LOCK_FOR_CURRENT_SCOPE (&sd->lock);

  if (!sd->map_done) {
    /* "*" needs CBT on the disk, and a snapshot unless the VM is off. */
    if (disk->change_id && (src->snapshot || is_powered_off (&src->vm))) {
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

static int
vsphere_changed (struct source *base, size_t i, const char *change_id, extent_vector *areas,
                 char **why)
{
  struct vs_source *src = (struct vs_source *)base;
  const struct provider_disk *disk = &base->disks.ptr[i];
  char was[64], now[64];
  uint64_t seq;
  struct vs_fault fault = { 0 };

  *why = NULL;
  if (disk->change_id == NULL) {
    *why = strdup ("change tracking is off on the disk (no changeId)");
    return 1;
  }
  if (!src->snapshot && !is_powered_off (&src->vm)) {
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

/* Reads of one disk's flat file, for source_read_mapped. */
struct flat_read {
  struct vs_source *src;
  const char *path;
};

static int
read_flat (void *opaque, void *buf, size_t count, uint64_t offset)
{
  const struct flat_read *f = opaque;
  return vs_read (f->src->session, f->path, buf, count, offset);
}

static int
vsphere_pread (struct source *base, size_t i, void *buf, size_t count, uint64_t offset)
{
  struct vs_source *src = (struct vs_source *)base;
  const extent_vector *map;
  struct flat_read f = { src, NULL };

  if (src->metadata_only) {
    log_error ("%s: reads need a point in time (the source was opened for metadata only)",
               src->vm.moref);
    return -1;
  }
  if (stopped (src, "read"))
    return -1;
  f.path = src->state[i].flat_path;
  if (vsphere_allocated (base, i, &map) == -1)
    return -1;
  return source_read_mapped (map, buf, count, offset, read_flat, &f, &src->zero_bytes);
}

/* Wait until the VM is off, polling, for at most TIMEOUT seconds.  1 = off, 0 = not yet. */
static int
wait_powered_off (struct vs_source *src, unsigned timeout)
{
  double deadline = time_monotonic () + timeout;
  unsigned delay = 200;

  for (;;) {
    char *state = vs_power_state (src->session, &src->vm);
    if (state == NULL)
      return -1;
    free (src->vm.power_state);
    src->vm.power_state = state;
    if (is_powered_off (&src->vm))
      return 1;
    if (time_monotonic () >= deadline)
      return 0;
    sleep_ms (delay);
    if (delay < 2000)
      delay *= 2;
  }
}

static int
vsphere_shutdown (struct source *base, unsigned timeout)
{
  struct vs_source *src = (struct vs_source *)base;
  struct vs_vm *vm = &src->vm;
  int r;

  if (is_powered_off (vm))
    return 0;
  if (vm->tools_running) {
    log_info ("%s (%s): shutting the guest down through VMware Tools (up to %u s)",
              vm->moref, vm->name, timeout);
    if (vs_shutdown_guest (src->session, vm) == 0) {
      r = wait_powered_off (src, timeout);
      if (r != 0)
        goto done;
      log_info ("%s (%s): the guest did not shut down within %u s; powering it off",
                vm->moref, vm->name, timeout);
    }
  } else
    log_info ("%s (%s): VMware Tools do not run in the guest; powering the VM off",
              vm->moref, vm->name);
  if (vs_power_off (src->session, vm) == -1)
    return -1;
  r = wait_powered_off (src, 60);
done:
  if (r == 0)
    log_error ("%s (%s): the VM is still %s after PowerOffVM_Task", vm->moref, vm->name,
               vm->power_state);
  if (r != 1)
    return -1;
  free (base->vm.power_state);
  base->vm.power_state = strdup (vm->power_state);
  return 0;
}

static int
vsphere_enable_change_tracking (struct source *base)
{
  struct vs_source *src = (struct vs_source *)base;
  return vs_enable_cbt (src->session, &src->vm);
}

static void
vsphere_stats (struct source *base, char *buf, size_t len)
{
  struct vs_source *src = (struct vs_source *)base;
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

static json_t *
vsphere_describe (struct source *base)
{
  struct vs_source *src = (struct vs_source *)base;
  const struct vs_vm *vm = &src->vm;
  json_t *disks = json_array (), *nics = json_array (), *snap = json_null ();

  for (size_t i = 0; i < base->disks.len; i++) {
    const struct provider_disk *d = &base->disks.ptr[i];
    const extent_vector *map = NULL;
    json_t *allocated = json_null ();
    if (!src->metadata_only && vsphere_allocated (base, i, &map) == -1)
      goto err;
    if (map) { /* known only with CBT */
      json_decref (allocated);
      allocated = json_integer (source_data_bytes (base, i, 0, d->capacity));
    }
    json_array_append_new (
        disks, json_pack ("{s:s, s:o, s:s, s:s, s:s, s:I, s:o, s:o, s:o}", "key", d->key,
                          "label", json_string_or_null (d->label), "fileName", d->file_name,
                          "datastore", d->datastore, "export", d->export_name, "capacity",
                          (json_int_t)d->capacity, "allocated", allocated, "changeId",
                          json_string_or_null (d->change_id), "uuid",
                          json_string_or_null (d->uuid)));
  }
  for (size_t i = 0; i < vm->nics.len; i++) {
    const struct vs_nic *n = &vm->nics.ptr[i];
    json_array_append_new (nics, json_pack ("{s:o, s:o, s:o, s:o, s:o}", "label",
                                            json_string_or_null (n->label), "type",
                                            json_string_or_null (n->type), "mac",
                                            json_string_or_null (n->mac), "network",
                                            json_string_or_null (n->network), "networkId",
                                            json_string_or_null (n->network_id)));
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
  return json_pack ("{s:s, s:o, s:o, s:o, s:o, s:i, s:I, s:o, s:o, s:o, s:o, s:o, s:o, "
                    "s:{s:s, s:s}}",
                    "moref", vm->moref, "name", json_string_or_null (vm->name), "uuid",
                    json_string_or_null (vm->uuid), "instanceUuid",
                    json_string_or_null (vm->instance_uuid), "guestId",
                    json_string_or_null (vm->guest_id), "cpus", (int)vm->cpus, "memoryMB",
                    (json_int_t)vm->memory_mb, "firmware",
                    json_string_or_null (vm->firmware), "powerState",
                    json_string_or_null (vm->power_state), "host",
                    json_string_or_null (vm->host), "snapshot", snap, "disks", disks,
                    "nics", nics, "source", "provider", "vsphere", "server", src->server);

err:
  json_decref (disks);
  json_decref (nics);
  json_decref (snap);
  return NULL;
}

const struct source_ops vsphere_source_ops = {
  .name = "vsphere",
  .open = vsphere_open,
  .pread = vsphere_pread,
  .allocated = vsphere_allocated,
  .changed = vsphere_changed,
  .describe = vsphere_describe,
  .shutdown = vsphere_shutdown,
  .enable_change_tracking = vsphere_enable_change_tracking,
  .release = vsphere_release,
  .close = vsphere_close,
  .stats = vsphere_stats,
};
