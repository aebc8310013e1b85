/* SPDX-License-Identifier: Apache-2.0 */
/* ferry: the preflight inspection of a VM (inspection.h).
 *
 * THREAD MODEL: inspection_vm runs in the caller's thread (a VM thread of migrate, or
 * validate's); the NBD exports' connection threads call read_disk concurrently, which
 * reads through the source (thread-safe) and counts under an atomic.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/cleanup.h"
#include "common/log.h"
#include "convert/convert.h"
#include "inspection.h"

struct reader {
  struct source *src;
  uint64_t fetched; /* atomic */
};

static int
read_disk (void *opaque, size_t disk, void *buf, size_t count, uint64_t offset)
{
  struct reader *rd = opaque;
  uint64_t data = source_data_bytes (rd->src, disk, offset, count);

  if (source_pread (rd->src, disk, buf, count, offset) == -1)
    return -1;
  __atomic_add_fetch (&rd->fetched, data, __ATOMIC_RELAXED);
  return 0;
}

struct stage_ctx {
  struct inspection *in;
  int last_percent;
};

static void
on_progress (void *opaque, double percent, const char *stage)
{
  struct stage_ctx *s = opaque;
  const char *label = plan_vm_label (s->in->pvm);
  char text[512];

  if (s->in->progress == NULL)
    return;
  if (stage) {
    snprintf (text, sizeof text, "ferry: %s: virt-v2v-inspector: %s", label, stage);
    progress_event (
        s->in->progress,
        json_pack ("{s:s, s:s, s:s}", "event", "inspection", "vm", label, "stage", stage),
        text);
  } else if ((int)percent / 10 != s->last_percent / 10) {
    s->last_percent = (int)percent;
    progress_event (s->in->progress,
                    json_pack ("{s:s, s:s, s:f}", "event", "inspection", "vm", label,
                               "percent", percent),
                    NULL);
  }
}

bool
inspection_wanted (const struct plan *plan)
{
  return plan->preflight_inspection && !plan->skip_guest_conversion;
}

json_t *
inspection_vm (struct inspection *in)
{
  const char *label = plan_vm_label (in->pvm);
  struct source_config cfg = plan_source_config (in->plan, in->pvm);
  struct reader rd = { NULL, 0 };
  struct convert_nbd *srv = NULL;
  uint64_t *sizes = NULL, disk_bytes = 0;
  int *ports = NULL;
  json_t *desc = NULL, *r = NULL;
  char purpose[512];
  size_t n;

  snprintf (purpose, sizeof purpose, "%s/%s inspect", in->plan->name, label);
  cfg.snapshot = "create";
  cfg.purpose = purpose;
  cfg.stop = in->cancel;
  rd.src = source_open (&cfg);
  if (rd.src == NULL)
    return NULL;
  n = source_disk_count (rd.src);
  sizes = calloc (n ? n : 1, sizeof *sizes);
  ports = calloc (n ? n : 1, sizeof *ports);
  if (sizes == NULL || ports == NULL) {
    log_error ("%s: inspection: out of memory", label);
    goto out;
  }
  for (size_t i = 0; i < n; i++) {
    sizes[i] = source_disk (rd.src, i)->capacity;
    disk_bytes += sizes[i];
  }
  desc = source_describe (rd.src);
  srv = desc ? convert_nbd_serve (sizes, n, read_disk, &rd) : NULL;
  if (srv == NULL)
    goto out;
  for (size_t i = 0; i < n; i++)
    ports[i] = convert_nbd_port (srv, i);
  struct stage_ctx sc = { in, -10 };
  struct convert_inspect_params p = { .description = desc,
                                      .ports = ports,
                                      .nr_disks = n,
                                      .work_dir = in->work_dir,
                                      .progress = on_progress,
                                      .opaque = &sc,
                                      .cancel = in->cancel };
  r = convert_inspect (&p);
  if (r) {
    const struct source_vm *vm = source_vm (rd.src);
    json_object_set_new (r, "bytesRead", json_integer (convert_nbd_bytes_served (srv)));
    json_object_set_new (r, "bytesFetched",
                         json_integer (__atomic_load_n (&rd.fetched, __ATOMIC_RELAXED)));
    json_object_set_new (r, "diskBytes", json_integer (disk_bytes));
    json_object_set_new (
        r, "snapshot", vm->snapshot_name ? json_string (vm->snapshot_name) : json_null ());
  }

out:
  convert_nbd_stop (srv);
  if (source_release (rd.src) == -1) {
    json_decref (r);
    r = NULL;
  }
  source_close (rd.src);
  json_decref (desc);
  free (sizes);
  free (ports);
  return r;
}
