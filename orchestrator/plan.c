/* SPDX-License-Identifier: Apache-2.0 */
/* ferry: reading the plan (plan.h, ferry-plan.md).
 *
 * Every problem is reported, not only the first: a plan with three typos gets three
 * messages.  Keys are checked against the list of each object's keys, so that a typo
 * ("warn": true) never silently changes a migration.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <stdarg.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>

#include "common/cleanup.h"
#include "common/log.h"
#include "plan.h"

struct loader {
  const char *file;
  int errors;
};

static void problem (struct loader *l, const char *fs, ...)
    __attribute__ ((format (printf, 2, 3)));

static void
problem (struct loader *l, const char *fs, ...)
{
  va_list args;
  char *msg = NULL;

  va_start (args, fs);
  if (vasprintf (&msg, fs, args) == -1)
    msg = NULL;
  va_end (args);
  log_error ("%s: %s", l->file, msg ? msg : fs);
  free (msg);
  l->errors++;
}

/* Report keys of OBJ (at WHERE) that are not in KEYS. */
static void
check_keys (struct loader *l, json_t *obj, const char *where, const char *const *keys)
{
  const char *key;
  json_t *value;

  json_object_foreach (obj, key, value)
  {
    size_t i;
    for (i = 0; keys[i]; i++)
      if (strcmp (keys[i], key) == 0)
        break;
    if (keys[i] == NULL)
      problem (l, "%s: unknown key \"%s\"", where, key);
  }
}

static char *
get_string (struct loader *l, json_t *obj, const char *where, const char *key,
            bool required)
{
  json_t *v = json_object_get (obj, key);

  if (v == NULL || json_is_null (v)) {
    if (required)
      problem (l, "%s: \"%s\" is required", where, key);
    return NULL;
  }
  if (!json_is_string (v) || json_string_length (v) == 0) {
    problem (l, "%s: \"%s\" must be a non-empty string", where, key);
    return NULL;
  }
  return strdup (json_string_value (v));
}

static unsigned
get_unsigned (struct loader *l, json_t *obj, const char *where, const char *key,
              unsigned dflt, unsigned min, unsigned max)
{
  json_t *v = json_object_get (obj, key);

  if (v == NULL)
    return dflt;
  if (!json_is_integer (v) || json_integer_value (v) < min ||
      json_integer_value (v) > max) {
    problem (l, "%s: \"%s\" must be an integer from %u to %u", where, key, min, max);
    return dflt;
  }
  return json_integer_value (v);
}

static bool
get_bool (struct loader *l, json_t *obj, const char *where, const char *key, bool dflt)
{
  json_t *v = json_object_get (obj, key);

  if (v == NULL)
    return dflt;
  if (!json_is_boolean (v)) {
    problem (l, "%s: \"%s\" must be true or false", where, key);
    return dflt;
  }
  return json_is_true (v);
}

int
plan_parse_time (const char *s, time_t *t)
{
  struct tm tm = { 0 };
  const char *end = strptime (s, "%Y-%m-%dT%H:%M:%S", &tm);
  long offset = 0;

  if (end == NULL)
    return -1;
  if (*end == '.') /* fractional seconds are ignored */
    while (*++end >= '0' && *end <= '9')
      ;
  if (*end == 'Z' || *end == 'z')
    end++;
  else if (*end == '+' || *end == '-') {
    int hh, mm, n = 0;
    if (sscanf (end + 1, "%2d:%2d%n", &hh, &mm, &n) != 2 || n != 5)
      return -1;
    offset = (hh * 3600L + mm * 60L) * (*end == '-' ? -1 : 1);
    end += 6;
  } else
    return -1;
  if (*end != '\0')
    return -1;
  *t = timegm (&tm) - offset;
  return 0;
}

