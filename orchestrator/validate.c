/* SPDX-License-Identifier: Apache-2.0 */
/* ferry: ferry validate — every problem of a plan at once, before anything is touched.
 *
 * Like MTV's plan concerns: each concern names its object ("plan", "source", "vm web01",
 * "target /pvc/x"), a category (Critical blocks the migration, Warning and Information
 * do not) and a message.  The only change validate may make is the one the plan asks for
 * (enableCBT).  A conversion-only plan's targets are checked as ferry migrate's checking
 * state checks them (conversion_check_target), not as copy destinations.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <libgen.h>
#include <signal.h>
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
#include "conversion.h"
#include "inspection.h"
#include "migrate.h"
#include "validate.h"

static json_t *concerns;
static json_t *inspections;        /* --inspect: VM label -> the inspection's result */
static volatile sig_atomic_t stop; /* SIGTERM during --inspect: the snapshot goes */
static char *captured;             /* errors reported while one check ran */
static bool plan_problems;         /* while the plan is read: each error is a concern */
static bool transient;             /* a check failed because the server or network did */
static bool last_only;             /* keep only the last error: the one that says why */

static void concern (const char *object, const char *category, const char *fs, ...)
    __attribute__ ((format (printf, 3, 4)));

static void
capture (const char *msg)
{
  if (log_error_is_transient ())
    transient = true;
  if (plan_problems) {
    concern ("plan", "Critical", "%s", msg);
    return;
  }
  if (last_only) {
    free (captured);
    captured = strdup (msg);
    return;
  }
  size_t n = captured ? strlen (captured) : 0;
  char *p = realloc (captured, n + strlen (msg) + 3);

  if (p == NULL)
    return;
  if (n)
    strcpy (p + n, "; "), n += 2;
  strcpy (p + n, msg);
  captured = p;
}

static void
concern (const char *object, const char *category, const char *fs, ...)
{
  va_list args;
  char *msg = NULL;
  size_t i;
  json_t *c;

  va_start (args, fs);
  if (vasprintf (&msg, fs, args) == -1)
    msg = NULL;
  va_end (args);
  if (msg == NULL)
    return;
  /* A problem that several VMs share (unreachable, TLS, login) is the source's, said once.
   */
  json_array_foreach (concerns, i, c)
  {
    if (strcmp (json_string_value (json_object_get (c, "message")), msg) == 0) {
      if (strcmp (json_string_value (json_object_get (c, "object")), object) != 0)
        json_object_set_new (c, "object", json_string ("source"));
      free (msg);
      return;
    }
  }
  json_array_append_new (concerns, json_pack ("{s:s, s:s, s:s}", "object", object,
                                              "category", category, "message", msg));
  free (msg);
}

static void
capture_warning (const char *msg)
{
  concern ("source", "Warning", "%s", msg);
}

static char *
take_captured (void)
{
  char *c = captured;
  captured = NULL;
  return c;
}

static void
human (uint64_t bytes, char *buf, size_t len)
{
  static const char *const units[] = { "B", "KiB", "MiB", "GiB", "TiB", "PiB" };
  double v = bytes;
  size_t u = 0;

  while (v >= 1024 && u < 5)
    v /= 1024, u++;
  snprintf (buf, len, "%.1f %s", v, units[u]);
}

static void
too_small (const char *object, uint64_t need, uint64_t have)
{
  char a[32], b[32];

  human (need, a, sizeof a);
  human (have, b, sizeof b);
  concern (object, "Critical",
           "too small: the disk needs %" PRIu64 " bytes (%s), the target has %" PRIu64
           " bytes (%s) available",
           need, a, have, b);
}

