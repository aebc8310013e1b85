/* SPDX-License-Identifier: Apache-2.0 */
/* ferry cdi-import (cdi.h).
 *
 * A stage:  read the environment -> open the VM at IMPORTER_CURRENT_CHECKPOINT (a snapshot
 * CDI's controller made; ferry makes and removes none here) -> find the disk by
 * IMPORTER_BACKING_FILE -> check the target's size -> copy -> record the checkpoint's
 * changeId -> termination message.
 *
 * The copy, one of:
 *   cache   the disk cache (the same path as ferry migrate) with its metadata in
 *           /data/.ferry/: a first stage fetches the allocated areas, a later stage the
 *           areas changed since the changeId the metadata holds, a restarted stage only
 *           what is still invalid.  Block mode keeps the metadata in a temporary directory
 *           (a full copy, resumable within the pod only).
 *   delta   no metadata on the PVC but a known previous changeId
 * (IMPORTER_PREVIOUS_CHECKPOINT is one, or a snapshot whose changeId
 * /data/.ferry/checkpoints.json recorded): the areas changed since it are read and written
 * over the target, which holds the previous stage's disk.  Rewriting them all is
 * idempotent, so a restarted stage simply does it again.
 *
 * The resize (CDI's Resize phase, filesystem volumes only): a stage without
 * IMPORTER_PREVIOUS_CHECKPOINT (a cold import, or a warm import's first stage) grows
 * disk.img to min(IMPORTER_IMAGE_SIZE, the room) and leaves it mode 0660; delta stages do
 * not resize, the first one did.  See grow_image for why before the copy, not after.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <regex.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <jansson.h>
#include <linux/fs.h>

#include "common/cleanup.h"
#include "common/log.h"
#include "common/quantity.h"
#include "common/util.h"
#include "cdi.h"
#include "diskcache/source-ops.h"
#include "metrics.h"
#include "migrate.h"
#include "termlog.h"

#define CDI_DEFAULT_METRICS_PORT "8443"
#define CDI_CONNECTIONS 4

static volatile sig_atomic_t stop_signal;
static char *first_error;
static bool first_error_transient;

static void
record_error (const char *msg)
{
  fprintf (stderr, "ferry: %s\n", msg);
  if (first_error == NULL) {
    first_error = strdup (msg);
    first_error_transient = log_error_is_transient ();
  }
}

static void
as_warning (const char *msg)
{
  fprintf (stderr, "ferry: warning: %s; going on without metrics\n", msg);
}

static void
on_signal (int sig)
{
  stop_signal = sig;
}

struct cdi {
  /* The environment (CDI's names). */
  const char *endpoint, *user, *password, *thumbprint, *uuid, *backing_file;
  const char *current, *previous, *final, *owner_uid, *overhead, *cert_dir;
  const char *image_size_env; /* IMPORTER_IMAGE_SIZE, parsed into image_size */
  uint64_t image_size;
  bool insecure;
  /* Where the disk goes. */
  bool block;
  char *data_dir, *target, *state_dir, *meta;
  char *server;
  char *cacert; /* a temporary PEM file of IMPORTER_CERT_DIR's certificates */
  struct progress *progress;
  /* Results. */
  const char *stage; /* "full", "cache", "delta" */
  uint64_t fetched;
  char *host;
};

static const char *
env (const char *name)
{
  const char *v = getenv (name);
  return v && *v ? v : NULL;
}

static bool
env_true (const char *name)
{
  const char *v = env (name);
  return v && (strcasecmp (v, "true") == 0 || strcmp (v, "1") == 0);
}

/* "https://vcenter.example.com:443/sdk" -> "vcenter.example.com:443". */
static char *
server_of (const char *endpoint)
{
  const char *s = strstr (endpoint, "://");
  s = s ? s + 3 : endpoint;
  return strndup (s, strcspn (s, "/?#"));
}

/* A CBT changeId ("52 de c0 ... 10-61 d5 ... 63/81") rather than a snapshot moref. */
static bool
is_change_id (const char *s)
{
  regex_t re;
  bool r;

  if (regcomp (&re, "^([0-9a-fA-F]{2} ?)+-([0-9a-fA-F]{2} ?)+/[0-9]+$", REG_EXTENDED) != 0)
    return false;
  r = regexec (&re, s, 0, NULL, 0) == 0;
  regfree (&re);
  return r;
}

