/* SPDX-License-Identifier: Apache-2.0 */
/* ferry: datastore reads — ranged GETs of a disk's -flat.vmdk through /folder.
 *
 * The flat extent of "[ds] dir/name.vmdk" is dir/name-flat.vmdk, raw, offset = guest
 * offset.  The path is percent-encoded with its slashes kept; dcPath and dsName are
 * encoded as query values, so names with spaces, brackets, '&' or '#' reach the server
 * intact.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/cleanup.h"
#include "common/http.h"
#include "common/log.h"
#include "soap.h"

char *
vs_folder_url (const char *datastore, const char *path, const char *dc_path)
{
  CLEANUP_FREE char *flat = NULL;
  CLEANUP_FREE char *qpath = NULL, *qdc = NULL, *qds = NULL;
  size_t n = strlen (path);
  char *url = NULL;

  /* name.vmdk -> name-flat.vmdk */
  if (n > 5 && strcmp (path + n - 5, ".vmdk") == 0) {
    if (asprintf (&flat, "%.*s-flat.vmdk", (int)(n - 5), path) == -1)
      return NULL;
  } else if ((flat = strdup (path)) == NULL)
    return NULL;
  qpath = http_quote (flat, true);
  qdc = http_quote (dc_path, false);
  qds = http_quote (datastore, false);
  if (!qpath || !qdc || !qds ||
      asprintf (&url, "/folder/%s?dcPath=%s&dsName=%s", qpath, qdc, qds) == -1)
    return NULL;
  return url;
}

char *
vs_flat_path (const struct vs_vm *vm, const struct provider_disk *disk)
{
  CLEANUP_FREE char *ds = NULL, *path = NULL;
  char *url;

  if (vs_parse_file_name (disk->file_name, &ds, &path) == -1) {
    log_error ("%s disk %s: cannot parse the datastore path %s", vm->moref, disk->key,
               disk->file_name);
    return NULL;
  }
  url = vs_folder_url (ds, path, vm->dc_path);
  if (url == NULL)
    log_error ("%s disk %s: out of memory", vm->moref, disk->key);
  return url;
}

int
vs_read (struct vs_session *s, const char *flat_path, void *buf, size_t count,
         uint64_t offset)
{
  if (http_get_range (s->pool, flat_path, buf, count, offset) == -1)
    return -1;
  __atomic_add_fetch (&s->disk_reads, 1, __ATOMIC_RELAXED);
  __atomic_add_fetch (&s->disk_bytes, count, __ATOMIC_RELAXED);
  return 0;
}
