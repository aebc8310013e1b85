/* SPDX-License-Identifier: Apache-2.0 */
/* ferry: converting a verified VM and writing its manifests (conversion.h).
 *
 * THREAD MODEL: conversion_vm runs in the VM's thread; the journal is shared under its
 * lock, which is never held while a child runs.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <libgen.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "common/cleanup.h"
#include "common/log.h"
#include "common/util.h"
#include "convert/convert.h"
#include "conversion.h"
#include "migrate.h"
#include "verify.h"

bool
conversion_state (const char *state)
{
  return state &&
         (strcmp (state, "verified") == 0 || strcmp (state, "converting") == 0 ||
          strcmp (state, "converted") == 0 || strcmp (state, "conversion-failed") == 0);
}

static void
set_state (struct conversion *c, const char *label, const char *state)
{
  char text[256];

  journal_lock (c->journal);
  json_object_set_new (journal_vm (c->journal, label), "state", json_string (state));
  journal_save (c->journal);
  journal_unlock (c->journal);
  snprintf (text, sizeof text, "ferry: %s: %s", label, state);
  progress_event (
      c->progress,
      json_pack ("{s:s, s:s, s:s}", "event", "state", "vm", label, "state", state), text);
}

struct stage_ctx {
  struct conversion *c;
  const char *label;
  int last_percent;
};

/* virt-v2v's stages and progress, as "conversion" events. */
static void
on_progress (void *opaque, double percent, const char *stage)
{
  struct stage_ctx *s = opaque;
  char text[512];

  if (stage) {
    snprintf (text, sizeof text, "ferry: %s: virt-v2v: %s", s->label, stage);
    progress_event (s->c->progress,
                    json_pack ("{s:s, s:s, s:s}", "event", "conversion", "vm", s->label,
                               "stage", stage),
                    text);
  } else if ((int)percent / 10 != s->last_percent / 10) {
    s->last_percent = (int)percent;
    progress_event (s->c->progress,
                    json_pack ("{s:s, s:s, s:f}", "event", "conversion", "vm", s->label,
                               "percent", percent),
                    NULL);
  }
}

void
conversion_claim_name (const char *target, bool block, char out[64])
{
  CLEANUP_FREE char *copy = strdup (target);
  char *dir = copy;

  if (copy && !block)
    dir = dirname (copy);
  convert_dns_name (dir ? basename (dir) : target, out);
}

/* A DNS-1123 name with "-N" (N > 1) appended within 63 characters. */
static void
dns_suffix (const char *base, unsigned n, char out[64])
{
  char suffix[24];
  int k = snprintf (suffix, sizeof suffix, "-%u", n);
  size_t len = strlen (base);

  if (len + k > 63)
    len = 63 - k;
  while (len > 0 && base[len - 1] == '-')
    len--;
  snprintf (out, 64, "%.*s%s", (int)len, base, suffix);
}

/* The VM's DNS-1123 name, unique among the plan's VMs: the first VM of a name keeps it,
 * later ones get "-2", "-3", ... skipping names that other VMs of the plan have of their
 * own (e.g. VMs "web", "WEB" and "web-2" become web, web-3 and web-2).
 */
void
conversion_vm_name (const struct plan *plan, const struct plan_vm *pvm, char out[64])
{
  size_t me = pvm - plan->vms.ptr, n = plan->vms.len;
  char (*base)[64] = calloc (n, sizeof *base), (*name)[64] = calloc (n, sizeof *name);

  if (base == NULL || name == NULL) {
    convert_dns_name (plan_vm_label (pvm), out);
    goto out;
  }
  for (size_t i = 0; i < n; i++)
    convert_dns_name (plan_vm_label (&plan->vms.ptr[i]), base[i]);
  for (size_t i = 0; i <= me; i++) {
    strcpy (name[i], base[i]);
    for (unsigned k = 2;; k++) {
      bool taken = false;
      for (size_t j = 0; j < i && !taken; j++)
        taken = strcmp (name[j], name[i]) == 0;
      for (size_t j = 0; j < n && !taken && k > 2; j++)
        taken = j != i && strcmp (base[j], name[i]) == 0;
      if (!taken)
        break;
      dns_suffix (base[i], k, name[i]);
    }
  }
  strcpy (out, name[me]);
out:
  free (base);
  free (name);
}