/* "[ds] vm/vm-000002.vmdk" -> "[ds] vm/vm.vmdk": the base disk a delta's name stands for
 * (CDI maps names through the disk's id; vSphere names deltas NAME-NNNNNN.vmdk).
 */
static char *
base_disk_name (const char *name)
{
  size_t len = strlen (name);
  char *r = strdup (name);

  if (r && len > 12 && strcmp (name + len - 5, ".vmdk") == 0 && name[len - 12] == '-' &&
      strspn (name + len - 11, "0123456789") == 6)
    memmove (r + len - 12, r + len - 5, 6);
  return r;
}

static int
find_disk (struct source *src, const char *backing_file)
{
  CLEANUP_FREE char *want = base_disk_name (backing_file);
  size_t n = source_disk_count (src);
  char *list = NULL;
  size_t len = 0;
  FILE *fp;

  for (int pass = 0; pass < 2; pass++)
    for (size_t i = 0; i < n; i++) {
      const char *name = source_disk (src, i)->file_name;
      CLEANUP_FREE char *base = pass ? base_disk_name (name) : NULL;
      if (strcmp (pass ? base : name, pass ? want : backing_file) == 0)
        return i;
    }
  fp = open_memstream (&list, &len);
  for (size_t i = 0; fp && i < n; i++)
    fprintf (fp, "%s%s (%s)", i ? ", " : "", source_disk (src, i)->file_name,
             source_disk (src, i)->key);
  if (fp)
    fclose (fp);
  log_error ("IMPORTER_BACKING_FILE %s: VM %s (%s) has no such disk; its disks: %s",
             backing_file, source_vm (src)->id, source_vm (src)->name, list ? list : "?");
  free (list);
  return -1;
}

/* IMPORTER_CERT_DIR's certificates (a mounted ConfigMap: every file not starting with '.')
 * in one temporary PEM file.
 */
static char *
ca_bundle (const char *dir)
{
  char path[] = "/tmp/ferry-cdi-ca.XXXXXX";
  int fd = mkstemp (path);
  DIR *d = opendir (dir);
  struct dirent *e;
  FILE *out;
  size_t files = 0;

  if (fd == -1 || d == NULL) {
    log_error ("IMPORTER_CERT_DIR %s: %m", dir);
    if (fd != -1)
      close (fd), unlink (path);
    if (d)
      closedir (d);
    return NULL;
  }
  out = fdopen (fd, "w");
  while (out && (e = readdir (d)) != NULL) {
    char file[4096], buf[8192];
    size_t n;
    FILE *in;
    if (e->d_name[0] == '.')
      continue;
    snprintf (file, sizeof file, "%s/%s", dir, e->d_name);
    in = fopen (file, "re");
    if (in == NULL)
      continue; /* a directory */
    while ((n = fread (buf, 1, sizeof buf, in)) > 0)
      fwrite (buf, 1, n, out);
    fputc ('\n', out);
    fclose (in);
    files++;
  }
  closedir (d);
  if (out == NULL || fclose (out) != 0 || files == 0) {
    log_error ("IMPORTER_CERT_DIR %s: no certificate files", dir);
    unlink (path);
    return NULL;
  }
  return strdup (path);
}

