/* SPDX-License-Identifier: Apache-2.0 */
/* ferry: changed block tracking — QueryChangedDiskAreas and changeIds.
 *
 * The server answers for a window [startOffset, startOffset+length) at a time, with at
 * most some number of areas.  An empty window is not the end: we loop with
 * startOffset = startOffset + length until the capacity (CDI once corrupted disks by
 * applying only the first window).
 */
#include <ctype.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/cleanup.h"
#include "common/log.h"
#include "soap.h"

int
vs_parse_change_id (const char *change_id, char *uuid, size_t uuid_len, uint64_t *seq)
{
  const char *slash = strrchr (change_id, '/');
  size_t n, hex = 0;
  char *end;

  if (slash == NULL || slash == change_id || slash[1] == '\0')
    return -1;
  n = slash - change_id;
  for (size_t i = 0; i < n; i++) {
    char c = change_id[i];
    if (isxdigit ((unsigned char)c))
      hex++;
    else if (c != ' ' && c != '-')
      return -1;
  }
  if (hex != 32 || n >= uuid_len)
    return -1;
  for (const char *p = slash + 1; *p; p++)
    if (!isdigit ((unsigned char)*p))
      return -1;
  *seq = strtoull (slash + 1, &end, 10);
  memcpy (uuid, change_id, n);
  uuid[n] = '\0';
  return 0;
}

int
vs_query_changed (struct vs_session *s, const struct vs_vm *vm, const char *snap,
                  const struct provider_disk *disk, const char *change_id,
                  extent_vector *areas, struct vs_fault *fault)
{
  CLEANUP_FREE char *ecid = xml_escape (change_id);
  CLEANUP_FREE char *esnap = snap ? xml_escape (snap) : NULL;
  char ctx[256];
  uint64_t start = 0;
  unsigned windows = 0;

  snprintf (ctx, sizeof ctx, "%s disk %s", vm->moref, disk->key);
  if (ecid == NULL || (snap && esnap == NULL)) {
    log_error ("%s: QueryChangedDiskAreas: out of memory", ctx);
    return -1;
  }
  areas->len = 0;
  while (start < disk->capacity) {
    CLEANUP_FREE char *args = NULL;
    CLEANUP_FREE char *snap_arg = NULL;
    xmlDoc *doc;
    xmlNode *ret;
    uint64_t wstart, wlen;

    if (esnap &&
        asprintf (&snap_arg, "<snapshot type=\"VirtualMachineSnapshot\">%s</snapshot>",
                  esnap) == -1)
      return -1;
    if (asprintf (&args,
                  "%s<deviceKey>%s</deviceKey><startOffset>%" PRIu64 "</startOffset>"
                  "<changeId>%s</changeId>",
                  snap_arg ? snap_arg : "", disk->key, start, ecid) == -1)
      return -1;
    if (soap_call (s, ctx, "QueryChangedDiskAreas", "VirtualMachine", vm->moref, args, true,
                   &doc, &ret, fault) == -1)
      return -1;
    windows++;
    if (!xml_child_u64 (ret, "startOffset", &wstart) ||
        !xml_child_u64 (ret, "length", &wlen) || wstart != start || wlen == 0 ||
        wlen > disk->capacity - start) {
      log_error (
          "%s: QueryChangedDiskAreas: the answer for offset %" PRIu64
          " has no valid window (start/length missing, zero or past the capacity %" PRIu64
          ")",
          ctx, start, disk->capacity);
      xmlFreeDoc (doc);
      return -1;
    }
    for (xmlNode *a = xml_child (ret, "changedArea"); a; a = xml_next (a, "changedArea")) {
      uint64_t off = 0, len = 0;
      /* wstart + wlen <= capacity (checked above), so end - off cannot underflow once
       * off <= end: an area starting past its window's end would otherwise pass.
       */
      uint64_t wend = wstart + wlen;
      if (!xml_child_u64 (a, "start", &off) || !xml_child_u64 (a, "length", &len) ||
          off < wstart || off > wend || len > wend - off ||
          (areas->len > 0 && off < areas->ptr[areas->len - 1].offset)) {
        log_error ("%s: QueryChangedDiskAreas: an area [%" PRIu64 ", +%" PRIu64
                   ") outside its window [%" PRIu64 ", +%" PRIu64 ") or out of order",
                   ctx, off, len, wstart, wlen);
        xmlFreeDoc (doc);
        return -1;
      }
      if (extent_append_merge (areas, off, len) == -1) {
        xmlFreeDoc (doc);
        log_error ("%s: QueryChangedDiskAreas: out of memory", ctx);
        return -1;
      }
    }
    xmlFreeDoc (doc);
    start = wstart + wlen;
  }
  if (ferry_debug_soap)
    log_debug ("soap: %s: changed areas since %s: %zu areas in %u windows", ctx, change_id,
               areas->len, windows);
  return 0;
}
