/* ferry: read-ahead for sequential readers of an immutable disk.
 *
 * Copy tools (nbdcopy, qemu-img convert, virt-v2v) send many small adjacent requests, and
 * each would become one GET on /folder — a request the server must authenticate, look up
 * and start, which costs it more than the bytes.  When a request starts where an earlier
 * one ended, we fetch the whole aligned CHUNK holding it into a slot and serve it and its
 * neighbours from memory.  Requests that do not continue a recent one (guestfish, fsck,
 * any random reader) are read directly, so they pay no read amplification.
 *
 * This is only correct because the data cannot change while nbdkit runs: the plugin
 * serves a frozen snapshot or a powered-off VM.
 *
 * A slot is EMPTY, FETCHING (one thread fills it, others wait on the condvar), READY or
 * FAILED (waiters fall back to direct reads, which report the error).  A READY slot is
 * released as soon as all its bytes were served, else reused least-recently-used.  When
 * every slot is busy, requests go direct rather than wait.
 *
 * THREAD MODEL: ra->lock guards the slots and the recent-ends ring; the fetch itself and
 * the copies run without the lock, protected by the slot's user count.
 */
#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "common/cleanup.h"
#include "common/log.h"
#include "readahead.h"

#define RA_CHUNK (2 * 1024 * 1024) /* one GET; a few MiB amortise a request's cost */
#define RA_SLOTS 8                 /* <= 16 MiB of buffers per disk */
#define RA_RECENT 64               /* request ends remembered to detect sequential reads */

enum slot_state { EMPTY, FETCHING, READY, FAILED };

struct slot {
  enum slot_state state;
  uint64_t chunk;  /* chunk index */
  uint64_t len;    /* bytes in this chunk (the last one may be short) */
  uint64_t served; /* bytes copied out so far */
  unsigned users;  /* threads copying from or waiting on it */
  uint64_t used;   /* LRU clock */
  char *buf;
};

struct readahead {
  readahead_read_fn read;
  void *opaque;
  uint64_t size;
  pthread_mutex_t lock;
  pthread_cond_t cond;
  struct slot slots[RA_SLOTS];
  uint64_t recent[RA_RECENT];
  unsigned recent_pos;
  uint64_t clock;
  uint64_t chunks, hits, direct; /* stats, under the lock */
};

struct readahead *
readahead_new (readahead_read_fn read, void *opaque, uint64_t size)
{
  struct readahead *ra = calloc (1, sizeof *ra);

  if (ra == NULL) {
    log_error ("readahead: %m");
    return NULL;
  }
  ra->read = read;
  ra->opaque = opaque;
  ra->size = size;
  pthread_mutex_init (&ra->lock, NULL);
  pthread_cond_init (&ra->cond, NULL);
  for (size_t i = 0; i < RA_RECENT; i++)
    ra->recent[i] = UINT64_MAX;
  return ra;
}

void
readahead_free (struct readahead *ra)
{
  if (ra == NULL)
    return;
  for (size_t i = 0; i < RA_SLOTS; i++)
    free (ra->slots[i].buf);
  pthread_cond_destroy (&ra->cond);
  pthread_mutex_destroy (&ra->lock);
  free (ra);
}

void
readahead_stats (struct readahead *ra, uint64_t *chunks, uint64_t *hits, uint64_t *direct)
{
  ACQUIRE_LOCK_FOR_CURRENT_SCOPE (&ra->lock);
  *chunks = ra->chunks;
  *hits = ra->hits;
  *direct = ra->direct;
}

/* Does OFFSET continue a recent request?  Records END either way.  Called locked. */
static bool
continues_recent (struct readahead *ra, uint64_t offset, uint64_t end)
{
  bool found = false;

  for (size_t i = 0; i < RA_RECENT && !found; i++)
    found = ra->recent[i] == offset;
  ra->recent[ra->recent_pos] = end;
  ra->recent_pos = (ra->recent_pos + 1) % RA_RECENT;
  return found;
}

static struct slot *
find_slot (struct readahead *ra, uint64_t chunk)
{
  for (size_t i = 0; i < RA_SLOTS; i++)
    if (ra->slots[i].state != EMPTY && ra->slots[i].chunk == chunk)
      return &ra->slots[i];
  return NULL;
}

/* An EMPTY slot, else the least recently used idle READY one, for CHUNK; NULL if all are
 * busy.  Called locked.
 */
static struct slot *
claim_slot (struct readahead *ra, uint64_t chunk)
{
  struct slot *best = NULL;

  for (size_t i = 0; i < RA_SLOTS; i++) {
    struct slot *s = &ra->slots[i];
    if (s->state == EMPTY) {
      best = s;
      break;
    }
    if (s->state == READY && s->users == 0 && (best == NULL || s->used < best->used))
      best = s;
  }
  if (best == NULL)
    return NULL;
  if (best->buf == NULL && (best->buf = malloc (RA_CHUNK)) == NULL)
    return NULL;
  best->state = FETCHING;
  best->chunk = chunk;
  best->len =
      ra->size - chunk * RA_CHUNK < RA_CHUNK ? ra->size - chunk * RA_CHUNK : RA_CHUNK;
  best->served = 0;
  return best;
}

/* Serve [offset, offset+count), all inside one chunk.  Called locked; may unlock. */
static int
read_piece (struct readahead *ra, char *buf, uint32_t count, uint64_t offset,
            bool sequential)
{
  uint64_t chunk = offset / RA_CHUNK;
  struct slot *s = find_slot (ra, chunk);
  bool mine = false;
  int r = 0;

  if (s == NULL && sequential)
    mine = (s = claim_slot (ra, chunk)) != NULL;
  if (s == NULL) {
    ra->direct++;
    pthread_mutex_unlock (&ra->lock);
    r = ra->read (ra->opaque, buf, count, offset);
    pthread_mutex_lock (&ra->lock);
    return r;
  }

  s->users++;
  if (mine) { /* fill it without the lock; others wait for us */
    ra->chunks++;
    pthread_mutex_unlock (&ra->lock);
    r = ra->read (ra->opaque, s->buf, s->len, chunk * RA_CHUNK);
    pthread_mutex_lock (&ra->lock);
    s->state = r == 0 ? READY : FAILED;
    pthread_cond_broadcast (&ra->cond);
  }
  while (s->state == FETCHING)
    pthread_cond_wait (&ra->cond, &ra->lock);

  if (s->state == READY) {
    memcpy (buf, s->buf + (offset - chunk * RA_CHUNK), count);
    s->served += count;
    s->used = ++ra->clock;
    ra->hits++;
    r = 0;
  } else { /* FAILED: read directly, which reports the error to this caller too */
    pthread_mutex_unlock (&ra->lock);
    r = ra->read (ra->opaque, buf, count, offset);
    pthread_mutex_lock (&ra->lock);
  }
  s->users--;
  if (s->users == 0 && (s->state == FAILED || (s->state == READY && s->served >= s->len)))
    s->state = EMPTY;
  return r;
}

int
readahead_pread (struct readahead *ra, void *buf, uint32_t count, uint64_t offset)
{
  char *out = buf;
  uint64_t end = offset + count;
  ACQUIRE_LOCK_FOR_CURRENT_SCOPE (&ra->lock);
  bool sequential = continues_recent (ra, offset, end);

  while (offset < end) {
    uint64_t chunk_end = (offset / RA_CHUNK + 1) * RA_CHUNK;
    uint32_t n = (chunk_end < end ? chunk_end : end) - offset;
    if (read_piece (ra, out, n, offset, sequential) == -1)
      return -1;
    out += n;
    offset += n;
  }
  return 0;
}