struct manifest_network *
conversion_networks (const struct plan *plan)
{
  const network_map *nm = &plan->networks;
  struct manifest_network *nets = calloc (nm->len ? nm->len : 1, sizeof *nets);

  for (size_t i = 0; nets && i < nm->len; i++)
    nets[i] =
        (struct manifest_network){ nm->ptr[i].source_id, nm->ptr[i].source_name,
                                   nm->ptr[i].type, nm->ptr[i].namespace, nm->ptr[i].name };
  return nets;
}

/* The description from the final round, or (journals of an older ferry) from the source
 * now.  A new reference.
 */
static json_t *
description (struct conversion *c, json_t *vm)
{
  json_t *d = json_object_get (vm, "description");
  struct source_config cfg;
  struct source *src;

  if (json_is_object (d))
    return json_incref (d);
  cfg = plan_source_config (c->plan, c->pvm);
  cfg.metadata_only = true;
  src = source_open (&cfg);
  if (src == NULL)
    return NULL;
  d = source_describe (src);
  source_close (src);
  return d;
}

/* Write (or with DRY only build, to find what is wrong before converting) vm.yaml. */
static int
write_manifests (struct conversion *c, const char *label, json_t *desc, json_t *vm,
                 struct convert_disk *disks, size_t n, bool converted, bool dry)
{
  struct manifest_network *nets = conversion_networks (c->plan);
  struct manifest_disk *md = calloc (n, sizeof *md);
  char (*claims)[64] = calloc (n, sizeof *claims);
  char name[64];
  CLEANUP_FREE char *dir = journal_path (c->plan->state_dir, label);
  CLEANUP_FREE char *path = NULL;
  CLEANUP_FREE char *yaml = NULL;
  json_t *ddisks = json_object_get (desc, "disks");
  int r = -1;

  if (md == NULL || claims == NULL || dir == NULL || nets == NULL ||
      asprintf (&path, "%s/vm.yaml", dir) == -1)
    goto out;
  conversion_vm_name (c->plan, c->pvm, name);
  for (size_t i = 0; i < n; i++) {
    struct stat st;
    md[i].block = stat (disks[i].target, &st) == 0 && S_ISBLK (st.st_mode);
    conversion_claim_name (disks[i].target, md[i].block, claims[i]);
    md[i].claim = claims[i];
    md[i].size = disks[i].size;
    md[i].source_path =
        json_string_value (json_object_get (json_array_get (ddisks, i), "fileName"));
    const struct storage_map_entry *sm = plan_storage_for (
        c->plan,
        json_string_value (json_object_get (json_array_get (ddisks, i), "datastore")));
    if (sm) { /* the same PVC as ferry kube writes */
      md[i].storage_class = sm->storage_class;
      md[i].access_mode = sm->access_mode;
      md[i].fs_overhead = sm->fs_overhead;
    }
  }
  struct manifest_params mp = {
    .description = desc,
    .name = name,
    .original_name = json_string_value (json_object_get (desc, "name")),
    .original_power_state = json_string_value (json_object_get (vm, "originalPowerState")),
    .converted = converted,
    .disks = md,
    .nr_disks = n,
    .networks = nets,
    .nr_networks = c->plan->networks.len,
  };
  yaml = convert_manifests (&mp);
  if (yaml == NULL || dry) {
    r = yaml ? 0 : -1;
    goto out;
  }
  if (write_file_atomic (path, yaml, strlen (yaml)) == -1) {
    log_error ("%s: %s: %m", label, path);
    goto out;
  }
  journal_lock (c->journal);
  vm = journal_vm (c->journal, label);
  json_object_set_new (vm, "manifests", json_string (path));
  if (mp.nics_left_out && mp.nr_networks == 0) {
    char w[256];
    snprintf (w, sizeof w,
              "%zu NIC(s) beyond the first are not in vm.yaml: the pod network carries "
              "one interface (map them with networkMap)",
              mp.nics_left_out);
    json_array_append_new (json_object_get (vm, "warnings"), json_string (w));
  }
  journal_save (c->journal);
  journal_unlock (c->journal);
  r = 0;
out:
  if (r == -1 && (md == NULL || claims == NULL || dir == NULL || path == NULL))
    log_error ("%s: manifests: out of memory", label);
  free (nets);
  free (md);
  free (claims);
  return r;
}

