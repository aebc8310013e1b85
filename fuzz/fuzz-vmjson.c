/* SPDX-License-Identifier: Apache-2.0 */
/* ferry: fuzz target — ferryfs's reading of the plugin's vm.json (vm_describe).
 *
 * The input is what the NBD server says about its exports, then the plugin's vm.json:
 * up to four lines "EXPORT<TAB>DESCRIPTION" (both from the server, so untrusted), an
 * empty line, and the JSON document, which vm_describe reads from a file.  With no
 * empty line the whole input is the document and there is one default export.  The
 * NBD side (nbd.c) is replaced by the two accessors vm_describe uses.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fuse/ferryfs.h"

#include "fuzz/fuzz.h"

#define MAX_DISKS 4

struct nbd_pool {
  const char *description;
  int64_t size;
};

const char *
pool_description (const struct nbd_pool *pool)
{
  return pool->description;
}

int64_t
pool_size (const struct nbd_pool *pool)
{
  return pool->size;
}

int
LLVMFuzzerInitialize (int *argc, char ***argv)
{
  fuzz_quiet ();
  return 0;
}

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
  char *input = fuzz_strndup (data, size);
  char *json = input, *sep = memmem (input, size, "\n\n", 2);
  struct nbd_pool pools[MAX_DISKS];
  struct disk disks[MAX_DISKS];
  struct vm vm = { .disks = disks };
  char path[64];
  int fd;

  memset (disks, 0, sizeof disks);
  if (sep) {
    char *line = input, *next;
    *sep = '\0';
    json = sep + 2;
    for (; line && vm.nr_disks < MAX_DISKS; line = next) {
      next = strchr (line, '\n');
      if (next)
        *next++ = '\0';
      char *tab = strchr (line, '\t');
      if (tab)
        *tab++ = '\0';
      pools[vm.nr_disks] = (struct nbd_pool){ tab ? tab : "", 1 << 20 };
      disks[vm.nr_disks] = (struct disk){ .export_name = line,
                                          .uri = (char *)"nbd+unix:///?socket=/s",
                                          .pool = &pools[vm.nr_disks] };
      vm.nr_disks++;
    }
  } else {
    pools[0] = (struct nbd_pool){ "", 1 << 20 };
    disks[0] = (struct disk){ .export_name = (char *)"",
                              .uri = (char *)"nbd+unix:///?socket=/s",
                              .pool = &pools[0] };
    vm.nr_disks = 1;
  }

  fd = fuzz_memfd ((const uint8_t *)json, size - (json - input), path, sizeof path);
  if (vm_describe (&vm, path, NULL, 0) == 0) {
    /* Every disk has a safe, unique, visible file name, and vm.json ends the line. */
    for (size_t i = 0; i < vm.nr_disks; i++) {
      const char *f = disks[i].file;
      if (f == NULL || f[0] == '\0' || f[0] == '.' || strchr (f, '/'))
        abort ();
      for (size_t j = 0; j < i; j++)
        if (strcmp (f, disks[j].file) == 0)
          abort ();
    }
    if (vm.vm_json_len == 0 || vm.vm_json[vm.vm_json_len - 1] != '\n')
      abort ();
  }
  for (size_t i = 0; i < vm.nr_disks; i++)
    free (disks[i].file);
  free (vm.vm_json);
  close (fd);
  free (input);
  return 0;
}