/* Read SECRET/NAME without its trailing newline; NULL if missing (not an error). */
static char *
read_secret_file (struct loader *l, const char *dir, const char *name, bool required)
{
  CLEANUP_FREE char *path = NULL;
  char *buf = NULL;
  size_t len = 0;
  FILE *fp;

  if (asprintf (&path, "%s/%s", dir, name) == -1)
    return NULL;
  fp = fopen (path, "re");
  if (fp == NULL) {
    if (required || errno != ENOENT)
      problem (l, "source.secret: %s: %m", path);
    return NULL;
  }
  if (getdelim (&buf, &len, '\0', fp) == -1) {
    free (buf);
    buf = strdup ("");
  }
  fclose (fp);
  if (buf) {
    size_t n = strlen (buf);
    while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == '\r'))
      buf[--n] = '\0';
  }
  return buf;
}

/* source.timeouts: seconds, each from 1 to SOURCE_TIMEOUT_MAX; absent = the default. */
static void
load_timeouts (struct loader *l, struct plan *p, json_t *t)
{
  static const char *const keys[] = { "connect", "control",     "read",
                                      "stall",   "retryBudget", NULL };
  const char *w = "source.timeouts";

  if (t == NULL)
    return;
  if (!json_is_object (t)) {
    problem (l, "%s: must be an object such as {\"stall\": 60, \"retryBudget\": 600}", w);
    return;
  }
  check_keys (l, t, w, keys);
  p->timeouts.connect = get_unsigned (l, t, w, "connect", 0, 1, SOURCE_TIMEOUT_MAX);
  p->timeouts.control = get_unsigned (l, t, w, "control", 0, 1, SOURCE_TIMEOUT_MAX);
  p->timeouts.read = get_unsigned (l, t, w, "read", 0, 1, SOURCE_TIMEOUT_MAX);
  p->timeouts.stall = get_unsigned (l, t, w, "stall", 0, 1, SOURCE_TIMEOUT_MAX);
  p->timeouts.retry_budget =
      get_unsigned (l, t, w, "retryBudget", 0, 1, SOURCE_TIMEOUT_MAX);
}

static void
load_source (struct loader *l, struct plan *p, json_t *src)
{
  static const char *const keys[] = { "type",       "url",      "secret",
                                      "datacenter", "timeouts", NULL };
  CLEANUP_FREE char *insecure = NULL;

  if (!json_is_object (src)) {
    problem (l, "\"source\" is required (an object with type, url, secret)");
    return;
  }
  check_keys (l, src, "source", keys);
  p->source_type = get_string (l, src, "source", "type", true);
  p->url = get_string (l, src, "source", "url", true);
  p->secret_dir = get_string (l, src, "source", "secret", true);
  p->datacenter = get_string (l, src, "source", "datacenter", false);
  load_timeouts (l, p, json_object_get (src, "timeouts"));
  if (p->source_type && strcmp (p->source_type, "vsphere") != 0 &&
      strcmp (p->source_type, "ovirt") != 0)
    problem (l, "source.type \"%s\": only \"vsphere\" and \"ovirt\" are supported",
             p->source_type);
  if (p->url && p->source_type && strcmp (p->source_type, "ovirt") == 0) {
    size_t n = strlen (p->url);
    while (n > 0 && p->url[n - 1] == '/')
      n--;
    if (strncmp (p->url, "https://", 8) != 0 || n < 12 ||
        strncmp (p->url + n - 4, "/api", 4) != 0)
      problem (l, "source.url \"%s\": expected https://ENGINE/ovirt-engine/api", p->url);
  } else if (p->url) {
    const char *host = strstr (p->url, "://");
    host = host ? host + 3 : p->url;
    size_t n = strcspn (host, "/");
    if (strncmp (p->url, "https://", 8) != 0 || n == 0)
      problem (l, "source.url \"%s\": expected https://HOST[:PORT]/sdk", p->url);
    else
      p->server = strndup (host, n);
  }
  if (p->secret_dir) {
    struct stat st;
    if (stat (p->secret_dir, &st) == -1 || !S_ISDIR (st.st_mode)) {
      problem (l,
               "source.secret %s: not a directory (a Secret with the files user, "
               "password and optionally cacert, thumbprint, insecureSkipVerify)",
               p->secret_dir);
      return;
    }
    p->user = read_secret_file (l, p->secret_dir, "user", true);
    p->password = read_secret_file (l, p->secret_dir, "password", true);
    p->thumbprint = read_secret_file (l, p->secret_dir, "thumbprint", false);
    insecure = read_secret_file (l, p->secret_dir, "insecureSkipVerify", false);
    p->insecure = insecure && strcmp (insecure, "true") == 0;
    if (asprintf (&p->cacert, "%s/cacert", p->secret_dir) != -1 &&
        access (p->cacert, F_OK) == -1) {
      free (p->cacert);
      p->cacert = NULL;
    }
    if (p->thumbprint && *p->thumbprint == '\0') {
      free (p->thumbprint);
      p->thumbprint = NULL;
    }
    if (p->thumbprint && p->cacert) /* pinning wins, as in Forklift */
      free (p->cacert), p->cacert = NULL;
    if (p->insecure)
      free (p->cacert), p->cacert = NULL, free (p->thumbprint), p->thumbprint = NULL;
  }
}