/* The VM's targets in disk order, from the journal. */
static struct convert_disk *
journal_disks (json_t *vm, size_t *n)
{
  json_t *jdisks = json_object_get (vm, "disks"), *d;
  size_t count = json_object_size (jdisks);
  struct convert_disk *disks = calloc (count ? count : 1, sizeof *disks);
  const char *key;

  *n = 0;
  if (disks == NULL)
    return NULL;
  json_object_foreach (jdisks, key, d)
  {
    json_int_t i = json_integer_value (json_object_get (d, "index"));
    const char *target = json_string_value (json_object_get (d, "target"));
    if (i < 0 || (size_t)i >= count || target == NULL) {
      log_error ("disk %s: the journal has no target for it", key);
      free (disks);
      return NULL;
    }
    disks[i].target = target;
    disks[i].size = json_integer_value (json_object_get (d, "capacity"));
  }
  *n = count;
  return disks;
}

int
conversion_vm (struct conversion *c)
{
  const char *label = plan_vm_label (c->pvm);
  CLEANUP_FREE char *dir = journal_path (c->plan->state_dir, label);
  CLEANUP_FREE char *error = NULL;
  struct convert_disk *disks = NULL;
  json_t *desc = NULL, *copy, *jvm, *jdisks;
  double t0 = time_monotonic ();
  bool started = false;
  size_t n = 0;
  int r = -1;

  journal_lock (c->journal);
  copy = json_deep_copy (journal_vm (c->journal, label));
  journal_unlock (c->journal);
  if (strcmp (json_string_value (json_object_get (copy, "state")), "converted") == 0) {
    if (dir)
      convert_forget (dir);
    json_decref (copy);
    return 0;
  }
  disks = journal_disks (copy, &n);
  desc = disks ? description (c, copy) : NULL;
  if (desc == NULL || n == 0 || json_array_size (json_object_get (desc, "disks")) != n) {
    if (desc)
      log_error ("%s: the source describes %zu disks, the journal %zu", label,
                 json_array_size (json_object_get (desc, "disks")), n);
    goto out;
  }
  if (c->plan->skip_guest_conversion) {
    r = write_manifests (c, label, desc, copy, disks, n, false, false);
    if (r == 0 &&
        strcmp (json_string_value (json_object_get (copy, "state")), "verified")) {
      journal_lock (c->journal); /* a rerun after a fixed networkMap */
      json_object_set_new (journal_vm (c->journal, label), "error", json_null ());
      journal_unlock (c->journal);
      set_state (c, label, "verified");
    }
    goto out;
  }
  /* What would fail the manifests (a NIC the networkMap misses) fails before virt-v2v. */
  if (write_manifests (c, label, desc, copy, disks, n, true, true) == -1)
    goto out;

  started = true;
  set_state (c, label, "converting");
  struct stage_ctx sc = { c, label, -10 };
  struct convert_params p = { .description = desc,
                              .disks = disks,
                              .nr_disks = n,
                              .work_dir = dir,
                              .progress = on_progress,
                              .opaque = &sc,
                              .cancel = c->cancel };
  if (convert_run (&p, &error) == -1)
    goto out;

  /* What the targets hold now; the caches no longer describe them. */
  for (size_t i = 0; i < n; i++) {
    char hex[65];
    const char *key = json_string_value (
        json_object_get (json_array_get (json_object_get (desc, "disks"), i), "key"));
    CLEANUP_FREE char *meta = NULL;
    if (asprintf (&meta, "%s/%s.dcache", dir, key) != -1)
      unlink (meta);
    if (verify_digest (disks[i].target, disks[i].size, hex, c->cancel) == -1)
      goto out;
    journal_lock (c->journal);
    jdisks = json_object_get (journal_vm (c->journal, label), "disks");
    json_t *jd = json_object_get (jdisks, key);
    json_t *digest = json_object_get (jd, "digest");
    if (!json_is_object (digest)) {
      digest = json_object ();
      json_object_set_new (jd, "digest", digest);
    }
    json_object_set_new (digest, "afterConversion", json_string (hex));
    json_object_set_new (
        jd, "conversion",
        json_pack ("{s:I}", "changedBlocks", (json_int_t)disks[i].changed_blocks));
    journal_save (c->journal);
    journal_unlock (c->journal);
  }
  test_stop ("conversion-recorded", n); /* crash tests: before the state says converted */
  if (write_manifests (c, label, desc, copy, disks, n, true, false) == -1)
    goto out;
  journal_lock (c->journal);
  jvm = journal_vm (c->journal, label);
  json_object_set_new (jvm, "conversion",
                       json_pack ("{s:f, s:b, s:s+}", "seconds", time_monotonic () - t0,
                                  "tcg", convert_uses_tcg (), "log", dir, "/virt-v2v.log"));
  json_object_set_new (jvm, "error", json_null ());
  journal_unlock (c->journal);
  set_state (c, label, "converted");
  convert_forget (dir);
  r = 0;

out:
  if (r == -1) {
    bool cancelled = c->cancel && *c->cancel;
    /* Cancelled is not a failure: the next run converts again. */
    if (cancelled)
      free (error), error = strdup ("cancelled");
    else if (error == NULL)
      error = c->take_error ("the conversion failed");
    journal_lock (c->journal);
    jvm = journal_vm (c->journal, label);
    json_object_set_new (jvm, "error", error ? json_string (error) : json_null ());
    if (started && !cancelled)
      json_object_set_new (jvm, "conversion",
                           json_pack ("{s:f, s:b, s:s+, s:s?}", "seconds",
                                      time_monotonic () - t0, "tcg", convert_uses_tcg (),
                                      "log", dir, "/virt-v2v.log", "error", error));
    journal_save (c->journal);
    journal_unlock (c->journal);
    /* Even when it failed before virt-v2v ran: the copy stands, a rerun retries this. */
    if (!cancelled)
      set_state (c, label, "conversion-failed");
  }
  json_decref (copy);
  json_decref (desc);
  free (disks);
  return r;
}