/* Can PATH (a disk image of kind KIND) take CAPACITY bytes? */
static void
check_target (const char *path, enum target_kind kind, uint64_t capacity)
{
  char object[4200];
  struct stat st;

  snprintf (object, sizeof object, "target %s", path);
  if (kind == TARGET_BLOCK) {
    uint64_t size = 0;
    int fd;
    if (stat (path, &st) == -1) {
      concern (object, "Critical", "missing: %s (a block-mode PVC's device)",
               strerror (errno));
      return;
    }
    if (!S_ISBLK (st.st_mode)) {
      concern (object, "Critical", "not a block device (the storageMap says block)");
      return;
    }
    fd = open (path, O_RDWR | O_CLOEXEC);
    if (fd == -1) {
      concern (object, "Critical", "not writable: %s", strerror (errno));
      return;
    }
    if (ioctl (fd, BLKGETSIZE64, &size) == 0 && size < capacity)
      too_small (object, capacity, size);
    close (fd);
    return;
  }
  CLEANUP_FREE char *copy = strdup (path);
  const char *dir = copy ? dirname (copy) : ".";
  struct statvfs vfs;
  uint64_t have;
  if (stat (dir, &st) == -1 || !S_ISDIR (st.st_mode)) {
    concern (object, "Critical",
             "missing: the directory %s (a filesystem-mode PVC's mount): %s", dir,
             errno ? strerror (errno) : "is not a directory");
    return;
  }
  if (access (dir, W_OK) == -1 || (access (path, F_OK) == 0 && access (path, W_OK) == -1)) {
    concern (object, "Critical", "not writable: %s", strerror (errno));
    return;
  }
  if (statvfs (dir, &vfs) == -1) {
    concern (object, "Critical", "statvfs %s: %s", dir, strerror (errno));
    return;
  }
  have = (uint64_t)vfs.f_bavail * vfs.f_frsize;
  if (stat (path, &st) == 0)
    have += (uint64_t)st.st_blocks * 512; /* what the image holds already is reused */
  if (have < capacity)
    too_small (object, capacity, have);
}

/* A conversion-only plan compares a few blocks of each target with the disks of a VM that
 * is off, as ferry migrate does, where reading changes nothing: a vSphere VM without
 * snapshots has its live disks read (no snapshot is made, no leftover removed).  NULL
 * otherwise, said as a concern about OBJECT.
 */
static struct source *
clone_reader (const struct plan *plan, const struct plan_vm *pvm,
              const struct source_vm *vm, const char *object)
{
  struct source_config cfg = plan_source_config (plan, pvm);
  struct source *reader;

  if (vm->power_state == NULL || strcmp (vm->power_state, "poweredOff") != 0) {
    concern (object, "Warning", "%s: %s", plan_vm_label (pvm), conversion_not_off);
    return NULL;
  }
  if (vm->snapshots) /* a Critical concern already: migrate refuses to read such a VM */
    return NULL;
  if (vm->leftovers || strcmp (plan->source_type, "vsphere") != 0) {
    concern (object, "Information",
             "%s: its targets were checked by size (and VMDK uuid); ferry migrate also "
             "compares their blocks with the disks, which validate does not since reading "
             "them %s",
             plan_vm_label (pvm),
             vm->leftovers ? "removes ferry's leftover snapshots first"
                           : "starts image transfers on the engine");
    return NULL;
  }
  free (take_captured ());
  reader = source_open (&cfg);
  if (reader == NULL) {
    CLEANUP_FREE char *why = take_captured ();
    concern (object, "Critical",
             "cannot read its disks to compare them with the targets: %s", why ? why : "?");
  }
  return reader;
}

/* A conversion-only plan's target PATH (of KIND) for disk I (DDESC): what ferry migrate's
 * checking state checks, never whether a copy would fit.  Reads only.
 */