static void
load_storage_map (struct loader *l, struct plan *p, json_t *map)
{
  static const char *const keys[] = { "source", "destination", NULL };
  static const char *const src_keys[] = { "name", NULL };
  static const char *const dst_keys[] = { "kind",       "path",       "storageClass",
                                          "accessMode", "volumeMode", "filesystemOverhead",
                                          NULL };
  static const char *const access_modes[] = { "ReadWriteOnce", "ReadWriteMany",
                                              "ReadOnlyMany", "ReadWriteOncePod", NULL };
  size_t i;
  json_t *e;

  if (map == NULL)
    return;
  if (!json_is_array (map)) {
    problem (l, "\"storageMap\" must be an array");
    return;
  }
  json_array_foreach (map, i, e)
  {
    char where[64];
    struct storage_map_entry m = { 0 };
    CLEANUP_FREE char *kind = NULL;
    CLEANUP_FREE char *volume_mode = NULL;
    json_t *s = json_object_get (e, "source"), *d = json_object_get (e, "destination"), *v;

    snprintf (where, sizeof where, "storageMap[%zu]", i);
    if (!json_is_object (e) || !json_is_object (s) || !json_is_object (d)) {
      problem (l, "%s: needs \"source\" and \"destination\" objects", where);
      continue;
    }
    check_keys (l, e, where, keys);
    check_keys (l, s, where, src_keys);
    check_keys (l, d, where, dst_keys);
    m.datastore = get_string (l, s, where, "name", true);
    volume_mode = get_string (l, d, where, "volumeMode", false);
    kind = get_string (l, d, where, "kind", volume_mode == NULL);
    m.path = get_string (l, d, where, "path", true);
    if (kind && strcmp (kind, "block") == 0)
      m.kind = TARGET_BLOCK;
    else if (kind && strcmp (kind, "filesystem") != 0)
      problem (l, "%s: destination.kind \"%s\": expected filesystem or block", where, kind);
    /* Forklift's volumeMode says the same as kind; both given, they must agree. */
    if (volume_mode && strcmp (volume_mode, "Block") != 0 &&
        strcmp (volume_mode, "Filesystem") != 0)
      problem (l, "%s: destination.volumeMode \"%s\": expected Filesystem or Block", where,
               volume_mode);
    else if (volume_mode && kind &&
             (strcmp (volume_mode, "Block") == 0) != (m.kind == TARGET_BLOCK))
      problem (l, "%s: destination.volumeMode \"%s\" contradicts kind \"%s\"", where,
               volume_mode, kind);
    else if (volume_mode && strcmp (volume_mode, "Block") == 0)
      m.kind = TARGET_BLOCK;
    m.storage_class = get_string (l, d, where, "storageClass", false);
    m.access_mode = get_string (l, d, where, "accessMode", false);
    size_t k = 0;
    while (m.access_mode && access_modes[k] && strcmp (m.access_mode, access_modes[k]))
      k++;
    if (m.access_mode && access_modes[k] == NULL)
      problem (l,
               "%s: destination.accessMode \"%s\": expected ReadWriteOnce, "
               "ReadWriteMany, ReadOnlyMany or ReadWriteOncePod",
               where, m.access_mode);
    v = json_object_get (d, "filesystemOverhead");
    if (v &&
        (!json_is_number (v) || json_number_value (v) <= 0 || json_number_value (v) >= 1))
      problem (l,
               "%s: destination.filesystemOverhead must be a fraction above 0 and below 1 "
               "(CDI's: 0.055 is 5.5%%)",
               where);
    else if (v)
      m.fs_overhead = json_number_value (v);
    if (m.datastore == NULL || m.path == NULL ||
        storage_map_append (&p->storage, m) == -1) {
      free (m.datastore);
      free (m.path);
      free (m.storage_class);
      free (m.access_mode);
    }
  }
}

