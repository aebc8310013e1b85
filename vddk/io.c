/* SPDX-License-Identifier: Apache-2.0 */
/* ferry: VixDiskLib reads — Read, ReadAsync/Wait/Flush, QueryAllocatedBlocks, and the
 * write calls that a read-only library refuses.
 *
 * ReadAsync splits a request into pieces of at most PIECE bytes (CDI asks for up to
 * 23 MiB at once) and queues them; a pool of worker threads, started at the first
 * ReadAsync (so after nbdkit's fork, never at load or InitEx), reads them through the
 * handle's read-ahead (the plugin's, nbdkit-plugin/readahead.c: a piece that continues an
 * earlier one fetches the rest of its 1 MiB chunk in one range read, which serves the
 * pieces after it, so nbdcopy's 256 KiB requests do not each cost a GET) over the
 * handle's source, whose HTTP pool keeps ferry.connections keep-alive range reads in
 * flight.  When the last piece of a request is done its callback runs, exactly once, on a
 * worker thread, with VIX_OK or the first piece's error; only after the callback has
 * returned does the request stop counting for Wait.  A request refused at once (bad range)
 * returns its error from ReadAsync and never calls back.
 *
 * THREAD MODEL: the queue and each request's counters are under the queue lock, a handle's
 * outstanding count under the handle's lock; any number of ReadAsync/Read/Wait calls may
 * run at once on one or many handles (nbdkit uses one worker per handle; virt-v2v several
 * handles in one process).
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nbdkit-plugin/readahead.h"
#include "vddk.h"

#define PIECE (1024 * 1024)

struct request;

struct piece {
  struct request *req;
  unsigned char *buf;
  uint64_t offset; /* bytes */
  size_t len;
  struct piece *next;
};

struct request {
  struct vddk_handle *h;
  VixDiskLibCompletionCB cb;
  void *data;
  unsigned remaining; /* pieces not done yet */
  VixError err;       /* the first piece's error */
  struct piece pieces[];
};

static pthread_mutex_t queue_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t queue_cond = PTHREAD_COND_INITIALIZER;
static struct piece *queue_head, *queue_tail;
static pthread_t *workers;
static unsigned nr_workers;
static bool stopping;

static void
complete (struct request *req)
{
  struct vddk_handle *h = req->h;

  req->cb (req->data, req->err);
  free (req);
  pthread_mutex_lock (&h->lock);
  if (--h->outstanding == 0)
    pthread_cond_broadcast (&h->idle);
  pthread_mutex_unlock (&h->lock);
}

static void *
worker (void *arg)
{
  for (;;) {
    struct piece *p;
    struct request *req;
    VixError err = VIX_OK;
    bool last;

    pthread_mutex_lock (&queue_lock);
    while (queue_head == NULL && !stopping)
      pthread_cond_wait (&queue_cond, &queue_lock);
    p = queue_head;
    if (p == NULL) {
      pthread_mutex_unlock (&queue_lock);
      return NULL;
    }
    queue_head = p->next;
    if (queue_head == NULL)
      queue_tail = NULL;
    pthread_mutex_unlock (&queue_lock);

    req = p->req;
    vddk_clear_pending ();
    if (readahead_pread (req->h->ra, p->buf, p->len, p->offset) == -1)
      err = vddk_fail (VIX_E_FAIL, "ReadAsync %s: %zu bytes at offset %" PRIu64,
                       req->h->path, p->len, p->offset);

    pthread_mutex_lock (&queue_lock);
    if (err != VIX_OK && req->err == VIX_OK)
      req->err = err;
    last = --req->remaining == 0;
    pthread_mutex_unlock (&queue_lock);
    if (last)
      complete (req);
  }
}

static int
start_workers (void)
{
  int r = 0;

  pthread_mutex_lock (&queue_lock);
  if (workers == NULL) {
    unsigned n = vddk_settings.workers ? vddk_settings.workers : 8;
    workers = calloc (n, sizeof *workers);
    if (workers == NULL)
      r = -1;
    for (nr_workers = 0; r == 0 && nr_workers < n; nr_workers++) {
      int e = pthread_create (&workers[nr_workers], NULL, worker, NULL);
      if (e) {
        errno = e;
        r = -1;
        break;
      }
    }
    if (nr_workers == 0) {
      free (workers);
      workers = NULL;
    }
  }
  r = workers ? 0 : -1;
  pthread_mutex_unlock (&queue_lock);
  return r;
}

static void atfork_child (void);

static void
register_atfork (void)
{
  pthread_atfork (NULL, NULL, atfork_child);
}

/* In a child forked while workers ran (not nbdkit's order, but a consumer's right), the
 * threads and their queue stayed in the parent: start afresh.
 */
static void
atfork_child (void)
{
  pthread_mutex_init (&queue_lock, NULL);
  pthread_cond_init (&queue_cond, NULL);
  queue_head = queue_tail = NULL;
  free (workers);
  workers = NULL;
  nr_workers = 0;
  stopping = false;
}