/* Read the environment; reports what is missing. */
static int
read_env (struct cdi *c)
{
  static const char *const required[] = { "IMPORTER_ENDPOINT", "IMPORTER_ACCESS_KEY_ID",
                                          "IMPORTER_SECRET_KEY", "IMPORTER_UUID",
                                          "IMPORTER_BACKING_FILE" };
  const char *source = env ("IMPORTER_SOURCE");
  const char *why;
  struct stat st;
  int r = 0;

  if (source == NULL || strcmp (source, "vddk") != 0) {
    log_error ("Unknown data source: %s (ferry cdi-import serves IMPORTER_SOURCE=vddk)",
               source ? source : "(IMPORTER_SOURCE is not set)");
    return -1;
  }
  for (size_t i = 0; i < sizeof required / sizeof required[0]; i++)
    if (env (required[i]) == NULL) {
      log_error ("%s is not set", required[i]);
      r = -1;
    }
  c->endpoint = env ("IMPORTER_ENDPOINT");
  c->user = env ("IMPORTER_ACCESS_KEY_ID");
  c->password = env ("IMPORTER_SECRET_KEY");
  c->thumbprint = env ("IMPORTER_THUMBPRINT");
  c->uuid = env ("IMPORTER_UUID");
  c->backing_file = env ("IMPORTER_BACKING_FILE");
  c->current = env ("IMPORTER_CURRENT_CHECKPOINT");
  c->previous = env ("IMPORTER_PREVIOUS_CHECKPOINT");
  c->final = env ("IMPORTER_FINAL_CHECKPOINT");
  c->owner_uid = env ("OWNER_UID");
  c->overhead = env ("FILESYSTEM_OVERHEAD");
  c->cert_dir = env ("IMPORTER_CERT_DIR");
  c->insecure = env_true ("INSECURE_TLS");
  c->image_size_env = env ("IMPORTER_IMAGE_SIZE");
  if (c->image_size_env && quantity_parse (c->image_size_env, &c->image_size, &why) == -1) {
    log_error ("IMPORTER_IMAGE_SIZE %s: %s; expected a Kubernetes quantity of bytes such "
               "as 10Gi, 1500M or 1e9",
               c->image_size_env, why);
    r = -1;
  }
  if (c->previous && c->current == NULL) {
    log_error ("IMPORTER_PREVIOUS_CHECKPOINT %s is set without IMPORTER_CURRENT_CHECKPOINT",
               c->previous);
    r = -1;
  }
  if (r == -1)
    return -1;
  /* Test-only overrides of CDI's fixed paths (ferry.pod). */
  const char *block = env ("FERRY_CDI_BLOCK_PATH");
  c->data_dir = strdup (env ("FERRY_CDI_DATA_DIR") ? env ("FERRY_CDI_DATA_DIR") : "/data");
  block = block ? block : "/dev/cdi-block-volume";
  c->block = stat (block, &st) == 0; /* as CDI decides */
  if (c->block)
    c->target = strdup (block);
  else if (asprintf (&c->target, "%s/disk.img", c->data_dir) == -1)
    c->target = NULL;
  if (!c->block && asprintf (&c->state_dir, "%s/.ferry", c->data_dir) == -1)
    c->state_dir = NULL;
  if (c->block) {
    char tmp[] = "/tmp/ferry-cdi.XXXXXX";
    c->state_dir = mkdtemp (tmp) ? strdup (tmp) : NULL;
  }
  c->server = server_of (c->endpoint);
  if (c->data_dir == NULL || c->target == NULL || c->state_dir == NULL ||
      c->server == NULL) {
    log_error ("out of memory or no temporary directory: %m");
    return -1;
  }
  if (asprintf (&c->meta, "%s/disk.dcache", c->state_dir) == -1) {
    c->meta = NULL;
    return -1;
  }
  if (c->cert_dir && c->thumbprint == NULL && !c->insecure) {
    c->cacert = ca_bundle (c->cert_dir);
    if (c->cacert == NULL)
      return -1;
  }
  return 0;
}

/* The checkpoint -> changeId map kept on the PVC (filesystem mode), or an empty one. */
static json_t *
read_checkpoints (const struct cdi *c)
{
  CLEANUP_FREE char *file = NULL;
  json_t *j;

  if (c->block || asprintf (&file, "%s/checkpoints.json", c->state_dir) == -1)
    return json_object ();
  j = json_load_file (file, 0, NULL);
  return json_is_object (j) ? j : (json_decref (j), json_object ());
}