/* Blocks compared per disk to tell that a conversion-only target is that disk's clone. */
#define IDENTITY_BLOCKS 16

const char conversion_not_off[] =
    "the VM is not powered off: its targets were checked by size (and VMDK uuid) only, "
    "not compared with its disks, which may have changed since the clone";

int
conversion_check_target (const struct plan *plan, const struct plan_vm *pvm,
                         struct source *reader, size_t i, json_t *ddesc,
                         struct convert_target *t, uint64_t *blocks, uint64_t *mismatches)
{
  const char *label = plan_vm_label (pvm);
  const char *key = json_string_value (json_object_get (ddesc, "key"));
  const char *ds = json_string_value (json_object_get (ddesc, "datastore"));
  const char *uuid = json_string_value (json_object_get (ddesc, "uuid"));
  const char *file = json_string_value (json_object_get (ddesc, "fileName"));
  uint64_t capacity = json_integer_value (json_object_get (ddesc, "capacity"));
  CLEANUP_FREE char *path = NULL, *why = NULL;
  enum target_kind kind;

  *t = (struct convert_target){ 0 };
  *blocks = *mismatches = 0;
  if (key == NULL ||
      plan_resolve_target (plan, pvm, i, key, ds ? ds : "", &path, &kind, &why) == -1) {
    log_error ("%s disk %s: %s", label, key ? key : "?", why ? why : "out of memory");
    return -1;
  }
  if (convert_find_target (path, kind == TARGET_BLOCK, t, &why) == -1) {
    log_error ("%s disk %s: target %s", label, key, why ? why : "out of memory");
    return -1;
  }
  if (t->block ? t->size < capacity : t->size != capacity) {
    log_error ("%s disk %s: the target %s holds %" PRIu64 " bytes, the source disk %s is "
               "%" PRIu64 ": not its clone",
               label, key, t->descriptor ? t->descriptor : t->raw, t->size, file, capacity);
    return -1;
  }
  if (t->uuid && uuid && !convert_same_uuid (t->uuid, uuid)) {
    log_error ("%s disk %s: the descriptor %s has ddb.uuid \"%s\", the source disk %s "
               "\"%s\": another disk",
               label, key, t->descriptor, t->uuid, file, uuid);
    return -1;
  }
  if (reader &&
      verify_identity (reader, i, t->raw, IDENTITY_BLOCKS, blocks, mismatches) == -1)
    return -1;
  if (*mismatches) {
    log_error ("%s disk %s: %" PRIu64 " of %" PRIu64 " sampled blocks of %s differ from "
               "the source disk: not its clone (or the VM ran since)",
               label, key, *mismatches, *blocks, t->raw);
    return -1;
  }
  return 0;
}

/* One disk of a conversion-only plan: its target checked (conversion_check_target) and
 * its digest taken; recorded in JD.  -1 reported.
 */