static void
load_network_map (struct loader *l, struct plan *p, json_t *map)
{
  static const char *const keys[] = { "source", "destination", NULL };
  static const char *const src_keys[] = { "id", "name", NULL };
  static const char *const dst_keys[] = { "type", "namespace", "name", NULL };
  size_t i;
  json_t *e;

  if (map == NULL)
    return;
  if (!json_is_array (map)) {
    problem (l, "\"networkMap\" must be an array");
    return;
  }
  json_array_foreach (map, i, e)
  {
    char where[64];
    struct network_map_entry m = { 0 };
    json_t *s = json_object_get (e, "source"), *d = json_object_get (e, "destination");

    snprintf (where, sizeof where, "networkMap[%zu]", i);
    if (!json_is_object (e) || !json_is_object (s) || !json_is_object (d)) {
      problem (l, "%s: needs \"source\" and \"destination\" objects", where);
      continue;
    }
    check_keys (l, e, where, keys);
    check_keys (l, s, where, src_keys);
    check_keys (l, d, where, dst_keys);
    m.source_id = get_string (l, s, where, "id", false);
    m.source_name = get_string (l, s, where, "name", false);
    m.type = get_string (l, d, where, "type", true);
    m.namespace = get_string (l, d, where, "namespace", false);
    m.name = get_string (l, d, where, "name", false);
    if (m.source_id == NULL && m.source_name == NULL)
      problem (l, "%s: source needs \"id\" (the network's moref) or \"name\"", where);
    if (m.type && strcmp (m.type, "pod") != 0 && strcmp (m.type, "multus") != 0 &&
        strcmp (m.type, "ignored") != 0)
      problem (l, "%s: destination.type \"%s\": expected pod, multus or ignored", where,
               m.type);
    if (m.type && strcmp (m.type, "multus") == 0 && (m.name == NULL || m.namespace == NULL))
      problem (l,
               "%s: a multus destination needs \"namespace\" and \"name\" (its "
               "NetworkAttachmentDefinition)",
               where);
    if (network_map_append (&p->networks, m) == -1) {
      free (m.source_id);
      free (m.source_name);
      free (m.type);
      free (m.namespace);
      free (m.name);
    }
  }
}

