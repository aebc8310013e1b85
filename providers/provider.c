/* SPDX-License-Identifier: Apache-2.0 */
/* ferry: helpers shared by the providers (see provider.h). */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "provider.h"

void
provider_disk_free (struct provider_disk *disk)
{
  free (disk->key);
  free (disk->label);
  free (disk->file_name);
  free (disk->datastore);
  free (disk->uuid);
  free (disk->change_id);
  free (disk->export_name);
  memset (disk, 0, sizeof *disk);
}

void
disk_vector_free (disk_vector *disks)
{
  for (size_t i = 0; i < disks->len; i++)
    provider_disk_free (&disks->ptr[i]);
  disk_vector_reset (disks);
}

int
extent_append_merge (extent_vector *v, uint64_t offset, uint64_t length)
{
  if (length == 0)
    return 0;
  if (v->len > 0) {
    struct extent *last = &v->ptr[v->len - 1];
    if (last->offset + last->length >= offset) {
      uint64_t end = offset + length;
      if (end > last->offset + last->length)
        last->length = end - last->offset;
      return 0;
    }
  }
  return extent_vector_append (v, (struct extent){ .offset = offset, .length = length });
}

char *
provider_export_name (const char *key, const char *label)
{
  size_t n = strlen (key) + (label ? strlen (label) : 0) + 2;
  char *out = malloc (n), *p = out;

  if (out == NULL)
    return NULL;
  for (const char *s = key; *s; s++)
    *p++ = *s;
  if (label && *label) {
    bool dash = true;
    *p++ = '-';
    for (const char *s = label; *s; s++) {
      unsigned char c = tolower ((unsigned char)*s);
      if (isalnum (c) || c == '.' || c == '_') {
        *p++ = c;
        dash = false;
      } else if (!dash) {
        *p++ = '-';
        dash = true;
      }
    }
    if (p > out && p[-1] == '-')
      p--;
  }
  *p = '\0';
  return out;
}