static void
check_clone (const struct plan *plan, const struct plan_vm *pvm, struct source *reader,
             size_t i, json_t *ddesc, const char *path, enum target_kind kind)
{
  CLEANUP_FREE char *copy = strdup (path);
  struct convert_target t;
  uint64_t blocks, mismatches;
  char object[4200];
  int r;

  /* The plan's target: the PVC's directory (disk.img or a VMDK descriptor), or device. */
  snprintf (object, sizeof object, "target %s",
            kind == TARGET_BLOCK || copy == NULL ? path : dirname (copy));
  free (take_captured ());
  last_only = true; /* the sample reports each block that differs, then the verdict */
  r = conversion_check_target (plan, pvm, reader, i, ddesc, &t, &blocks, &mismatches);
  last_only = false;
  convert_target_free (&t);
  if (r == -1) {
    CLEANUP_FREE char *why = take_captured ();
    concern (object, "Critical", "%s", why ? why : "out of memory");
  }
}

struct seen_target {
  char *path;
  char *owner;
};
DEFINE_VECTOR_TYPE (seen_vector, struct seen_target);

static void
check_vm (const struct plan *plan, const struct plan_vm *pvm, seen_vector *seen,
          json_t *ids)
{
  struct source_config cfg = plan_source_config (plan, pvm);
  char object[512];
  struct source *src, *reader = NULL;
  const struct source_vm *vm;
  json_t *desc = NULL;

  snprintf (object, sizeof object, "vm %s", plan_vm_label (pvm));
  cfg.metadata_only = true;
  src = source_open (&cfg);
  if (src == NULL) {
    CLEANUP_FREE char *why = take_captured ();
    concern (object, "Critical", "%s", why ? why : "cannot open the VM");
    return;
  }
  vm = source_vm (src);
  if (json_object_get (ids, vm->id))
    concern (object, "Critical", "the same VM as %s (%s): a VM may be in a plan once",
             json_string_value (json_object_get (ids, vm->id)), vm->id);
  else
    json_object_set_new (ids, vm->id, json_string (plan_vm_label (pvm)));
  if (plan->warm && !vm->change_tracking) {
    if (plan->enable_cbt) {
      if (source_enable_change_tracking (src) == 0)
        concern (object, "Information",
                 "changed block tracking was off: ferry enabled it (enableCBT); it takes "
                 "effect at the next snapshot, ferry's first round");
      else {
        CLEANUP_FREE char *why = take_captured ();
        concern (object, "Critical", "cannot enable changed block tracking: %s",
                 why ? why : "?");
      }
    } else if (strcmp (plan->source_type, "ovirt") == 0) {
      /* RHV changes nothing here; it says which disks lack incremental backup. */
      source_enable_change_tracking (src);
      CLEANUP_FREE char *why = take_captured ();
      concern (object, "Critical", "a warm migration needs incremental backup: %s",
               why ? why : "?");
    } else
      concern (object, "Critical",
               "changed block tracking (CBT) is disabled, which a warm migration needs: "
               "set \"enableCBT\": true in the plan, or enable it in vSphere");
  }
  if (vm->snapshots)
    concern (object, "Critical",
             "the VM has snapshots: %s; ferry reads only VMs without snapshots (delta "
             "chains are not supported yet): delete or consolidate them first",
             vm->snapshots);
  if (vm->leftovers)
    concern (object, "Information",
             "ferry's own leftover snapshots %s will be removed at the start of the next "
             "round",
             vm->leftovers);
  if (plan->conversion_only) {
    desc = source_describe (src);
    if (desc == NULL) {
      CLEANUP_FREE char *why = take_captured ();
      concern (object, "Critical", "cannot describe the VM: %s", why ? why : "?");
    } else
      reader = clone_reader (plan, pvm, vm, object);
  }
  for (size_t i = 0; i < source_disk_count (src); i++) {
    const struct provider_disk *d = source_disk (src, i);
    CLEANUP_FREE char *path = NULL;
    CLEANUP_FREE char *why = NULL;
    enum target_kind kind;
    char owner[600];

    snprintf (owner, sizeof owner, "%s disk %s", plan_vm_label (pvm), d->key);
    if (d->delta)
      concern (object, "Critical",
               "disk %s (%s) is a snapshot delta or linked clone, which ferry cannot read",
               d->key, d->file_name);
    if (plan->warm && vm->change_tracking && d->change_id == NULL)
      concern (object, "Warning",
               "disk %s has no changeId yet: CBT takes effect at the next snapshot",
               d->key);
    if (plan_resolve_target (plan, pvm, i, d->key, d->datastore, &path, &kind, &why) ==
        -1) {
      concern (object, "Critical", "%s", why ? why : "out of memory");
      continue;
    }
    for (size_t j = 0; j < seen->len; j++)
      if (strcmp (seen->ptr[j].path, path) == 0)
        concern (object, "Critical", "target %s is used by two disks: %s and %s", path,
                 seen->ptr[j].owner, owner);
    struct seen_target t = { strdup (path), strdup (owner) };
    if (t.path && t.owner)
      seen_vector_append (seen, t);
    if (!plan->conversion_only)
      check_target (path, kind, d->capacity);
    else if (desc)
      check_clone (plan, pvm, reader, i,
                   json_array_get (json_object_get (desc, "disks"), i), path, kind);
  }
  if (reader)
    source_close (reader);
  json_decref (desc);
  source_close (src);
  free (take_captured ());
}