static void
load_vms (struct loader *l, struct plan *p, json_t *vms)
{
  static const char *const keys[] = { "name", "id", "targetName", "targets", NULL };
  size_t i;
  json_t *e;

  if (!json_is_array (vms) || json_array_size (vms) == 0) {
    problem (l, "\"vms\" is required: a non-empty array of {\"name\"} or {\"id\"}");
    return;
  }
  json_array_foreach (vms, i, e)
  {
    char where[64];
    struct plan_vm vm = { 0 };
    json_t *targets;

    snprintf (where, sizeof where, "vms[%zu]", i);
    if (!json_is_object (e)) {
      problem (l, "%s: must be an object", where);
      continue;
    }
    check_keys (l, e, where, keys);
    vm.name = get_string (l, e, where, "name", false);
    vm.id = get_string (l, e, where, "id", false);
    vm.target_name = get_string (l, e, where, "targetName", false);
    if (vm.name == NULL && vm.id == NULL)
      problem (l, "%s: give \"name\" or \"id\"", where);
    if (vm.target_name == NULL)
      vm.target_name = strdup (vm.name ? vm.name : vm.id ? vm.id : "?");
    targets = json_object_get (e, "targets");
    if (targets && !json_is_object (targets))
      problem (l, "%s: \"targets\" must map device keys or indexes to paths", where);
    else if (targets) {
      const char *key;
      json_t *v;
      json_object_foreach (targets, key, v)
      {
        struct target_override o = { strdup (key), NULL };
        if (!json_is_string (v))
          problem (l, "%s: targets.%s must be a path", where, key);
        else
          o.path = strdup (json_string_value (v));
        if (o.path == NULL || override_vector_append (&vm.targets, o) == -1) {
          free (o.disk);
          free (o.path);
        }
      }
    }
    for (size_t j = 0; j < p->vms.len; j++) {
      const struct plan_vm *o = &p->vms.ptr[j];
      if ((vm.name && o->name && strcmp (vm.name, o->name) == 0) ||
          (vm.id && o->id && strcmp (vm.id, o->id) == 0))
        problem (l, "%s: VM \"%s\" is in the plan twice (vms[%zu])", where,
                 vm.name ? vm.name : vm.id, j);
      else if (strcmp (vm.target_name, o->target_name) == 0)
        problem (l, "%s: target name \"%s\" is used twice (vms[%zu])", where,
                 vm.target_name, j);
    }
    if (plan_vm_vector_append (&p->vms, vm) == -1)
      problem (l, "%s: out of memory", where);
  }
}

