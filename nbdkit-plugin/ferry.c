/* SPDX-License-Identifier: Apache-2.0 */
/* ferry: nbdkit plugin serving vSphere VM disks read-only over NBD.
 *
 *   nbdkit ferry provider=vsphere server=HOST user=NAME password=+FILE vm=NAME [disk=...]
 *
 * Without disk=, every disk of the VM is its own export (list_exports), so one nbdkit
 * serves a whole VM.  The plugin is read-only by construction: it has no write, trim or
 * zero callbacks, so no request can reach the source as a write.
 */
#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define NBDKIT_API_VERSION 2
#include <nbdkit-plugin.h>

#include <jansson.h>

#include "common/log.h"
#include "readahead.h"
#include "cache.h"
#include "providers/source.h"

static struct source_config config = { .sslverify = true, .connections = 4 };
static char *password;
static const char *vm_json; /* write the VM's description here at start-up */
static struct source *src;
static struct readahead **readahead; /* per disk, for reads without a cache */
static struct disk_ref {
  size_t disk;
} * disk_refs;

static void readahead_close_all (void);
static struct cache_config cache_config;

/* nbdkit installs its SIGTERM/SIGINT/SIGHUP handlers only after .get_ready, where the
 * snapshot is made and fill=true copies: until then these signals would kill nbdkit with
 * the default action and leave the snapshot behind.  So get_ready catches them itself: the
 * handler records the signal, the source's reads and open steps see it (source_config.stop)
 * and fail, and get_ready unwinds through source_close, which removes the snapshot.
 * nbdkit's own handlers replace ours when it starts serving; a signal caught in between
 * is passed on in .after_fork with nbdkit_shutdown, so nbdkit exits through .cleanup.
 */
static volatile sig_atomic_t stop_signal;
static volatile sig_atomic_t serving; /* after_fork ran: nbdkit_shutdown works */
static const int stop_signals[] = { SIGTERM, SIGINT, SIGHUP };

static void
stop_handler (int sig)
{
  stop_signal = sig;
  if (serving)
    nbdkit_shutdown ();
}

static void
catch_stop_signals (void)
{
  struct sigaction sa = { .sa_handler = stop_handler };

  sigemptyset (&sa.sa_mask);
  for (size_t i = 0; i < sizeof stop_signals / sizeof stop_signals[0]; i++)
    sigaction (stop_signals[i], &sa, NULL);
}

static void
error_to_nbdkit (const char *msg)
{
  nbdkit_error ("%s", msg);
}

static void
debug_to_nbdkit (const char *msg)
{
  nbdkit_debug ("%s", msg);
}

/* nbdkit has no level between debug and error: say it on stderr as nbdkit does. */
static void
info_to_stderr (const char *msg)
{
  fprintf (stderr, "nbdkit: ferry: %s\n", msg);
}

/* Clear the password's bytes before its buffer goes back to malloc. */
static void
wipe_password (void)
{
  if (password) {
    explicit_bzero (password, strlen (password));
    free (password);
    password = NULL;
    config.password = NULL;
  }
}

static void
ferry_load (void)
{
  log_set_handlers (error_to_nbdkit, debug_to_nbdkit);
  log_set_info_handler (info_to_stderr);
}

/* nbdkit 1.32 (Debian 12) is reported to abort in raw_send_socket (assertion 'sock >= 0')
 * when a client disconnects while a read is in flight, so this is not reached and the
 * snapshot stays.  We could not make 1.32.5 abort on the double (NBD_CMD_DISC, an abrupt
 * close and SIGTERM, each with reads held 1-2 s in /folder): the race is inside nbdkit's
 * connection code, between a worker sending a reply and the socket being shut down, and
 * no plugin callback can order it.  What the plugin does is make it harmless: the next run
 * removes the leftover (tests/integration/test-snapshot-leftovers.sh, SIGABRT case).
 */
static void
ferry_cleanup (void)
{
  /* Still able to talk to the server here: remove our snapshot. */
  source_release (src);
}