static int
check_target (struct conversion *c, struct source *src, size_t i, json_t *ddesc, json_t *jd)
{
  const char *uuid = json_string_value (json_object_get (ddesc, "uuid"));
  uint64_t capacity = json_integer_value (json_object_get (ddesc, "capacity"));
  struct convert_target t;
  uint64_t blocks, mismatches;
  char hex[65];
  int r = -1;

  if (conversion_check_target (c->plan, c->pvm, src, i, ddesc, &t, &blocks, &mismatches) ==
          -1 ||
      verify_digest (t.raw, capacity, hex, c->cancel) == -1)
    goto out;
  journal_lock (c->journal);
  json_object_set_new (jd, "index", json_integer (i));
  json_object_set_new (jd, "capacity", json_integer (capacity));
  json_object_set_new (jd, "target", json_string (t.raw));
  if (t.descriptor)
    json_object_set_new (jd, "targetDescriptor", json_string (t.descriptor));
  json_object_set_new (jd, "digest", json_pack ("{s:s}", "target", hex));
  json_object_set_new (jd, "identity",
                       json_pack ("{s:I, s:I, s:b}", "sampledBlocks", (json_int_t)blocks,
                                  "mismatches", (json_int_t)mismatches, "uuidChecked",
                                  t.uuid && uuid));
  journal_unlock (c->journal);
  r = 0;
out:
  convert_target_free (&t);
  return r;
}

int
conversion_check (struct conversion *c)
{
  const char *label = plan_vm_label (c->pvm);
  struct source_config cfg = plan_source_config (c->plan, c->pvm);
  struct source *src, *reader = NULL;
  json_t *desc, *vm, *disks, *ddisks, *e;
  char text[256];
  bool off;
  size_t i;
  int r = 0;

  journal_lock (c->journal);
  vm = journal_vm (c->journal, label);
  json_object_set_new (vm, "state", json_string ("checking"));
  journal_save (c->journal);
  journal_unlock (c->journal);
  snprintf (text, sizeof text, "ferry: %s: checking", label);
  progress_event (
      c->progress,
      json_pack ("{s:s, s:s, s:s}", "event", "state", "vm", label, "state", "checking"),
      text);
  /* The VM's directory: overlays, XML, logs and manifests. */
  CLEANUP_FREE char *dir = journal_path (c->plan->state_dir, label);
  if (dir == NULL || (mkdir (dir, 0700) == -1 && errno != EEXIST)) {
    log_error ("%s: %s: %m", label, dir ? dir : c->plan->state_dir);
    return -1;
  }
  cfg.metadata_only = true;
  cfg.stop = c->cancel;
  src = source_open (&cfg);
  if (src == NULL)
    return -1;
  desc = source_describe (src);
  off = source_vm (src)->power_state &&
        strcmp (source_vm (src)->power_state, "poweredOff") == 0;
  journal_lock (c->journal);
  vm = journal_vm (c->journal, label);
  json_object_set_new (vm, "sourceId", json_string (source_vm (src)->id));
  json_object_set_new (vm, "sourceName", json_string (source_vm (src)->name));
  json_object_set_new (vm, "originalPowerState",
                       json_string (source_vm (src)->power_state
                                        ? source_vm (src)->power_state
                                        : "unknown"));
  json_object_set_new (vm, "warnings", json_array ());
  journal_unlock (c->journal);
  source_close (src);
  if (desc == NULL)
    return -1;
  if (off) { /* its disks hold what the clones should: a few blocks are compared */
    cfg.metadata_only = false;
    reader = source_open (&cfg);
    if (reader == NULL) {
      json_decref (desc);
      return -1;
    }
  } else {
    journal_lock (c->journal);
    json_array_append_new (json_object_get (journal_vm (c->journal, label), "warnings"),
                           json_string (conversion_not_off));
    journal_unlock (c->journal);
    log_warning ("%s: %s", label, conversion_not_off);
  }
  ddisks = json_object_get (desc, "disks");
  journal_lock (c->journal);
  vm = journal_vm (c->journal, label);
  disks = json_object ();
  json_object_set_new (vm, "disks", disks);
  json_object_set (vm, "description", desc);
  journal_unlock (c->journal);
  json_array_foreach (ddisks, i, e)
  {
    json_t *jd = json_object ();
    journal_lock (c->journal);
    json_object_set_new (disks, json_string_value (json_object_get (e, "key")), jd);
    journal_unlock (c->journal);
    if (check_target (c, reader, i, e, jd) == -1)
      r = -1;
  }
  /* Two disks may not share a target. */
  for (size_t a = 0; r == 0 && a < json_array_size (ddisks); a++)
    for (size_t b = a + 1; b < json_array_size (ddisks); b++) {
      const char *ka =
          json_string_value (json_object_get (json_array_get (ddisks, a), "key"));
      const char *kb =
          json_string_value (json_object_get (json_array_get (ddisks, b), "key"));
      const char *ta =
          json_string_value (json_object_get (json_object_get (disks, ka), "target"));
      const char *tb =
          json_string_value (json_object_get (json_object_get (disks, kb), "target"));
      if (ta && tb && strcmp (ta, tb) == 0) {
        log_error ("%s: disks %s and %s have the same target %s", label, ka, kb, ta);
        r = -1;
      }
    }
  if (reader)
    source_close (reader);
  json_decref (desc);
  journal_lock (c->journal);
  journal_save (c->journal);
  journal_unlock (c->journal);
  if (r == 0)
    set_state (c, label, "verified");
  return r;
}

