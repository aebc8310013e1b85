/* SPDX-License-Identifier: Apache-2.0 */
/* ferry: RHV answers — the engine's JSON, where every scalar is a string ("46137344",
 * "true"), its faults (JSON or XML), and imageio's /extents lists.  Pure functions, so the
 * unit tests need no server.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <libxml/parser.h>
#include <libxml/tree.h>

#include "common/cleanup.h"
#include "common/log.h"
#include "rhv.h"

const char *
rhv_json_str (json_t *obj, const char *key)
{
  json_t *v = json_object_get (obj, key);
  return json_is_string (v) ? json_string_value (v) : NULL;
}

int
rhv_json_u64 (json_t *obj, const char *key, uint64_t *out)
{
  json_t *v = json_object_get (obj, key);
  const char *s;
  char *end;
  unsigned long long n;

  if (json_is_integer (v) && json_integer_value (v) >= 0) {
    *out = json_integer_value (v);
    return 0;
  }
  if (!json_is_string (v))
    return -1;
  s = json_string_value (v);
  if (*s < '0' || *s > '9')
    return -1;
  errno = 0;
  n = strtoull (s, &end, 10);
  if (errno || *end != '\0')
    return -1;
  *out = n;
  return 0;
}

bool
rhv_json_bool (json_t *obj, const char *key, bool def)
{
  json_t *v = json_object_get (obj, key);

  if (json_is_boolean (v))
    return json_is_true (v);
  if (json_is_string (v)) {
    if (strcmp (json_string_value (v), "true") == 0)
      return true;
    if (strcmp (json_string_value (v), "false") == 0)
      return false;
  }
  return def;
}

json_t *
rhv_json_list (json_t *obj, const char *key, const char *item)
{
  static json_t *empty;
  json_t *v = json_object_get (obj, key);

  if (item && json_is_object (v))
    v = json_object_get (v, item);
  if (json_is_array (v))
    return v;
  if (empty == NULL) {
    json_t *e = json_array ();
    if (!__atomic_compare_exchange_n (&empty, &(json_t *){ NULL }, e, false,
                                      __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE))
      json_decref (e);
  }
  return empty;
}

static char *
join_fault (const char *reason, const char *detail)
{
  char *s;

  if (reason && detail && *detail) {
    if (asprintf (&s, "%s: %s", reason, detail) == -1)
      return NULL;
    return s;
  }
  return strdup (reason ? reason : detail);
}

/* <fault><reason>..</reason><detail>..</detail></fault> */
static char *
xml_fault (const char *body)
{
  xmlDoc *doc = xmlReadMemory (body, strlen (body), NULL, NULL,
                               XML_PARSE_NONET | XML_PARSE_NOERROR | XML_PARSE_NOWARNING);
  xmlNode *root;
  CLEANUP_FREE char *reason = NULL, *detail = NULL;

  if (doc == NULL)
    return NULL;
  root = xmlDocGetRootElement (doc);
  for (xmlNode *n = root ? root->children : NULL; n; n = n->next) {
    if (n->type != XML_ELEMENT_NODE)
      continue;
    if (strcmp ((const char *)n->name, "reason") == 0 && reason == NULL)
      reason = (char *)xmlNodeGetContent (n);
    else if (strcmp ((const char *)n->name, "detail") == 0 && detail == NULL)
      detail = (char *)xmlNodeGetContent (n);
  }
  xmlFreeDoc (doc);
  if (reason == NULL && detail == NULL)
    return NULL;
  return join_fault (reason, detail);
}

char *
rhv_fault_message (const char *body)
{
  json_t *j;
  char *s = NULL;

  if (body == NULL || *body == '\0')
    return strdup ("(no message)");
  j = json_loads (body, JSON_DECODE_ANY, NULL);
  if (json_is_object (j)) {
    const char *reason = rhv_json_str (j, "reason"), *detail = rhv_json_str (j, "detail");
    const char *err = rhv_json_str (j, "error"),
               *desc = rhv_json_str (j, "error_description");
    if (reason || detail)
      s = join_fault (reason, detail);
    else if (err || desc)
      s = strdup (desc ? desc : err);
  }
  json_decref (j);
  if (s == NULL && body[0] == '<')
    s = xml_fault (body);
  if (s == NULL)
    s = strndup (body, strcspn (body, "\r\n"));
  return s;
}

static char *
dup_str (json_t *obj, const char *key)
{
  const char *s = rhv_json_str (obj, key);
  return s ? strdup (s) : NULL;
}

void
rhv_disk_free (struct rhv_disk *d)
{
  free (d->id);
  free (d->alias);
  free (d->format);
  free (d->status);
  free (d->storage_type);
  free (d->backup);
  free (d->storage_domain);
  free (d->interface);
  memset (d, 0, sizeof *d);
}

void
rhv_vm_free (struct rhv_vm *vm)
{
  free (vm->id);
  free (vm->name);
  free (vm->status);
  free (vm->host);
  for (size_t i = 0; i < vm->disks.len; i++)
    rhv_disk_free (&vm->disks.ptr[i]);
  rhv_disk_vector_reset (&vm->disks);
  memset (vm, 0, sizeof *vm);
}

