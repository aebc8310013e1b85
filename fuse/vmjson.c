/* SPDX-License-Identifier: Apache-2.0 */
/* ferryfs: vm.json and the names of the disk files.
 *
 * With the ferry plugin, vm.json is the document the plugin wrote at start-up (vm-json=),
 * served as it is, plus the one thing only ferryfs knows: each disk's "file" under disks/.
 * With any other NBD server it is synthesised from what NBD tells: export names, sizes and
 * descriptions, with "source": {"provider": "nbd", "uris": [...]}.
 *
 * Disk files are named from the source: the device label ("Hard disk 1" -> hard-disk-1)
 * when the plugin described the disk, else the export name, else the description, else
 * diskN; made safe (letters, digits, '.', '_', '+', '-') and unique.
 */
#include <ctype.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "common/cleanup.h"
#include "common/log.h"

#include "ferryfs.h"

/* A file name made of S's safe characters, lower case, runs of others as one '-'. */
static char *
safe_name (const char *s)
{
  size_t len = s ? strlen (s) : 0, i, j = 0;
  char *out = malloc (len + 1);

  if (out == NULL)
    return NULL;
  for (i = 0; i < len && j < 200; i++) {
    unsigned char c = s[i];

    if (isalnum (c) || c == '.' || c == '_' || c == '+' || c == '-')
      out[j++] = tolower (c);
    else if (j > 0 && out[j - 1] != '-')
      out[j++] = '-';
  }
  while (j > 0 && out[j - 1] == '-')
    j--;
  out[j] = '\0';
  /* Hidden or special names are not wanted. */
  while (out[0] == '.' || out[0] == '-')
    memmove (out, out + 1, strlen (out));
  if (out[0] == '\0') {
    free (out);
    return NULL;
  }
  return out;
}

static bool
name_taken (const struct vm *vm, size_t upto, const char *name)
{
  for (size_t i = 0; i < upto; i++)
    if (vm->disks[i].file && strcmp (vm->disks[i].file, name) == 0)
      return true;
  return false;
}

/* Names disk I from CANDIDATE (may be NULL) and makes the name unique (NAME-2, ...). */
static int
name_disk (struct vm *vm, size_t i, const char *candidate)
{
  CLEANUP_FREE char *base = safe_name (candidate);
  char *name;
  int n;

  if (base == NULL && asprintf (&base, "disk%zu", i) == -1)
    return -1;
  name = strdup (base);
  for (n = 2; name != NULL && name_taken (vm, i, name); n++) {
    free (name);
    if (asprintf (&name, "%s-%d", base, n) == -1)
      name = NULL;
  }
  if (name == NULL)
    return -1;
  vm->disks[i].file = name;
  return 0;
}

/* The plugin's disk entry for an export, or NULL. */
static json_t *
plugin_disk (json_t *doc, const char *export_name)
{
  json_t *disks = json_object_get (doc, "disks"), *d;
  size_t i;

  json_array_foreach (disks, i, d)
  {
    const char *e = json_string_value (json_object_get (d, "export"));

    if (e && strcmp (e, export_name) == 0)
      return d;
  }
  /* The default export of a one-disk server is that disk. */
  if (export_name[0] == '\0' && json_array_size (disks) == 1)
    return json_array_get (disks, 0);
  return NULL;
}

static json_t *
synthesise (struct vm *vm, char *const *uris, size_t nr_uris)
{
  json_t *doc, *disks = json_array (), *src_uris = json_array ();
  size_t i;

  for (i = 0; i < vm->nr_disks; i++) {
    struct disk *d = &vm->disks[i];
    const char *desc = pool_description (d->pool);

    json_array_append_new (disks, json_pack ("{s:s, s:s, s:I, s:n, s:n, s:s?, s:s}",
                                             "export", d->export_name, "file", d->file,
                                             "capacity", (json_int_t)pool_size (d->pool),
                                             "allocated", "changeId", "description",
                                             desc[0] ? desc : NULL, "uri", d->uri));
  }
  for (i = 0; i < nr_uris; i++)
    json_array_append_new (src_uris, json_string (uris[i]));
  doc = json_pack ("{s:n, s:n, s:o, s:[], s:{s:s, s:o}}", "name", "snapshot", "disks",
                   disks, "nics", "source", "provider", "nbd", "uris", src_uris);
  return doc;
}

int
vm_describe (struct vm *vm, const char *plugin_json, char *const *uris, size_t nr_uris)
{
  json_t *doc = NULL;
  json_error_t jerr;
  size_t i;

  if (plugin_json != NULL) {
    doc = json_load_file (plugin_json, 0, &jerr);
    if (doc == NULL || !json_is_object (doc)) {
      log_error ("%s: %s (line %d): the plugin's vm.json is not usable", plugin_json,
                 jerr.text, jerr.line);
      json_decref (doc);
      doc = NULL;
    }
  }

  for (i = 0; i < vm->nr_disks; i++) {
    struct disk *d = &vm->disks[i];
    json_t *pd = doc ? plugin_disk (doc, d->export_name) : NULL;
    const char *candidate = NULL;

    if (pd)
      candidate = json_string_value (json_object_get (pd, "label"));
    if (candidate == NULL && d->export_name[0])
      candidate = d->export_name;
    if (candidate == NULL && pool_description (d->pool)[0])
      candidate = pool_description (d->pool);
    if (name_disk (vm, i, candidate) == -1)
      goto err;
    if (pd)
      json_object_set_new (pd, "file", json_string (d->file));
  }

  if (doc == NULL)
    doc = synthesise (vm, uris, nr_uris);
  if (doc == NULL)
    goto err;
  vm->vm_json = json_dumps (doc, JSON_INDENT (2) | JSON_PRESERVE_ORDER);
  json_decref (doc);
  if (vm->vm_json == NULL)
    goto err;
  vm->vm_json_len = strlen (vm->vm_json);
  /* End with a newline, as text files do. */
  {
    char *nl = realloc (vm->vm_json, vm->vm_json_len + 2);

    if (nl == NULL)
      goto err;
    nl[vm->vm_json_len++] = '\n';
    nl[vm->vm_json_len] = '\0';
    vm->vm_json = nl;
  }
  return 0;

err:
  log_error ("vm.json: out of memory");
  return -1;
}
