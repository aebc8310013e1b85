/* SPDX-License-Identifier: Apache-2.0 */
/* ferry: the VMDK text descriptor — may ferry read this disk as one raw file?
 *
 * ferry's source reads a disk "[ds] dir/name.vmdk" as the raw file dir/name-flat.vmdk,
 * guest offset = file offset.  That is only true when the descriptor has exactly one
 * extent, of type FLAT or VMFS, in that very file at offset 0, covering the capacity, with
 * no parent.  Everything else (snapshot deltas VMFSSPARSE/SESPARSE, vSAN and vVol objects,
 * raw device mappings, split disks) is refused with what the disk is, so that a consumer
 * never receives wrong bytes.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "vddk.h"

#define WHY(...)                                                                           \
  do {                                                                                     \
    if (asprintf (why, __VA_ARGS__) == -1)                                                 \
      *why = NULL;                                                                         \
    goto refuse;                                                                           \
  } while (0)

/* The quoted value of "key = \"value\"" in LINE when its key is KEY, malloc'd. */
static char *
value_of (const char *line, const char *key)
{
  size_t n = strlen (key);
  const char *p, *q;

  if (strncasecmp (line, key, n) != 0)
    return NULL;
  p = line + n;
  p += strspn (p, " \t");
  if (*p != '=')
    return NULL;
  p++;
  p += strspn (p, " \t");
  if (*p == '"') {
    p++;
    q = strchr (p, '"');
    if (q == NULL)
      q = p + strlen (p);
  } else
    q = p + strcspn (p, " \t\r");
  return strndup (p, q - p);
}

static int
adapter_from (const char *s)
{
  if (strcasecmp (s, "ide") == 0)
    return VIXDISKLIB_ADAPTER_IDE;
  if (strcasecmp (s, "buslogic") == 0)
    return VIXDISKLIB_ADAPTER_SCSI_BUSLOGIC;
  return VIXDISKLIB_ADAPTER_SCSI_LSILOGIC; /* lsilogic, lsisas1068, pvscsi */
}

int
vddk_check_descriptor (const char *descriptor, const char *vmdk_path, uint64_t capacity,
                       char **why, char **uuid, int *adapter)
{
  char *text = strdup (descriptor), *save = NULL, *line;
  const char *base = strrchr (vmdk_path, '/') ? strrchr (vmdk_path, '/') + 1 : vmdk_path;
  size_t blen = strlen (base);
  char flat[1024];
  unsigned extents = 0;

  *why = NULL;
  if (text == NULL) {
    *why = strdup ("out of memory");
    return -1;
  }
  if (blen > 5 && strcmp (base + blen - 5, ".vmdk") == 0)
    snprintf (flat, sizeof flat, "%.*s-flat.vmdk", (int)(blen - 5), base);
  else
    snprintf (flat, sizeof flat, "%s", base);
  if (strncmp (descriptor, "# Disk DescriptorFile", 21) != 0)
    WHY ("it is not a text VMDK descriptor (a monolithic sparse or stream-optimized "
         "VMDK?); ferry reads only flat VMFS/NFS disks");

  for (line = strtok_r (text, "\n", &save); line; line = strtok_r (NULL, "\n", &save)) {
    char access[16], type[32], file[1024], *v;
    uint64_t sectors, offset = 0;
    int n;

    line += strspn (line, " \t");
    if (*line == '#' || *line == '\0' || *line == '\r')
      continue;
    if ((v = value_of (line, "parentFileNameHint"))) {
      if (asprintf (why,
                    "it is a snapshot delta or linked clone (parent %s); ferry cannot "
                    "read delta chains yet",
                    v) == -1)
        *why = NULL;
      free (v);
      goto refuse;
    }
    if ((v = value_of (line, "parentCID"))) {
      bool has_parent = strcasecmp (v, "ffffffff") != 0;
      free (v);
      if (has_parent)
        WHY ("it has a parent disk (parentCID is set): a snapshot delta or linked clone; "
             "ferry cannot read delta chains yet");
      continue;
    }
    if ((v = value_of (line, "createType"))) {
      if (strcasestr (v, "RawDeviceMap")) {
        if (asprintf (why,
                      "it is a raw device mapping (createType %s); ferry reads only "
                      "flat disks",
                      v) == -1)
          *why = NULL;
        free (v);
        goto refuse;
      }
      free (v);
      continue;
    }
    if ((v = value_of (line, "ddb.uuid"))) {
      free (*uuid);
      *uuid = v;
      continue;
    }
    if ((v = value_of (line, "ddb.adapterType"))) {
      *adapter = adapter_from (v);
      free (v);
      continue;
    }
    n = sscanf (line, "%15s %" SCNu64 " %31s \"%1023[^\"]\" %" SCNu64, access, &sectors,
                type, file, &offset);
    if (n < 3 || (strcmp (access, "RW") != 0 && strcmp (access, "RDONLY") != 0 &&
                  strcmp (access, "NOACCESS") != 0))
      continue;
    extents++;
    if (strcasecmp (type, "VMFSSPARSE") == 0 || strcasecmp (type, "SESPARSE") == 0 ||
        strcasecmp (type, "SPARSE") == 0)
      WHY ("its extent is %s (a snapshot delta or sparse disk); ferry cannot read delta "
           "chains yet",
           type);
    if (strcasecmp (type, "VSANSPARSE") == 0 ||
        (n >= 4 && strncmp (file, "vsan://", 7) == 0))
      WHY ("it is a vSAN object (%s); ferry cannot read vSAN disks through /folder", type);
    if (n >= 4 && strncmp (file, "vvol://", 7) == 0)
      WHY ("it is a vVol (%s); ferry cannot read vVol disks through /folder", file);
    if (strcasecmp (type, "VMFSRDM") == 0 || strcasecmp (type, "VMFSRAW") == 0)
      WHY ("it is a raw device mapping (%s); ferry reads only flat disks", type);
    if (strcasecmp (type, "FLAT") != 0 && strcasecmp (type, "VMFS") != 0)
      WHY ("its extent type %s is not supported; ferry reads only FLAT/VMFS extents", type);
    if (n < 4 || strcmp (file, flat) != 0)
      WHY ("its extent is in \"%s\", not \"%s\"; ferry reads only <name>-flat.vmdk",
           n >= 4 ? file : "", flat);
    if (offset != 0)
      WHY ("its extent starts at sector %" PRIu64 " of %s; ferry reads only extents at 0",
           offset, file);
    if (sectors * VIXDISKLIB_SECTOR_SIZE != capacity)
      WHY ("its extent has %" PRIu64 " sectors (%" PRIu64 " bytes) but the VM's "
           "configuration says %" PRIu64 " bytes",
           sectors, sectors * VIXDISKLIB_SECTOR_SIZE, capacity);
  }
  if (extents == 0)
    WHY ("the descriptor lists no extent");
  if (extents > 1)
    WHY ("it is split into %u extents; ferry reads only single-extent flat disks", extents);
  free (text);
  return 0;

refuse:
  free (text);
  if (*why == NULL)
    *why = strdup ("out of memory");
  return -1;
}