static int
save_checkpoint (const struct cdi *c, const char *checkpoint, const char *change_id)
{
  CLEANUP_FREE char *file = NULL, *text = NULL;
  json_t *j;

  if (c->block || checkpoint == NULL || change_id == NULL ||
      asprintf (&file, "%s/checkpoints.json", c->state_dir) == -1)
    return 0;
  if (mkdir (c->state_dir, 0700) == -1 && errno != EEXIST) {
    log_error ("%s: %m", c->state_dir);
    return -1;
  }
  j = read_checkpoints (c);
  json_object_set_new (j, checkpoint, json_string (change_id));
  text = json_dumps (j, JSON_INDENT (2));
  json_decref (j);
  if (text == NULL || write_file_atomic (file, text, strlen (text)) == -1) {
    log_error ("%s: %m", file);
    return -1;
  }
  return 0;
}

/* FILESYSTEM_OVERHEAD: CDI's share of a filesystem volume kept free (0 when unset). */
static int
overhead_of (const struct cdi *c, double *overhead)
{
  char *end;

  *overhead = 0;
  if (c->overhead == NULL)
    return 0;
  *overhead = strtod (c->overhead, &end);
  if (*end || *overhead < 0 || *overhead >= 1) {
    log_error ("FILESYSTEM_OVERHEAD %s: expected a fraction such as 0.055", c->overhead);
    return -1;
  }
  return 0;
}

/* The target must hold CAPACITY bytes: a block device that large, or a filesystem with
 * room for them after FILESYSTEM_OVERHEAD.
 */
static int
check_room (const struct cdi *c, uint64_t capacity)
{
  double overhead;

  if (c->block) {
    uint64_t size = 0;
    int fd = open (c->target, O_RDONLY | O_CLOEXEC);
    if (fd == -1 || ioctl (fd, BLKGETSIZE64, &size) == -1) {
      log_error ("%s: %m", c->target);
      if (fd != -1)
        close (fd);
      return -1;
    }
    close (fd);
    if (size < capacity) {
      log_error ("%s holds %" PRIu64 " bytes, the disk %s has %" PRIu64
                 ": a larger PVC is required",
                 c->target, size, c->backing_file, capacity);
      return -1;
    }
    return 0;
  }
  if (overhead_of (c, &overhead) == -1)
    return -1;
  struct statvfs sv;
  if (statvfs (c->data_dir, &sv) == -1) {
    log_error ("%s: %m", c->data_dir);
    return -1;
  }
  uint64_t room = (uint64_t)((double)sv.f_blocks * sv.f_frsize * (1 - overhead));
  if (capacity > room) {
    log_error ("%s needs %" PRIu64 " bytes (the virtual size of %s); the PVC's filesystem "
               "has room for %" PRIu64 " with FILESYSTEM_OVERHEAD %s: a larger PVC is "
               "required",
               c->target, capacity, c->backing_file, room, c->overhead ? c->overhead : "0");
    return -1;
  }
  return 0;
}

/* ---- the resize ---- */

/* The size CDI's Resize phase gives the image of a disk of CAPACITY bytes:
 * min(IMPORTER_IMAGE_SIZE, room), where room is what the filesystem has for the image
 * after FILESYSTEM_OVERHEAD, rounded down to 1 MiB (CDI's calculateTargetSize and
 * GetUsableSpace): its free space plus what the image already holds, so that a restarted
 * stage finds the same room as the first attempt did on the empty volume.  Never below
 * the capacity: a request for less is an error (an image cannot shrink; qemu-img would
 * refuse too); less room than the disk keeps the disk's size (check_room let it fit).
 * 0 with *SIZE (0 = no resize: a block volume, or no IMPORTER_IMAGE_SIZE), -1 (reported).
 */