int
rhv_parse_disk (json_t *disk, struct rhv_disk *d)
{
  json_t *sds = rhv_json_list (disk, "storage_domains", "storage_domain");

  memset (d, 0, sizeof *d);
  d->id = dup_str (disk, "id");
  if (d->id == NULL) {
    log_error ("disk: the engine's answer has no id");
    return -1;
  }
  if (rhv_json_u64 (disk, "provisioned_size", &d->provisioned_size) == -1) {
    log_error ("disk %s: the engine's answer has no provisioned_size", d->id);
    rhv_disk_free (d);
    return -1;
  }
  if (rhv_json_u64 (disk, "actual_size", &d->actual_size) == -1)
    d->actual_size = 0;
  d->alias = dup_str (disk, "alias");
  if (d->alias == NULL)
    d->alias = dup_str (disk, "name");
  d->format = dup_str (disk, "format");
  d->status = dup_str (disk, "status");
  d->storage_type = dup_str (disk, "storage_type");
  d->backup = dup_str (disk, "backup");
  if (json_array_size (sds) > 0)
    d->storage_domain = dup_str (json_array_get (sds, 0), "id");
  return 0;
}

int
rhv_parse_vm (json_t *vm, struct rhv_vm *out)
{
  json_t *atts = rhv_json_list (vm, "disk_attachments", "disk_attachment");
  size_t i;
  json_t *att;

  memset (out, 0, sizeof *out);
  out->id = dup_str (vm, "id");
  out->name = dup_str (vm, "name");
  out->status = dup_str (vm, "status");
  out->host = dup_str (json_object_get (vm, "host"), "id");
  if (out->id == NULL || out->status == NULL) {
    log_error ("vm %s: the engine's answer has no id or status",
               out->name ? out->name : "?");
    rhv_vm_free (out);
    return -1;
  }
  json_array_foreach (atts, i, att)
  {
    struct rhv_disk d;
    json_t *disk = json_object_get (att, "disk");

    if (!rhv_json_bool (att, "active", true))
      continue; /* deactivated: not part of the VM's storage now */
    if (json_object_get (disk, "provisioned_size") == NULL) {
      log_error ("vm %s (%s): disk attachment %s: the disk's details are missing "
                 "(the engine did not follow disk_attachments.disk)",
                 out->id, out->name ? out->name : "?",
                 rhv_json_str (att, "id") ? rhv_json_str (att, "id") : "?");
      rhv_vm_free (out);
      return -1;
    }
    if (rhv_parse_disk (disk, &d) == -1) {
      rhv_vm_free (out);
      return -1;
    }
    d.bootable = rhv_json_bool (att, "bootable", false);
    d.interface = dup_str (att, "interface");
    if (rhv_disk_vector_append (&out->disks, d) == -1) {
      log_error ("vm %s: out of memory", out->id);
      rhv_disk_free (&d);
      rhv_vm_free (out);
      return -1;
    }
  }
  return 0;
}

int
rhv_parse_extents (const char *body, rhv_extent_vector *out, char **why)
{
  json_error_t err;
  json_t *j = json_loads (body, 0, &err), *e;
  uint64_t pos = 0;
  size_t i;
  int r = -1;

  *why = NULL;
  out->len = 0;
  if (!json_is_array (j)) {
    if (asprintf (why, "not a JSON array of extents (%s)", j ? "" : err.text) == -1)
      *why = NULL;
    goto out;
  }
  json_array_foreach (j, i, e)
  {
    struct rhv_extent x = { 0 };
    if (rhv_json_u64 (e, "start", &x.start) == -1 ||
        rhv_json_u64 (e, "length", &x.length) == -1) {
      if (asprintf (why, "extent %zu has no start or length", i) == -1)
        *why = NULL;
      goto out;
    }
    if (x.start != pos) {
      if (asprintf (why, "extent %zu starts at %" PRIu64 ", expected %" PRIu64, i, x.start,
                    pos) == -1)
        *why = NULL;
      goto out;
    }
    x.zero = rhv_json_bool (e, "zero", false);
    x.hole = rhv_json_bool (e, "hole", false);
    x.dirty = rhv_json_bool (e, "dirty", false);
    if (rhv_extent_vector_append (out, x) == -1) {
      *why = strdup ("out of memory");
      goto out;
    }
    pos += x.length;
  }
  r = 0;
out:
  json_decref (j);
  return r;
}

int
rhv_parse_url (const char *url, char **base, char **api, char **sso, char **logout)
{
  const char *host, *path;
  size_t plen;

  *base = *api = *sso = *logout = NULL;
  if (strncmp (url, "https://", 8) != 0 && strncmp (url, "http://", 7) != 0)
    return -1;
  host = strstr (url, "://") + 3;
  path = strchr (host, '/');
  if (path == NULL || path == host)
    return -1;
  plen = strlen (path);
  while (plen > 1 && path[plen - 1] == '/')
    plen--;
  if (plen < 4 || strncmp (path + plen - 4, "/api", 4) != 0)
    return -1;
  *base = strndup (url, path - url);
  *api = strndup (path, plen);
  if (asprintf (sso, "%.*s/sso/oauth/token", (int)(plen - 4), path) == -1)
    *sso = NULL;
  if (asprintf (logout, "%.*s/services/sso-logout", (int)(plen - 4), path) == -1)
    *logout = NULL;
  if (*base && *api && *sso && *logout)
    return 0;
  free (*base);
  free (*api);
  free (*sso);
  free (*logout);
  *base = *api = *sso = *logout = NULL;
  return -1;
}