struct plan *
plan_load (const char *path)
{
  static const char *const keys[] = { "name",
                                      "source",
                                      "warm",
                                      "precopyIntervalSeconds",
                                      "cutover",
                                      "maxInFlightPerHost",
                                      "maxInFlightPerDatastore",
                                      "connectionsPerDisk",
                                      "verifySamplePercent",
                                      "shutdownTimeoutSeconds",
                                      "enableCBT",
                                      "skipGuestConversion",
                                      "preflightInspection",
                                      "stateDir",
                                      "storageMap",
                                      "vms",
                                      "type",
                                      "networkMap",
                                      NULL };
  struct loader l = { .file = path };
  struct plan *p = calloc (1, sizeof *p);
  json_error_t err;
  json_t *root, *v;
  CLEANUP_FREE char *cutover = NULL, *type = NULL;

  if (p == NULL)
    return NULL;
  p->path = strdup (path);
  root = json_load_file (path, JSON_REJECT_DUPLICATES, &err);
  if (root == NULL) {
    log_error ("%s:%d:%d: %s", path, err.line, err.column, err.text);
    plan_free (p);
    return NULL;
  }
  if (!json_is_object (root)) {
    problem (&l, "the plan must be a JSON object");
    goto out;
  }
  check_keys (&l, root, "plan", keys);
  p->name = get_string (&l, root, "plan", "name", true);
  load_source (&l, p, json_object_get (root, "source"));
  p->warm = get_bool (&l, root, "plan", "warm", false);
  p->precopy_interval =
      get_unsigned (&l, root, "plan", "precopyIntervalSeconds", 3600, 1, 86400 * 7);
  cutover = get_string (&l, root, "plan", "cutover", false);
  if (cutover) {
    p->has_cutover = true;
    if (plan_parse_time (cutover, &p->cutover) == -1)
      problem (&l,
               "plan: cutover \"%s\": expected an RFC 3339 time such as "
               "2026-12-01T02:00:00+01:00",
               cutover);
  }
  p->max_per_host = get_unsigned (&l, root, "plan", "maxInFlightPerHost", 4, 1, 1024);
  p->max_per_datastore =
      get_unsigned (&l, root, "plan", "maxInFlightPerDatastore", 2, 1, 1024);
  p->connections_per_disk = get_unsigned (&l, root, "plan", "connectionsPerDisk", 4, 1, 64);
  v = json_object_get (root, "verifySamplePercent");
  p->verify_sample_percent = 1;
  if (v &&
      (!json_is_number (v) || json_number_value (v) < 0 || json_number_value (v) > 100))
    problem (&l, "plan: \"verifySamplePercent\" must be a number from 0 to 100");
  else if (v)
    p->verify_sample_percent = json_number_value (v);
  p->shutdown_timeout =
      get_unsigned (&l, root, "plan", "shutdownTimeoutSeconds", 300, 0, 86400);
  p->enable_cbt = get_bool (&l, root, "plan", "enableCBT", false);
  p->skip_guest_conversion = get_bool (&l, root, "plan", "skipGuestConversion", false);
  p->preflight_inspection = get_bool (&l, root, "plan", "preflightInspection", true);
  p->state_dir = get_string (&l, root, "plan", "stateDir", true);
  load_storage_map (&l, p, json_object_get (root, "storageMap"));
  load_vms (&l, p, json_object_get (root, "vms"));
  load_network_map (&l, p, json_object_get (root, "networkMap"));
  type = get_string (&l, root, "plan", "type", false);
  if (type) { /* Forklift's: supersedes "warm" */
    json_t *warm = json_object_get (root, "warm");
    bool want_warm = strcmp (type, "warm") == 0;
    if (strcmp (type, "cold") != 0 && !want_warm && strcmp (type, "conversion") != 0)
      problem (&l, "plan: type \"%s\": expected cold, warm or conversion", type);
    else if (json_is_boolean (warm) && json_is_true (warm) != want_warm)
      problem (&l, "plan: type \"%s\" contradicts \"warm\": %s", type,
               json_is_true (warm) ? "true" : "false");
    p->warm = want_warm;
    p->conversion_only = strcmp (type, "conversion") == 0;
    if (p->conversion_only && p->skip_guest_conversion)
      problem (&l, "plan: type \"conversion\" converts the guest: it cannot have "
                   "\"skipGuestConversion\": true");
  }

out:
  json_decref (root);
  if (l.errors) {
    plan_free (p);
    return NULL;
  }
  return p;
}

void
plan_free (struct plan *p)
{
  if (p == NULL)
    return;
  free (p->path);
  free (p->name);
  free (p->source_type);
  free (p->url);
  free (p->server);
  free (p->secret_dir);
  free (p->datacenter);
  free (p->user);
  if (p->password) {
    explicit_bzero (p->password, strlen (p->password));
    free (p->password);
  }
  free (p->cacert);
  free (p->thumbprint);
  free (p->state_dir);
  for (size_t i = 0; i < p->storage.len; i++) {
    free (p->storage.ptr[i].datastore);
    free (p->storage.ptr[i].path);
    free (p->storage.ptr[i].storage_class);
    free (p->storage.ptr[i].access_mode);
  }
  storage_map_reset (&p->storage);
  for (size_t i = 0; i < p->vms.len; i++) {
    struct plan_vm *vm = &p->vms.ptr[i];
    free (vm->name);
    free (vm->id);
    free (vm->target_name);
    for (size_t j = 0; j < vm->targets.len; j++) {
      free (vm->targets.ptr[j].disk);
      free (vm->targets.ptr[j].path);
    }
    override_vector_reset (&vm->targets);
  }
  plan_vm_vector_reset (&p->vms);
  for (size_t i = 0; i < p->networks.len; i++) {
    free (p->networks.ptr[i].source_id);
    free (p->networks.ptr[i].source_name);
    free (p->networks.ptr[i].type);
    free (p->networks.ptr[i].namespace);
    free (p->networks.ptr[i].name);
  }
  network_map_reset (&p->networks);
  free (p);
}