static void
ferry_unload (void)
{
  if (src && ferry_debug_stats) {
    char buf[512];
    source_stats (src, buf, sizeof buf);
    nbdkit_debug ("stats: %s", buf);
    cache_stats ();
    for (size_t i = 0; readahead && i < source_disk_count (src); i++) {
      uint64_t chunks, hits, direct;
      readahead_stats (readahead[i], &chunks, &hits, &direct);
      nbdkit_debug ("stats: disk %s: read-ahead chunks fetched %" PRIu64
                    ", requests served from them %" PRIu64 ", read directly %" PRIu64,
                    source_disk (src, i)->key, chunks, hits, direct);
    }
  }
  readahead_close_all ();
  cache_close_all ();
  source_close (src);
  src = NULL;
  wipe_password ();
}

/* The HTTP timeouts: KEY=SECONDS, each 1 .. SOURCE_TIMEOUT_MAX. */
static const struct {
  const char *key;
  size_t offset;
} timeout_keys[] = {
  { "connect-timeout", offsetof (struct source_timeouts, connect) },
  { "control-timeout", offsetof (struct source_timeouts, control) },
  { "read-timeout", offsetof (struct source_timeouts, read) },
  { "stall-timeout", offsetof (struct source_timeouts, stall) },
  { "retry-budget", offsetof (struct source_timeouts, retry_budget) },
};

/* The field of KEY if it is a timeout, else NULL. */
static unsigned *
timeout_field (const char *key)
{
  for (size_t i = 0; i < sizeof timeout_keys / sizeof timeout_keys[0]; i++)
    if (strcmp (key, timeout_keys[i].key) == 0)
      return (unsigned *)((char *)&config.timeouts + timeout_keys[i].offset);
  return NULL;
}

static int
ferry_config (const char *key, const char *value)
{
  unsigned *seconds;

  if (strcmp (key, "provider") == 0)
    config.provider = value;
  else if (strcmp (key, "server") == 0)
    config.server = value;
  else if (strcmp (key, "url") == 0)
    config.url = value;
  else if (strcmp (key, "checkpoint") == 0)
    config.checkpoint = value;
  else if (strcmp (key, "user") == 0)
    config.user = value;
  else if (strcmp (key, "password") == 0) {
    wipe_password ();
    /* Accepted as nbdkit does, but everyone on the machine can read argv. */
    if (value[0] != '+' && value[0] != '-')
      fprintf (stderr, "nbdkit: ferry: warning: password= given on the command line is "
                       "visible to every user of this machine in the process list; use "
                       "password=+FILE or password=- instead\n");
    if (nbdkit_read_password (value, &password) == -1)
      return -1;
  } else if (strcmp (key, "vm") == 0)
    config.vm = value;
  else if (strcmp (key, "vm-uuid") == 0)
    config.vm_uuid = value;
  else if (strcmp (key, "disk") == 0)
    config.disk = value;
  else if (strcmp (key, "snapshot") == 0)
    config.snapshot = value;
  else if (strcmp (key, "datacenter") == 0)
    config.datacenter = value;
  else if (strcmp (key, "cacert") == 0)
    config.cacert = value;
  else if (strcmp (key, "thumbprint") == 0)
    config.thumbprint = value;
  else if (strcmp (key, "sslverify") == 0) {
    int r = nbdkit_parse_bool (value);
    if (r == -1)
      return -1;
    config.sslverify = r;
  } else if (strcmp (key, "vm-json") == 0)
    vm_json = value;
  else if (strcmp (key, "cache") == 0)
    cache_config.cache = value;
  else if (strcmp (key, "cache-dir") == 0)
    cache_config.cache_dir = value;
  else if (strcmp (key, "fill") == 0) {
    int r = nbdkit_parse_bool (value);
    if (r == -1)
      return -1;
    cache_config.fill = r;
  } else if (strcmp (key, "task-timeout") == 0) {
    if (nbdkit_parse_unsigned ("task-timeout", value, &config.task_timeout) == -1)
      return -1;
    if (config.task_timeout == 0) {
      nbdkit_error ("task-timeout=%s: give the seconds a task may take (at least 1)",
                    value);
      return -1;
    }
  } else if ((seconds = timeout_field (key)) != NULL) {
    if (value[0] == '\0' || value[strspn (value, "0123456789")] != '\0' ||
        nbdkit_parse_unsigned (key, value, seconds) == -1 || *seconds == 0 ||
        *seconds > SOURCE_TIMEOUT_MAX) {
      nbdkit_error ("%s=%s: give the seconds, from 1 to %u", key, value,
                    SOURCE_TIMEOUT_MAX);
      return -1;
    }
  } else if (strcmp (key, "verify") == 0) {
    int r = nbdkit_parse_bool (value);
    if (r == -1)
      return -1;
    cache_config.verify = r;
  } else if (strcmp (key, "connections") == 0) {
    if (nbdkit_parse_unsigned ("connections", value, &config.connections) == -1)
      return -1;
  } else {
    nbdkit_error ("unknown parameter '%s' (see nbdkit ferry --help)", key);
    return -1;
  }
  return 0;
}