/* ferry convert: errors go to stderr as usual; the first one is kept for the journal. */
static char *first_error;
static volatile sig_atomic_t stop;

static void
keep_error (const char *msg)
{
  fprintf (stderr, "ferry: %s\n", msg);
  if (first_error == NULL)
    first_error = strdup (msg);
}

static char *
take_first_error (const char *fallback)
{
  char *e = first_error ? first_error : strdup (fallback);
  first_error = NULL;
  return e;
}

static void
on_signal (int sig)
{
  stop = sig;
}

int
conversion_command (struct plan *plan, const char *name, struct progress *progress)
{
  const struct plan_vm *pvm = NULL;
  struct sigaction sa = { .sa_handler = on_signal }, old[3];
  const int sigs[3] = { SIGTERM, SIGINT, SIGHUP };
  const char **names;
  const char *state;
  struct journal *j;
  int r;

  for (size_t i = 0; i < plan->vms.len; i++)
    if (strcmp (plan_vm_label (&plan->vms.ptr[i]), name) == 0)
      pvm = &plan->vms.ptr[i];
  if (pvm == NULL) {
    fprintf (stderr, "ferry: --vm %s: no VM of plan %s has this target name\n", name,
             plan->name);
    return 2;
  }
  j = journal_open (plan->state_dir, plan->name, true);
  if (j == NULL) /* another ferry runs the plan: retry later */
    return journal_runner (plan->state_dir) != 0 ? EXIT_RETRY : 1;
  journal_lock (j);
  state = json_string_value (json_object_get (journal_vm (j, name), "state"));
  journal_unlock (j);
  if (state && strcmp (state, "converted") == 0) {
    printf ("%s is converted already\n", name);
    journal_close (j);
    return 0;
  }
  if (!conversion_state (state)) {
    fprintf (stderr,
             "ferry: %s is %s: only a verified VM (or one whose conversion failed) is "
             "converted; run ferry migrate first\n",
             name, state ? state : "unknown");
    journal_close (j);
    return 2;
  }
  for (int i = 0; i < 3; i++)
    sigaction (sigs[i], &sa, &old[i]);
  log_set_error_handler (keep_error);
  struct conversion c = { .plan = plan,
                          .pvm = pvm,
                          .journal = j,
                          .progress = progress,
                          .cancel = &stop,
                          .take_error = take_first_error };
  r = conversion_vm (&c) == 0 ? 0 : stop ? EXIT_RETRY : 1; /* cancelled: a retry resumes */
  log_set_error_handler (NULL);
  for (int i = 0; i < 3; i++)
    sigaction (sigs[i], &old[i], NULL);
  free (first_error);
  first_error = NULL;
  names = calloc (plan->vms.len, sizeof *names);
  journal_lock (j);
  for (size_t i = 0; names && i < plan->vms.len; i++) {
    names[i] = plan_vm_label (&plan->vms.ptr[i]);
    journal_vm (j, names[i]);
  }
  if (names == NULL || journal_write_results (j, names, plan->vms.len) == -1)
    r = 1;
  journal_unlock (j);
  free (names);
  journal_close (j);
  return r;
}