static int
resize_target (const struct cdi *c, uint64_t capacity, uint64_t *size)
{
  struct statvfs sv;
  struct stat st;
  double overhead;
  uint64_t space, room;

  *size = 0;
  if (c->block || c->image_size_env == NULL)
    return 0;
  if (c->image_size < capacity) {
    log_error ("IMPORTER_IMAGE_SIZE %s is %" PRIu64 " bytes, less than the %" PRIu64
               " bytes of the disk %s: the image cannot shrink",
               c->image_size_env, c->image_size, capacity, c->backing_file);
    return -1;
  }
  if (overhead_of (c, &overhead) == -1)
    return -1;
  if (statvfs (c->data_dir, &sv) == -1) {
    log_error ("%s: %m", c->data_dir);
    return -1;
  }
  space = (uint64_t)sv.f_bavail * sv.f_frsize;
  if (stat (c->target, &st) == 0)
    space += (uint64_t)st.st_blocks * 512;
  room = (uint64_t)((double)space * (1 - overhead)) & ~((UINT64_C (1) << 20) - 1);
  *size = c->image_size;
  if (room < c->image_size) {
    *size = room > capacity ? room : capacity;
    log_warning ("%s: IMPORTER_IMAGE_SIZE %s asks for %" PRIu64 " bytes, the PVC's "
                 "filesystem has room for %" PRIu64 " with FILESYSTEM_OVERHEAD %s: the "
                 "image gets %" PRIu64,
                 c->target, c->image_size_env, c->image_size, room,
                 c->overhead ? c->overhead : "0", *size);
  }
  return 0;
}

/* Grow the image to SIZE bytes (never shrink it), durably: the bytes beyond the disk's
 * capacity are a hole, the zeros the guest sees as new space.
 *
 * Why before the copy of a stage without IMPORTER_PREVIOUS_CHECKPOINT, and not after the
 * last stage: the disk cache binds its metadata to the image's identity, size included,
 * and an image whose size differs from the recorded one counts as replaced (every block
 * invalid).  Grown here, the image has its final size before the cache first records it,
 * so every later open -- a delta stage, or any stage restarted after a pod died at any
 * point -- finds the size it recorded, and the cache keeps the capacity's blocks valid
 * (its validity and digest cover the capacity only).  Grown after a stage's copy, a pod
 * dying between the grow and the metadata's removal would make the restarted stage see
 * another image and copy everything again.  A first stage restarted after the grow finds
 * the image already that size and changes nothing.  (A first stage restarted with a
 * larger room or request than its first attempt had grows the image again and starts its
 * full copy afresh: CDI passes the same request to every attempt.)
 */
static int
grow_image (const struct cdi *c, uint64_t size)
{
  struct stat st;
  int fd = open (c->target, O_RDWR | O_CREAT | O_CLOEXEC, 0660);

  if (fd == -1 || fstat (fd, &st) == -1) {
    log_error ("%s: %m", c->target);
    if (fd != -1)
      close (fd);
    return -1;
  }
  if ((uint64_t)st.st_size >= size) {
    log_debug ("%s: %" PRIu64 " bytes already, no resize to %" PRIu64, c->target,
               (uint64_t)st.st_size, size);
    close (fd);
    return 0;
  }
  if (ftruncate (fd, size) == -1 || fsync (fd) == -1) {
    log_error ("%s: resize to %" PRIu64 " bytes (IMPORTER_IMAGE_SIZE %s): %m", c->target,
               size, c->image_size_env);
    close (fd);
    return -1;
  }
  close (fd);
  log_info ("%s: resized to %" PRIu64 " bytes (IMPORTER_IMAGE_SIZE %s)", c->target, size,
            c->image_size_env);
  return 0;
}

/* ---- the cache copy ---- */

struct fill_progress {
  struct cdi *c;
  struct source *src;
  size_t disk;
  struct progress_disk *pd;
};

static void
fill_cb (void *data, uint64_t done, uint64_t total)
{
  struct fill_progress *f = data;

  if (f->pd == NULL)
    f->pd = progress_disk_start (f->c->progress, source_vm (f->src)->name,
                                 source_disk (f->src, f->disk)->key, 1, total);
  progress_disk_update (f->pd, done, 0);
}

static int
copy_cached (struct cdi *c, struct source *src, size_t i)
{
  struct dcache_disk_ref ref = { src, i };
  struct dcache_params p = { .image = c->target, .meta = c->meta };
  struct fill_progress f = { .c = c, .src = src, .disk = i };
  struct dcache_stats st;
  struct dcache *dc;
  int r = -1;

  if (mkdir (c->state_dir, 0700) == -1 && errno != EEXIST) {
    log_error ("%s: %m", c->state_dir);
    return -1;
  }
  dcache_params_from_source (&p, src, i);
  dc = dcache_open (&p, &dcache_source_adapter, &ref);
  if (dc == NULL)
    return -1;
  dcache_get_stats (dc, &st);
  c->stage = st.valid_bytes == 0 ? "full" : "cache";
  if (dcache_fill (dc, CDI_CONNECTIONS, fill_cb, &f) == 0)
    r = 0;
  dcache_get_stats (dc, &st);
  c->fetched = st.fetched_bytes;
  progress_disk_update (f.pd, st.fetched_bytes, st.zeroed_bytes);
  progress_disk_end (f.pd);
  if (dcache_close (dc) == -1)
    r = -1;
  return r;
}