static int
ferry_config_complete (void)
{
  config.password = password;
  if (cache_config_check (&cache_config) == -1)
    return -1;
  return source_config_check (&config);
}

#define ferry_config_help                                                                  \
  "provider=vsphere|rhv      (required) The source kind.\n"                                \
  "server=HOST[:PORT]        (required for vsphere) vCenter or ESXi host.\n"               \
  "url=https://ENGINE/ovirt-engine/api  (required for rhv) The oVirt engine.\n"            \
  "checkpoint=ID             rhv: read the changes since this backup checkpoint.\n"        \
  "user=NAME                 (required) User name.\n"                                      \
  "password=SECRET|+FILE|-|-FD (required) Password (prefer +FILE).\n"                      \
  "vm=MOREF|NAME             The VM, by managed object id or name.\n"                      \
  "vm-uuid=UUID              The VM, by BIOS or instance uuid.\n"                          \
  "disk=KEY|INDEX|\"[ds] path.vmdk\"  Serve one disk (default: all, one export each).\n"   \
  "snapshot=MOREF|create     Serve a snapshot's frozen base; create makes one and\n"       \
  "                          removes it at exit.\n"                                        \
  "snapshot=ID               rhv: read a VM snapshot's (or one disk snapshot's) disks.\n"  \
  "datacenter=PATH           Datacenter inventory path (default: found from the VM).\n"    \
  "cacert=FILE               Trust the CAs in FILE.\n"                                     \
  "thumbprint=AA:BB:..       Pin the server certificate (SHA-1 or SHA-256).\n"             \
  "sslverify=false           Do not verify TLS (warns; for labs only).\n"                  \
  "connections=N             Range requests in flight (default 4).\n"                      \
  "task-timeout=SECONDS      Give up on a snapshot task after this (default 1800).\n"      \
  "connect-timeout=SECONDS   TCP connect plus TLS handshake (default 30).\n"               \
  "control-timeout=SECONDS   One attempt of a SOAP/REST call (default 120).\n"             \
  "read-timeout=SECONDS      One attempt of a range read (default 600).\n"                 \
  "stall-timeout=SECONDS     Retry a read moving < 1 KiB/s this long (default 30).\n"      \
  "retry-budget=SECONDS      One request, retries included (default 300).\n"               \
  "vm-json=FILE              Write the VM's description (JSON) to FILE at start.\n"        \
  "cache=PATH                Cache the one served disk in PATH (file or block device).\n"  \
  "cache-dir=DIR             Cache metadata (and, without cache=, images) per disk in "    \
  "DIR.\n"                                                                                 \
  "fill=true                 Fetch every changed or missing block before serving.\n"       \
  "verify=true               Check every cached block against its SHA-256 at open."

/* PARALLEL: every callback is thread-safe — reads borrow a handle from the HTTP pool, the
 * per-disk allocated map is computed once under a lock, and nothing else changes after
 * get_ready.  Parallel requests are what makes the pool's N connections useful.
 */
#define THREAD_MODEL NBDKIT_THREAD_MODEL_PARALLEL

