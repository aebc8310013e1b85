/* SPDX-License-Identifier: Apache-2.0 */
/* ferry: RHV inventory — a VM by id or name with its disk attachments and disks, in one
 * call each (?follow=disk_attachments.disk).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "common/cleanup.h"
#include "common/http.h"
#include "common/log.h"
#include "rhv.h"

#define FOLLOW "follow=disk_attachments.disk"

/* 8-4-4-4-12 hex digits. */
static bool
is_uuid (const char *s)
{
  static const char shape[] = "xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx";

  if (strlen (s) != sizeof shape - 1)
    return false;
  for (size_t i = 0; shape[i]; i++)
    if (shape[i] == '-' ? s[i] != '-' : strchr ("0123456789abcdefABCDEF", s[i]) == NULL)
      return false;
  return true;
}

int
rhv_find_vm (struct rhv_engine *e, const char *which, struct rhv_vm *vm)
{
  CLEANUP_FREE char *path = NULL, *q = NULL, *fault = NULL;
  json_t *j = NULL, *list;
  long status;
  int r;

  if (is_uuid (which)) {
    if (asprintf (&path, "/vms/%s?" FOLLOW, which) == -1)
      goto nomem;
    status = rhv_call (e, "GET", path, NULL, &j, &fault);
    if (status == -1)
      return -1;
    if (status == 200) {
      r = rhv_parse_vm (j, vm);
      json_decref (j);
      return r;
    }
    if (status != 404) {
      log_error ("vm %s: GET /vms/%s: HTTP %ld: %s", which, which, status,
                 fault ? fault : "?");
      return -1;
    }
    free (path);
    path = NULL; /* not an id: perhaps a name that looks like one */
  }
  {
    CLEANUP_FREE char *expr = NULL;
    if (asprintf (&expr, "name=%s", which) == -1 ||
        (q = http_quote (expr, false)) == NULL ||
        asprintf (&path, "/vms?search=%s&case_sensitive=true&" FOLLOW, q) == -1)
      goto nomem;
  }
  if (rhv_call_ok (e, which, "GET", path, NULL, &j) == -1)
    return -1;
  list = rhv_json_list (j, "vm", NULL);
  if (json_array_size (list) != 1) {
    if (json_array_size (list) == 0)
      log_error ("vm %s: %s has no VM with this id or name", which, rhv_engine_url (e));
    else
      log_error ("vm %s: %zu VMs have this name; give the VM's id instead", which,
                 json_array_size (list));
    json_decref (j);
    return -1;
  }
  r = rhv_parse_vm (json_array_get (list, 0), vm);
  json_decref (j);
  return r;

nomem:
  log_error ("vm %s: out of memory", which);
  return -1;
}

int
rhv_vm_status (struct rhv_engine *e, struct rhv_vm *vm)
{
  CLEANUP_FREE char *path = NULL;
  json_t *j;
  const char *status;
  char what[256];

  snprintf (what, sizeof what, "vm %s (%s)", vm->id, vm->name ? vm->name : "?");
  if (asprintf (&path, "/vms/%s", vm->id) == -1)
    return -1;
  if (rhv_call_ok (e, what, "GET", path, NULL, &j) == -1)
    return -1;
  status = rhv_json_str (j, "status");
  if (status) {
    free (vm->status);
    vm->status = strdup (status);
  }
  json_decref (j);
  return status && vm->status ? 0 : -1;
}

char *
rhv_storage_domain_name (struct rhv_engine *e, const char *sd)
{
  CLEANUP_FREE char *path = NULL;
  json_t *j = NULL;
  char *name = NULL;

  if (asprintf (&path, "/storagedomains/%s", sd) == -1)
    return NULL;
  if (rhv_call (e, "GET", path, NULL, &j, NULL) == 200 && rhv_json_str (j, "name"))
    name = strdup (rhv_json_str (j, "name"));
  json_decref (j);
  return name;
}

int
rhv_disk_snapshot (struct rhv_engine *e, const char *disk_id, const char *snapshot,
                   const char *what, char **out)
{
  CLEANUP_FREE char *path = NULL;
  json_t *j = NULL, *list, *ds;
  size_t i;

  *out = NULL;
  if (asprintf (&path, "/disks/%s/disksnapshots", disk_id) == -1)
    return -1;
  if (rhv_call_ok (e, what, "GET", path, NULL, &j) == -1)
    return -1;
  list = rhv_json_list (j, "disk_snapshot", NULL);
  json_array_foreach (list, i, ds)
  {
    const char *id = rhv_json_str (ds, "id");
    const char *vm_snap = rhv_json_str (json_object_get (ds, "snapshot"), "id");
    if (id &&
        (strcmp (id, snapshot) == 0 || (vm_snap && strcmp (vm_snap, snapshot) == 0))) {
      *out = strdup (id);
      break;
    }
  }
  json_decref (j);
  if (i < json_array_size (list) && *out == NULL) {
    log_error ("%s: out of memory", what);
    return -1;
  }
  return *out != NULL;
}
