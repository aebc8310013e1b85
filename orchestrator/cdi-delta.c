/* SPDX-License-Identifier: Apache-2.0 */
/* ferry cdi-import: the delta copy (cdi.h) — the areas of a disk changed since a changeId,
 * read from the source and written over a target that holds the disk as of that changeId.
 *
 * Rewriting every changed area is idempotent: a stage restarted in the middle simply does
 * it again, so no state is needed.  Like nbdcopy, workers take chunks of at most 4 MiB
 * from a locked cursor over the areas; the target is fdatasync'ed at the end.
 *
 * THREAD MODEL: cdi_copy_delta from one thread; it starts and joins its workers.
 */
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <unistd.h>

#include "common/cleanup.h"
#include "common/log.h"
#include "common/util.h"
#include "cdi.h"

#define CHUNK (4u << 20)

struct delta {
  struct source *src;
  size_t disk;
  int fd;
  const extent_vector *areas;
  pthread_mutex_t lock;
  size_t next_area; /* under lock */
  uint64_t next_offset, done, total;
  bool failed;
  struct progress_disk *pd;
};

static bool
next_chunk (struct delta *d, uint64_t *offset, size_t *len)
{
  bool r = false;

  pthread_mutex_lock (&d->lock);
  while (!d->failed && d->next_area < d->areas->len) {
    const struct extent *e = &d->areas->ptr[d->next_area];
    if (d->next_offset < e->offset)
      d->next_offset = e->offset;
    if (d->next_offset >= e->offset + e->length) {
      d->next_area++;
      continue;
    }
    *offset = d->next_offset;
    *len = e->offset + e->length - d->next_offset;
    if (*len > CHUNK)
      *len = CHUNK;
    d->next_offset += *len;
    r = true;
    break;
  }
  pthread_mutex_unlock (&d->lock);
  return r;
}

static void *
delta_worker (void *arg)
{
  struct delta *d = arg;
  CLEANUP_FREE void *buf = malloc (CHUNK);
  uint64_t offset;
  size_t len;

  if (buf == NULL) {
    log_error ("malloc: %m");
    goto fail;
  }
  while (next_chunk (d, &offset, &len)) {
    if (source_pread (d->src, d->disk, buf, len, offset) == -1)
      goto fail;
    if (pwrite_full (d->fd, buf, len, offset) == -1) {
      log_error ("write at %" PRIu64 ": %m", offset);
      goto fail;
    }
    pthread_mutex_lock (&d->lock);
    d->done += len;
    progress_disk_update (d->pd, d->done, 0);
    pthread_mutex_unlock (&d->lock);
  }
  return NULL;

fail:
  pthread_mutex_lock (&d->lock);
  d->failed = true;
  pthread_mutex_unlock (&d->lock);
  return NULL;
}

int
cdi_copy_delta (struct source *src, size_t i, const char *change_id, const char *target,
                struct progress *p, unsigned workers, uint64_t *fetched)
{
  const struct provider_disk *disk = source_disk (src, i);
  extent_vector areas = empty_vector;
  CLEANUP_FREE char *why = NULL;
  pthread_t threads[CDI_DELTA_MAX_WORKERS];
  struct delta d = { .src = src, .disk = i, .areas = &areas };
  unsigned started = 0;
  int r;

  r = source_changed (src, i, change_id, &areas, &why);
  if (r != 0) {
    if (r == 1)
      log_warning ("%s: the source cannot tell what changed since %s (%s): copying the "
                   "whole disk",
                   disk->file_name, change_id, why);
    extent_vector_reset (&areas);
    return r;
  }
  for (size_t k = 0; k < areas.len; k++)
    d.total += areas.ptr[k].length;
  log_info ("%s: %zu areas, %" PRIu64 " bytes changed since %s", disk->file_name, areas.len,
            d.total, change_id);
  d.fd = open (target, O_WRONLY | O_CLOEXEC);
  if (d.fd == -1) {
    log_error ("%s: %m", target);
    extent_vector_reset (&areas);
    return -1;
  }
  pthread_mutex_init (&d.lock, NULL);
  d.pd = progress_disk_start (p, source_vm (src)->name, disk->key, 1, d.total);
  if (workers == 0 || workers > CDI_DELTA_MAX_WORKERS)
    workers = CDI_DELTA_MAX_WORKERS;
  for (; started < workers; started++)
    if (pthread_create (&threads[started], NULL, delta_worker, &d) != 0) {
      log_error ("pthread_create: %m");
      d.failed = true;
      break;
    }
  for (unsigned k = 0; k < started; k++)
    pthread_join (threads[k], NULL);
  progress_disk_end (d.pd);
  if (!d.failed && fdatasync (d.fd) == -1) {
    log_error ("%s: fdatasync: %m", target);
    d.failed = true;
  }
  close (d.fd);
  pthread_mutex_destroy (&d.lock);
  extent_vector_reset (&areas);
  *fetched = d.done;
  return d.failed ? -1 : 0;
}