static int
ferry_thread_model (void)
{
  return NBDKIT_THREAD_MODEL_PARALLEL;
}

/* Write the VM's description atomically (a reader never sees half a file). */
static int
write_vm_json (void)
{
  json_t *j = source_describe (src);
  char tmp[4096];
  int r;

  if (j == NULL)
    return -1;
  snprintf (tmp, sizeof tmp, "%s.tmp", vm_json);
  r = json_dump_file (j, tmp, JSON_INDENT (2) | JSON_SORT_KEYS);
  json_decref (j);
  if (r == -1 || rename (tmp, vm_json) == -1) {
    nbdkit_error ("vm-json=%s: cannot write the VM description: %m", vm_json);
    unlink (tmp);
    return -1;
  }
  return 0;
}

static int
read_source (void *opaque, void *buf, uint32_t count, uint64_t offset)
{
  return source_pread (src, ((struct disk_ref *)opaque)->disk, buf, count, offset);
}

static uint64_t
data_bytes (void *opaque, uint64_t offset, uint64_t count)
{
  return source_data_bytes (src, ((struct disk_ref *)opaque)->disk, offset, count);
}

static const struct readahead_source readahead_source = {
  .read = read_source,
  .data_bytes = data_bytes,
};

static void
readahead_close_all (void)
{
  for (size_t i = 0; readahead && src && i < source_disk_count (src); i++)
    readahead_free (readahead[i]);
  free (readahead);
  free (disk_refs);
  readahead = NULL;
  disk_refs = NULL;
}

/* Read-ahead for the disks read straight from the source (a cache coalesces by itself). */
static int
readahead_open_all (void)
{
  size_t n = source_disk_count (src);

  readahead = calloc (n, sizeof *readahead);
  disk_refs = calloc (n, sizeof *disk_refs);
  if (readahead == NULL || disk_refs == NULL) {
    nbdkit_error ("calloc: %m");
    return -1;
  }
  for (size_t i = 0; i < n; i++) {
    disk_refs[i].disk = i;
    readahead[i] =
        readahead_new (&readahead_source, &disk_refs[i], source_disk (src, i)->capacity);
    if (readahead[i] == NULL)
      return -1;
  }
  return 0;
}

/* Opening the source (making the snapshot) and fill=true stay here rather than in
 * after_fork: their errors must make nbdkit fail before it forks and serves, so that the
 * caller (a script, --run, ferryfs) learns of them from nbdkit's exit status.
 */
static int
ferry_get_ready (void)
{
  catch_stop_signals ();
  config.stop = &stop_signal;
  src = source_open (&config);
  if (src == NULL)
    return -1;
  if (vm_json && write_vm_json () == -1)
    goto err;
  cache_config.connections = config.connections;
  if (cache_open_all (src, &cache_config) == -1 || readahead_open_all () == -1)
    goto err;
  if (stop_signal) {
    nbdkit_error ("interrupted by signal %d (%s) while starting", (int)stop_signal,
                  strsignal (stop_signal));
    goto err;
  }
  return 0;

err:
  readahead_close_all ();
  cache_close_all ();
  source_close (src); /* removes a snapshot we made */
  src = NULL;
  return -1;
}

/* The cache lock files name their holder: that is now the forked server. */
static int
ferry_after_fork (void)
{
  cache_after_fork ();
  serving = 1;
  if (stop_signal) /* caught after get_ready, before nbdkit's handlers */
    nbdkit_shutdown ();
  return 0;
}

static int
ferry_list_exports (int readonly, int is_tls, struct nbdkit_exports *exports)
{
  for (size_t i = 0; i < source_disk_count (src); i++) {
    const struct provider_disk *d = source_disk (src, i);
    char desc[512];
    snprintf (desc, sizeof desc, "%s: %s", d->label ? d->label : d->key, d->file_name);
    if (nbdkit_add_export (exports, d->export_name, desc) == -1)
      return -1;
  }
  return 0;
}

static const char *
ferry_default_export (int readonly, int is_tls)
{
  return source_disk (src, 0)->export_name;
}

struct handle {
  size_t disk;
};