struct source_config
plan_source_config (const struct plan *p, const struct plan_vm *vm)
{
  bool ovirt = strcmp (p->source_type, "ovirt") == 0; /* the rhv provider, url= */

  return (struct source_config){
    .provider = ovirt ? "rhv" : p->source_type,
    .server = ovirt ? NULL : p->server,
    .url = ovirt ? p->url : NULL,
    .user = p->user,
    .password = p->password,
    .vm = vm->id ? vm->id : vm->name,
    .datacenter = p->datacenter,
    .cacert = p->cacert,
    .thumbprint = ovirt ? NULL : p->thumbprint,
    .sslverify = !p->insecure,
    /* One session per VM whose disks are read in parallel: room for each of them. */
    .connections = p->connections_per_disk * p->max_per_host > 64
                       ? 64
                       : p->connections_per_disk * p->max_per_host,
    .timeouts = p->timeouts,
  };
}

const struct storage_map_entry *
plan_storage_for (const struct plan *p, const char *datastore)
{
  for (size_t i = 0; datastore && i < p->storage.len; i++)
    if (strcmp (p->storage.ptr[i].datastore, datastore) == 0)
      return &p->storage.ptr[i];
  return NULL;
}

const char *
plan_vm_label (const struct plan_vm *vm)
{
  return vm->target_name;
}

/* TEMPLATE with {vm}, {index} and {key} replaced. */
static char *
expand (const char *template, const char *vm, size_t index, const char *key)
{
  char *buf = NULL;
  size_t len = 0;
  FILE *fp = open_memstream (&buf, &len);

  if (fp == NULL)
    return NULL;
  for (const char *s = template; *s; s++) {
    if (strncmp (s, "{vm}", 4) == 0)
      fputs (vm, fp), s += 3;
    else if (strncmp (s, "{index}", 7) == 0)
      fprintf (fp, "%zu", index), s += 6;
    else if (strncmp (s, "{key}", 5) == 0)
      fputs (key, fp), s += 4;
    else
      fputc (*s, fp);
  }
  fclose (fp);
  return buf;
}

int
plan_resolve_target (const struct plan *p, const struct plan_vm *vm, size_t index,
                     const char *key, const char *datastore, char **path,
                     enum target_kind *kind, char **why)
{
  char idx[32];
  const char *dir = NULL;
  CLEANUP_FREE char *expanded = NULL;
  struct stat st;

  *path = *why = NULL;
  snprintf (idx, sizeof idx, "%zu", index);
  for (size_t i = 0; i < vm->targets.len; i++)
    if (strcmp (vm->targets.ptr[i].disk, key) == 0 ||
        strcmp (vm->targets.ptr[i].disk, idx) == 0) {
      dir = vm->targets.ptr[i].path;
      *kind =
          stat (dir, &st) == 0 && S_ISBLK (st.st_mode) ? TARGET_BLOCK : TARGET_FILESYSTEM;
    }
  for (size_t i = 0; dir == NULL && i < p->storage.len; i++)
    if (strcmp (p->storage.ptr[i].datastore, datastore) == 0) {
      dir = expanded = expand (p->storage.ptr[i].path, vm->target_name, index, key);
      *kind = p->storage.ptr[i].kind;
      if (expanded == NULL)
        return -1;
    }
  if (dir == NULL) {
    if (asprintf (why,
                  "disk %s is on datastore \"%s\", which the storageMap does not map "
                  "(and vms[].targets has no entry for %s or %zu)",
                  key, datastore, key, index) == -1)
      *why = NULL;
    return -1;
  }
  if (*kind == TARGET_BLOCK)
    *path = strdup (dir);
  else if (asprintf (path, "%s/disk.img", dir) == -1)
    *path = NULL;
  return *path ? 0 : -1;
}
