/* SPDX-License-Identifier: Apache-2.0 */
/* ferry: fuzz target — one SOAP answer from vSphere.
 *
 * The input is an HTTP body as POST /sdk returns it.  soap_parse turns it into a document
 * or a fault (type from <detail>'s xsi:type, its element name or the faultcode); a
 * document's devices go through vs_parse_disks (backings, datastore paths, capacities)
 * whether they come as a RetrievePropertiesEx property or as the returnval itself, and
 * each disk's changeId through vs_parse_change_id.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "providers/vsphere/soap.h"

#include "fuzz/fuzz.h"

int
LLVMFuzzerInitialize (int *argc, char ***argv)
{
  fuzz_quiet ();
  return 0;
}

static void
parse_disks (xmlNode *devices)
{
  disk_vector disks = empty_vector;

  if (vs_parse_disks (devices, &disks) == 0) {
    for (size_t i = 0; i < disks.len; i++) {
      const struct provider_disk *d = &disks.ptr[i];
      char uuid[64];
      uint64_t seq;

      /* What the parser promises its users. */
      if (d->key == NULL || d->file_name == NULL || d->datastore == NULL ||
          d->export_name == NULL)
        abort ();
      if (d->change_id)
        vs_parse_change_id (d->change_id, uuid, sizeof uuid, &seq);
    }
  }
  disk_vector_free (&disks);
}

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
  char *body = fuzz_strndup (data, size);
  struct vs_fault fault = { 0 };
  xmlDoc *doc;
  xmlNode *ret;

  if (soap_parse (body, size, 200, &doc, &ret, &fault) == 0) {
    if (doc == NULL || fault.type || fault.message)
      abort ();
    parse_disks (ret);
    for (xmlNode *o = xml_child (ret, "objects"); o; o = xml_next (o, "objects"))
      parse_disks (vs_prop (o, "config.hardware.device"));
    xmlFreeDoc (doc);
  } else if (doc != NULL)
    abort ();
  vs_fault_reset (&fault);
  free (body);
  return 0;
}