static void *
ferry_open (int readonly)
{
  const char *name = nbdkit_export_name ();
  struct handle *h;
  int i;

  i = name && *name ? source_find_disk (src, name) : 0;
  if (i == -1) {
    nbdkit_error ("no export \"%s\"; list them with nbdinfo --list", name);
    errno = ENOENT;
    return NULL;
  }
  h = malloc (sizeof *h);
  if (h == NULL) {
    nbdkit_error ("malloc: %m");
    return NULL;
  }
  h->disk = i;
  return h;
}

static void
ferry_close (void *handle)
{
  free (handle);
}

static const char *
ferry_export_description (void *handle)
{
  struct handle *h = handle;
  return source_disk (src, h->disk)->label;
}

static int64_t
ferry_get_size (void *handle)
{
  struct handle *h = handle;
  return source_disk (src, h->disk)->capacity;
}

/* The data cannot change under us (frozen snapshot or powered-off VM), so every
 * connection sees the same bytes.
 */
static int
ferry_can_multi_conn (void *handle)
{
  return 1;
}

static int
ferry_can_extents (void *handle)
{
  return 1;
}

static int
ferry_pread (void *handle, void *buf, uint32_t count, uint64_t offset, uint32_t flags)
{
  struct handle *h = handle;
  struct dcache *c = cache_for (h->disk);

  if (c)
    return dcache_pread (c, buf, count, offset);
  return readahead_pread (readahead[h->disk], buf, count, offset);
}

static int
ferry_extents (void *handle, uint32_t count, uint64_t offset, uint32_t flags,
               struct nbdkit_extents *extents)
{
  struct handle *h = handle;
  const extent_vector *map;
  uint64_t pos = offset, end = offset + count;

  if (source_allocated (src, h->disk, &map) == -1)
    return -1;
  if (map == NULL)
    return nbdkit_add_extent (extents, offset, count, 0);
  /* nbdkit clips what lies outside the request; report holes between data areas. */
  for (size_t i = 0; i < map->len && pos < end; i++) {
    const struct extent *e = &map->ptr[i];
    if (e->offset + e->length <= pos)
      continue;
    if (e->offset > pos) {
      uint64_t hole_end = e->offset < end ? e->offset : end;
      if (nbdkit_add_extent (extents, pos, hole_end - pos,
                             NBDKIT_EXTENT_HOLE | NBDKIT_EXTENT_ZERO) == -1)
        return -1;
      pos = hole_end;
      if (pos >= end)
        break;
    }
    uint64_t data_end = e->offset + e->length;
    if (nbdkit_add_extent (extents, pos, data_end - pos, 0) == -1)
      return -1;
    pos = data_end;
    if (flags & NBDKIT_FLAG_REQ_ONE)
      return 0;
  }
  if (pos < end)
    return nbdkit_add_extent (extents, pos, end - pos,
                              NBDKIT_EXTENT_HOLE | NBDKIT_EXTENT_ZERO);
  return 0;
}

static struct nbdkit_plugin plugin = {
  .name = "ferry",
  .longname = "ferry VDDK-free vSphere disk reader",
  .version = "0.1",
  .description = "Serve vSphere VM disks read-only over NBD, without VDDK",
  .load = ferry_load,
  .unload = ferry_unload,
  .config = ferry_config,
  .config_complete = ferry_config_complete,
  .config_help = ferry_config_help,
  .magic_config_key = "vm",
  .thread_model = ferry_thread_model,
  .get_ready = ferry_get_ready,
  .after_fork = ferry_after_fork,
  .cleanup = ferry_cleanup,
  .list_exports = ferry_list_exports,
  .default_export = ferry_default_export,
  .open = ferry_open,
  .close = ferry_close,
  .export_description = ferry_export_description,
  .get_size = ferry_get_size,
  .can_multi_conn = ferry_can_multi_conn,
  .can_extents = ferry_can_extents,
  .pread = ferry_pread,
  .extents = ferry_extents,
  .errno_is_preserved = 0,
};

NBDKIT_REGISTER_PLUGIN (plugin)