static void
on_signal (int sig)
{
  stop = sig;
}

/* The one-line summary of what the inspector read: "read 9.1 MiB (9.1 MiB fetched) of
 * 1.0 GiB in 62 s (TCG)".
 */
static void
inspection_cost (json_t *r, char *buf, size_t len)
{
  char a[32], b[32], c[32];

  human (json_integer_value (json_object_get (r, "bytesRead")), a, sizeof a);
  human (json_integer_value (json_object_get (r, "bytesFetched")), b, sizeof b);
  human (json_integer_value (json_object_get (r, "diskBytes")), c, sizeof c);
  snprintf (buf, len, "read %s (%s fetched) of %s through ferry's snapshot in %.0f s%s", a,
            b, c, json_number_value (json_object_get (r, "seconds")),
            json_is_true (json_object_get (r, "tcg")) ? " (TCG)" : "");
}

/* ferry validate --inspect: the preflight inspection of one VM, as concerns. */
static void
inspect_vm (const struct plan *plan, const struct plan_vm *pvm)
{
  const char *label = plan_vm_label (pvm);
  char object[512], cost[256], tmpl[4096];
  const char *tmp = getenv ("TMPDIR");
  json_t *r, *os, *w;
  size_t i;

  snprintf (object, sizeof object, "vm %s", label);
  if (plan->skip_guest_conversion) {
    concern (object, "Information",
             "inspection skipped: the plan copies the disks raw (skipGuestConversion)");
    return;
  }
  /* validate writes nothing of the plan's: the inspector's files go to a temporary
   * directory, removed after.
   */
  snprintf (tmpl, sizeof tmpl, "%s/ferry-inspect.XXXXXX", tmp && *tmp ? tmp : "/tmp");
  if (mkdtemp (tmpl) == NULL) {
    concern (object, "Critical", "inspection: %s: %s", tmpl, strerror (errno));
    return;
  }
  free (take_captured ());
  struct inspection in = { .plan = plan, .pvm = pvm, .work_dir = tmpl, .cancel = &stop };
  r = inspection_vm (&in);
  CLEANUP_FREE char *why = take_captured ();
  const char *const files[] = { "inspect.xml", "inspection.xml", "inspection.log", NULL };
  for (i = 0; files[i]; i++) {
    char path[4200];
    snprintf (path, sizeof path, "%s/%s", tmpl, files[i]);
    unlink (path);
  }
  rmdir (tmpl);
  if (r == NULL) {
    concern (object, "Critical", "inspection could not run: %s",
             stop  ? "cancelled"
             : why ? why
                   : "?");
    return;
  }
  json_object_del (r, "log"); /* removed with the temporary directory */
  json_object_set (inspections, label, r);
  inspection_cost (r, cost, sizeof cost);
  if (!json_is_true (json_object_get (r, "convertible"))) {
    concern (object, "Critical", "inspection: virt-v2v cannot convert this guest: %s (%s)",
             json_string_value (json_object_get (r, "error")), cost);
    json_decref (r);
    return;
  }
  os = json_object_get (r, "os");
  concern (object, "Information",
           "inspection: %s %s %lld.%lld (%s), %s, firmware %s, root %s: virt-v2v can "
           "convert it (%s)",
           json_string_value (json_object_get (os, "name")),
           json_string_value (json_object_get (os, "distro")),
           (long long)json_integer_value (json_object_get (os, "major_version")),
           (long long)json_integer_value (json_object_get (os, "minor_version")),
           json_string_value (json_object_get (os, "product_name")),
           json_string_value (json_object_get (os, "arch")),
           json_string_value (json_object_get (r, "firmware")),
           json_string_value (json_object_get (os, "root")), cost);
  json_array_foreach (json_object_get (r, "warnings"), i, w)
  {
    concern (object, "Warning", "virt-v2v-inspector: %s", json_string_value (w));
  }
  json_decref (r);
}