void
vddk_io_init (void)
{
  static pthread_once_t once = PTHREAD_ONCE_INIT;
  pthread_once (&once, register_atfork);
}

void
vddk_io_stop (void)
{
  pthread_mutex_lock (&queue_lock);
  stopping = true;
  pthread_cond_broadcast (&queue_cond);
  pthread_mutex_unlock (&queue_lock);
  for (unsigned i = 0; i < nr_workers; i++)
    pthread_join (workers[i], NULL);
  free (workers);
  workers = NULL;
  nr_workers = 0;
  stopping = false;
}

/* Is [start, start+n) sectors inside the disk? */
static bool
in_range (const struct vddk_handle *h, uint64_t start, uint64_t n)
{
  uint64_t sectors = h->capacity / VIXDISKLIB_SECTOR_SIZE;
  return start <= sectors && n <= sectors - start && n <= SIZE_MAX / VIXDISKLIB_SECTOR_SIZE;
}

VixError
VixDiskLib_Read (VixDiskLibHandle handle, uint64_t start, uint64_t n, unsigned char *buf)
{
  struct vddk_handle *h = handle;

  vddk_clear_pending ();
  if (h == NULL || buf == NULL)
    return vddk_fail (VIX_E_INVALID_ARG, "Read: no handle or buffer");
  if (!in_range (h, start, n))
    return vddk_fail (VIX_E_DISK_OUTOFRANGE,
                      "Read %s: sectors %" PRIu64 "+%" PRIu64 " are beyond its %" PRIu64
                      " sectors",
                      h->path, start, n, h->capacity / VIXDISKLIB_SECTOR_SIZE);
  if (n && source_pread (h->src, h->disk, buf, n * VIXDISKLIB_SECTOR_SIZE,
                         start * VIXDISKLIB_SECTOR_SIZE) == -1)
    return vddk_fail (VIX_E_FAIL, "Read %s: sectors %" PRIu64 "+%" PRIu64, h->path, start,
                      n);
  return VIX_OK;
}

VixError
VixDiskLib_ReadAsync (VixDiskLibHandle handle, uint64_t start, uint64_t n,
                      unsigned char *buf, VixDiskLibCompletionCB callback, void *data)
{
  struct vddk_handle *h = handle;
  struct request *req;
  size_t count, nr_pieces;
  struct piece *first = NULL, *last = NULL;

  vddk_clear_pending ();
  if (h == NULL || buf == NULL || callback == NULL)
    return vddk_fail (VIX_E_INVALID_ARG, "ReadAsync: no handle, buffer or callback");
  if (!in_range (h, start, n))
    return vddk_fail (VIX_E_DISK_OUTOFRANGE,
                      "ReadAsync %s: sectors %" PRIu64 "+%" PRIu64
                      " are beyond its %" PRIu64 " sectors",
                      h->path, start, n, h->capacity / VIXDISKLIB_SECTOR_SIZE);
  if (start_workers () == -1)
    return vddk_fail (VIX_E_OUT_OF_MEMORY, "ReadAsync %s: cannot start worker threads: %m",
                      h->path);
  count = n * VIXDISKLIB_SECTOR_SIZE;
  nr_pieces = (count + PIECE - 1) / PIECE;
  req = calloc (1, sizeof *req + nr_pieces * sizeof (struct piece));
  if (req == NULL)
    return vddk_fail (VIX_E_OUT_OF_MEMORY, "ReadAsync %s: out of memory", h->path);
  req->h = h;
  req->cb = callback;
  req->data = data;
  req->remaining = nr_pieces;
  for (size_t i = 0; i < nr_pieces; i++) {
    struct piece *p = &req->pieces[i];
    size_t done = i * (size_t)PIECE;
    p->req = req;
    p->buf = buf + done;
    p->offset = start * VIXDISKLIB_SECTOR_SIZE + done;
    p->len = count - done < PIECE ? count - done : PIECE;
    if (last)
      last->next = p;
    else
      first = p;
    last = p;
  }

  pthread_mutex_lock (&h->lock);
  h->outstanding++;
  pthread_mutex_unlock (&h->lock);
  if (nr_pieces == 0) {
    complete (req);
    return VIX_ASYNC;
  }
  pthread_mutex_lock (&queue_lock);
  if (queue_tail)
    queue_tail->next = first;
  else
    queue_head = first;
  queue_tail = last;
  pthread_cond_broadcast (&queue_cond);
  pthread_mutex_unlock (&queue_lock);
  return VIX_ASYNC;
}

VixError
VixDiskLib_Wait (VixDiskLibHandle handle)
{
  struct vddk_handle *h = handle;

  if (h == NULL)
    return vddk_fail (VIX_E_INVALID_ARG, "Wait: no handle");
  pthread_mutex_lock (&h->lock);
  while (h->outstanding > 0)
    pthread_cond_wait (&h->idle, &h->lock);
  pthread_mutex_unlock (&h->lock);
  return VIX_OK;
}