/* ---- the termination message ---- */

static void
write_message (const char *path, const char *message, const char *version, const char *host)
{
  json_t *doc = json_object ();
  char *text, *shortened = termlog_shorten (message, TERMLOG_MAX - 256);

  if (version)
    json_object_set_new (
        doc, "vddkInfo",
        json_pack ("{s:s, s:s}", "Version", version, "Host", host ? host : ""));
  json_object_set_new (doc, "message", json_string (shortened ? shortened : ""));
  text = json_dumps (doc, JSON_COMPACT | JSON_PRESERVE_ORDER);
  if (text)
    termlog_write_text (path, text);
  free (text);
  free (shortened);
  json_decref (doc);
}

/* Remove the state on the PVC once the import is complete: the PVC is the VM's disk. */
static void
remove_state (const struct cdi *c)
{
  static const char *const files[] = { "disk.dcache", "disk.dcache.lock",
                                       "checkpoints.json" };

  for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
    CLEANUP_FREE char *f = NULL;
    if (asprintf (&f, "%s/%s", c->state_dir, files[i]) != -1)
      unlink (f);
  }
  rmdir (c->state_dir);
}

static int
run (struct cdi *c, const char **phase)
{
  struct source_config cfg = {
    .provider = "vsphere",
    .server = c->server,
    .user = c->user,
    .password = c->password,
    .vm_uuid = c->uuid,
    .snapshot = c->current,
    .cacert = c->cacert,
    .thumbprint = c->thumbprint,
    .sslverify = !c->insecure || c->thumbprint || c->cacert,
    .connections = CDI_CONNECTIONS,
    .purpose = "cdi-import",
    .stop = &stop_signal,
  };
  CLEANUP_FREE char *prev_change = NULL;
  struct source *src;
  struct stat st;
  uint64_t image_size = 0;
  int i, r = -1;

  *phase = "Unable to connect to vddk data source";
  if (source_config_check (&cfg) == -1)
    return -1;
  src = source_open (&cfg);
  if (src == NULL)
    return -1;
  i = find_disk (src, c->backing_file);
  if (i == -1)
    goto out;
  const struct provider_disk *disk = source_disk (src, i);
  c->host = source_vm (src)->host ? strdup (source_vm (src)->host) : NULL;
  *phase = "Unable to process data";
  if (check_room (c, disk->capacity) == -1)
    goto out;
  /* CDI resizes after a full copy only: "the resize already happened" at a delta stage. */
  if (c->previous == NULL && resize_target (c, disk->capacity, &image_size) == -1)
    goto out;
  if (c->previous && !c->block && stat (c->target, &st) == -1) {
    log_error ("%s does not exist, so the changes since IMPORTER_PREVIOUS_CHECKPOINT %s "
               "cannot be applied to it",
               c->target, c->previous);
    goto out;
  }
  /* The changeId the previous checkpoint stands for, if it can be known. */
  if (c->previous && is_change_id (c->previous))
    prev_change = strdup (c->previous);
  else if (c->previous) {
    json_t *j = read_checkpoints (c);
    const char *id = json_string_value (json_object_get (j, c->previous));
    prev_change = id ? strdup (id) : NULL;
    json_decref (j);
  }
  log_info ("importing %s of VM %s (%s) as of %s into %s", disk->file_name,
            source_vm (src)->name, source_vm (src)->id, c->current ? c->current : "now",
            c->target);
  r = 1;
  if (prev_change && (c->block || access (c->meta, F_OK) == -1))
    r = cdi_copy_delta (src, i, prev_change, c->target, c->progress, CDI_CONNECTIONS,
                        &c->fetched);
  if (r == 0)
    c->stage = "delta";
  else if (c->previous && prev_change == NULL && (c->block || access (c->meta, F_OK) == -1))
    log_warning ("IMPORTER_PREVIOUS_CHECKPOINT %s: not a changeId, and no earlier stage on "
                 "this volume recorded its changeId: copying the whole disk",
                 c->previous);
  if (r == 1 && image_size && grow_image (c, image_size) == -1)
    r = -1;
  if (r == 1)
    r = copy_cached (c, src, i);
  /* The end of CDI's Resize phase (after every full copy); CDI ignores a failure. */
  if (r == 0 && c->previous == NULL && !c->block && chmod (c->target, 0660) == -1)
    log_warning ("%s: chmod 0660: %m", c->target);
  if (r == 0 && save_checkpoint (c, c->current, disk->change_id) == -1)
    r = -1;
  if (r == 0)
    log_info ("%s: %s copy done, %" PRIu64 " bytes fetched; changeId %s", c->target,
              c->stage, c->fetched, disk->change_id ? disk->change_id : "(none)");

out:
  source_close (src);
  return r;
}