int
validate_plan (const char *plan_path, bool json_out, bool inspect)
{
  struct plan *plan;
  seen_vector seen = empty_vector;
  json_t *ids = json_object ();
  size_t critical = 0, i;
  json_t *c;

  concerns = json_array ();
  inspections = json_object ();
  log_set_error_handler (capture);
  log_set_info_handler (capture);
  log_set_warning_handler (capture_warning);
  plan_problems = true;
  plan = plan_load (plan_path);
  plan_problems = false;
  if (plan != NULL) {
    for (size_t v = 0; v < plan->vms.len; v++)
      check_vm (plan, &plan->vms.ptr[v], &seen, ids);
  }
  if (plan != NULL && inspect) {
    struct sigaction sa = { .sa_handler = on_signal }, old[3];
    const int sigs[3] = { SIGTERM, SIGINT, SIGHUP };
    for (int k = 0; k < 3; k++)
      sigaction (sigs[k], &sa, &old[k]);
    for (size_t v = 0; v < plan->vms.len && !stop; v++)
      inspect_vm (plan, &plan->vms.ptr[v]);
    for (int k = 0; k < 3; k++)
      sigaction (sigs[k], &old[k], NULL);
  }
  log_set_error_handler (NULL);
  log_set_info_handler (NULL);
  log_set_warning_handler (NULL);

  json_array_foreach (concerns, i, c)
  {
    if (strcmp (json_string_value (json_object_get (c, "category")), "Critical") == 0)
      critical++;
  }
  if (json_out) {
    json_t *out = json_pack ("{s:b, s:O}", "ready", critical == 0, "concerns", concerns);
    if (inspect)
      json_object_set (out, "inspections", inspections);
    json_dumpf (out, stdout, JSON_INDENT (2));
    putchar ('\n');
    json_decref (out);
  } else {
    json_array_foreach (concerns, i, c)
    {
      printf ("%s: %s: %s\n", json_string_value (json_object_get (c, "category")),
              json_string_value (json_object_get (c, "object")),
              json_string_value (json_object_get (c, "message")));
    }
    if (critical)
      printf ("plan %s: not ready: %zu critical concern(s)\n", plan_path, critical);
    else
      printf ("plan %s: ready\n", plan_path);
  }
  for (size_t j = 0; j < seen.len; j++) {
    free (seen.ptr[j].path);
    free (seen.ptr[j].owner);
  }
  seen_vector_reset (&seen);
  json_decref (ids);
  json_decref (concerns);
  json_decref (inspections);
  plan_free (plan);
  /* Checks the server or the network kept from finishing: try again later (75). */
  if (stop)
    return EXIT_RETRY; /* cancelled by a signal: retryable */
  return critical ? (transient ? EXIT_RETRY : 1) : 0;
}