/* Nothing is ever written, so a flush only has to wait for the reads. */
VixError
VixDiskLib_Flush (VixDiskLibHandle handle)
{
  return VixDiskLib_Wait (handle);
}

VixError
VixDiskLib_Write (VixDiskLibHandle handle, uint64_t start, uint64_t n,
                  const unsigned char *buf)
{
  struct vddk_handle *h = handle;
  return vddk_fail (
      VIX_E_FILE_READ_ONLY,
      "Write %s: ferry's VixDiskLib is read-only; the source is never written",
      h ? h->path : "");
}

VixError
VixDiskLib_WriteAsync (VixDiskLibHandle handle, uint64_t start, uint64_t n,
                       const unsigned char *buf, VixDiskLibCompletionCB callback,
                       void *data)
{
  return VixDiskLib_Write (handle, start, n, buf);
}

/* Allocated chunks of [start, start+n) sectors, from the source's allocated map (CBT
 * "*"): each area rounded outward to whole chunks, merged.  Without a map everything is
 * allocated.  A window may reach past the end of the disk only into its partial last
 * chunk, which is then allocated (as nbdkit before 1.42 asks, and VDDK's sample treats it).
 */
VixError
VixDiskLib_QueryAllocatedBlocks (VixDiskLibHandle handle, uint64_t start, uint64_t n,
                                 uint64_t chunk, VixDiskLibBlockList **block_list)
{
  struct vddk_handle *h = handle;
  const extent_vector *map;
  extent_vector blocks = empty_vector;
  uint64_t sectors, end, limit;
  VixDiskLibBlockList *list;

  vddk_clear_pending ();
  if (h == NULL || block_list == NULL)
    return vddk_fail (VIX_E_INVALID_ARG, "QueryAllocatedBlocks: no handle or list");
  if (chunk < VIXDISKLIB_MIN_CHUNK_SIZE || start % chunk || n % chunk)
    return vddk_fail (VIX_E_INVALID_ARG,
                      "QueryAllocatedBlocks %s: start %" PRIu64 " and count %" PRIu64
                      " must be multiples of the chunk size %" PRIu64 " (at least %d)",
                      h->path, start, n, chunk, VIXDISKLIB_MIN_CHUNK_SIZE);
  if (n / chunk > VIXDISKLIB_MAX_CHUNK_NUMBER)
    return vddk_fail (VIX_E_INVALID_ARG,
                      "QueryAllocatedBlocks %s: %" PRIu64
                      " chunks asked, at most %d a call",
                      h->path, n / chunk, VIXDISKLIB_MAX_CHUNK_NUMBER);
  sectors = h->capacity / VIXDISKLIB_SECTOR_SIZE;
  limit = (sectors + chunk - 1) / chunk * chunk;
  end = start + n;
  if (start > limit || n > limit - start)
    return vddk_fail (VIX_E_DISK_OUTOFRANGE,
                      "QueryAllocatedBlocks %s: sectors %" PRIu64 "+%" PRIu64
                      " are beyond its %" PRIu64 " sectors",
                      h->path, start, n, sectors);
  if (source_allocated (h->src, h->disk, &map) == -1)
    return vddk_fail (VIX_E_FAIL, "QueryAllocatedBlocks %s", h->path);

  if (map == NULL) {
    if (extent_append_merge (&blocks, start, n) == -1)
      goto nomem;
  } else {
    for (size_t i = extent_first_after (map, start * VIXDISKLIB_SECTOR_SIZE); i < map->len;
         i++) {
      uint64_t s = map->ptr[i].offset / VIXDISKLIB_SECTOR_SIZE / chunk * chunk;
      uint64_t t = map->ptr[i].offset + map->ptr[i].length;
      t = (t + VIXDISKLIB_SECTOR_SIZE - 1) / VIXDISKLIB_SECTOR_SIZE;
      t = (t + chunk - 1) / chunk * chunk;
      if (s >= end)
        break;
      if (s < start)
        s = start;
      if (t > end)
        t = end;
      if (extent_append_merge (&blocks, s, t - s) == -1)
        goto nomem;
    }
    if (end > sectors && sectors % chunk) {
      uint64_t tail = sectors / chunk * chunk;
      if (extent_append_merge (&blocks, tail, end - tail) == -1)
        goto nomem;
    }
  }

  list = malloc (sizeof *list + blocks.len * sizeof (VixDiskLibBlock));
  if (list == NULL)
    goto nomem;
  list->numBlocks = blocks.len;
  for (size_t i = 0; i < blocks.len; i++) {
    list->blocks[i].offset = blocks.ptr[i].offset;
    list->blocks[i].length = blocks.ptr[i].length;
  }
  extent_vector_reset (&blocks);
  *block_list = list;
  return VIX_OK;

nomem:
  extent_vector_reset (&blocks);
  return vddk_fail (VIX_E_OUT_OF_MEMORY, "QueryAllocatedBlocks %s: out of memory", h->path);
}

VixError
VixDiskLib_FreeBlockList (VixDiskLibBlockList *block_list)
{
  free (block_list);
  return VIX_OK;
}