int
cdi_import (struct progress *p, const char *metrics_address, const char *metrics_port,
            const char *termination_log, const char *version)
{
  struct cdi c = { .progress = p };
  struct metrics *m = NULL;
  struct sigaction sa = { .sa_handler = on_signal }, old[3];
  static const int sigs[] = { SIGTERM, SIGINT, SIGHUP };
  const char *phase = "Unable to connect to vddk data source";
  CLEANUP_FREE char *vddk_version = NULL;
  int r, status;

  log_set_error_handler (record_error);
  if (termination_log == NULL && access ("/dev/termination-log", W_OK) == 0)
    termination_log = "/dev/termination-log";
  for (size_t k = 0; k < 3; k++)
    sigaction (sigs[k], &sa, &old[k]); /* no SA_RESTART: waits end */
  /* CDI's port unless told otherwise; when that one is taken, the import goes on without
   * metrics (a port asked for explicitly must work).
   */
  bool explicit_port = metrics_port != NULL;
  if (!explicit_port)
    metrics_port = CDI_DEFAULT_METRICS_PORT;
  if (strcmp (metrics_port, "off") != 0) {
    if (!explicit_port)
      log_set_error_handler (as_warning);
    m = metrics_start (metrics_address, metrics_port, p, env ("OWNER_UID"));
    log_set_error_handler (record_error);
  }
  if (m == NULL && explicit_port && strcmp (metrics_port, "off") != 0)
    r = -1;
  else if (read_env (&c) == -1)
    r = -1;
  else
    r = run (&c, &phase);

  if (r == 0) {
    if (c.final ? env_true ("IMPORTER_FINAL_CHECKPOINT") : c.current == NULL)
      remove_state (&c); /* the last stage: the PVC is the VM's disk now */
    if (asprintf (&vddk_version, "ferry %s (no VDDK)", version) == -1)
      vddk_version = NULL;
    if (termination_log)
      write_message (termination_log, "Import Complete", vddk_version, c.host);
    status = 0;
  } else {
    char *msg = NULL;
    status = stop_signal || first_error_transient ? EXIT_RETRY : 1;
    if (asprintf (&msg, "%s: %s", phase,
                  stop_signal   ? "cancelled by a signal"
                  : first_error ? first_error
                                : "failed") == -1)
      msg = NULL;
    if (termination_log && msg)
      write_message (termination_log, msg, NULL, NULL);
    free (msg);
  }
  metrics_stop (m);
  for (size_t k = 0; k < 3; k++)
    sigaction (sigs[k], &old[k], NULL);
  if (c.block && c.state_dir) {
    remove_state (&c);
  }
  if (c.cacert)
    unlink (c.cacert);
  free (c.cacert);
  free (c.data_dir);
  free (c.target);
  free (c.state_dir);
  free (c.meta);
  free (c.server);
  free (c.host);
  free (first_error);
  first_error = NULL;
  log_set_error_handler (NULL);
  return status;
}
