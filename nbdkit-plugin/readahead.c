/* SPDX-License-Identifier: Apache-2.0 */
/* ferry: read-ahead for sequential readers of an immutable disk.
 *
 * Copy tools (nbdcopy, qemu-img convert, virt-v2v) send many small adjacent requests, and
 * each would become one GET on /folder — a request the server must authenticate, look up
 * and start, which costs it more than the bytes.  When a request starts where an earlier
 * one ended, we fetch from there to the end of the aligned CHUNK holding it into a slot,
 * with one request, and serve it and its followers from memory.  The fetch stops short of
 * any recent request further on in the chunk, so that no byte is fetched twice.  Requests
 * that do not continue a recent one (guestfish, fsck, any random reader) are read directly,
 * so they pay no read amplification; nor is any byte before a slot's start fetched again.
 *
 * This is only correct because the data cannot change while nbdkit runs: the plugin
 * serves a frozen snapshot or a powered-off VM.
 *
 * A slot is EMPTY, FETCHING (one thread fills it, others wait on the condvar), READY or
 * FAILED (waiters fall back to direct reads, which report the error).  A READY slot is
 * released once all of its data bytes were served; a slot nobody finishes is reused only
 * after STALE other slot uses, so a chunk is not fetched twice while its readers still
 * come.  When no slot is free, requests go direct rather than wait.
 *
 * THREAD MODEL: ra->lock guards the slots and the recent-ends ring; the fetch itself and
 * the copies run without the lock, protected by the slot's user count.
 */
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "common/cleanup.h"
#include "common/log.h"
#include "readahead.h"

#define RA_CHUNK READAHEAD_CHUNK
#define RA_SLOTS READAHEAD_SLOTS
/* Requests remembered: copy tools keep up to 64 in flight per connection. */
#define RA_RECENT 256
/* Slot uses after which an unfinished slot may go. */
#define RA_STALE 1024

enum slot_state { EMPTY, FETCHING, READY, FAILED };

struct slot {
  enum slot_state state;
  uint64_t chunk;  /* chunk index */
  uint64_t start;  /* first byte held: a slot holds [start, start+len) of its chunk */
  uint64_t len;    /* bytes held */
  uint64_t need;   /* data bytes among them: served >= need releases the slot */
  uint64_t served; /* bytes copied out so far */
  unsigned users;  /* threads copying from or waiting on it */
  uint64_t used;   /* LRU clock */
  char *buf;
};

struct readahead {
  struct readahead_source source;
  void *opaque;
  uint64_t size;
  pthread_mutex_t lock;
  pthread_cond_t cond;
  struct slot slots[RA_SLOTS];
  struct {
    uint64_t start, end;
  } recent[RA_RECENT]; /* the latest requests, to tell sequential ones */
  unsigned recent_pos;
  uint64_t clock;
  uint64_t chunks, hits, direct; /* stats, under the lock */
};

struct readahead *
readahead_new (const struct readahead_source *source, void *opaque, uint64_t size)
{
  struct readahead *ra = calloc (1, sizeof *ra);

  if (ra == NULL) {
    log_error ("readahead: %m");
    return NULL;
  }
  ra->source = *source;
  ra->opaque = opaque;
  ra->size = size;
  pthread_mutex_init (&ra->lock, NULL);
  pthread_cond_init (&ra->cond, NULL);
  for (size_t i = 0; i < RA_RECENT; i++)
    ra->recent[i].start = ra->recent[i].end = UINT64_MAX;
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

/* Does OFFSET continue a recent request?  Records this one either way.  Called locked. */
static bool
continues_recent (struct readahead *ra, uint64_t offset, uint64_t end)
{
  bool found = false;

  for (size_t i = 0; i < RA_RECENT && !found; i++)
    found = ra->recent[i].end == offset;
  ra->recent[ra->recent_pos].start = offset;
  ra->recent[ra->recent_pos].end = end;
  ra->recent_pos = (ra->recent_pos + 1) % RA_RECENT;
  return found;
}

/* Where a fetch from OFFSET should stop before END: at the first recent request after it,
 * which another reader has asked for already.  Called locked.
 */
static uint64_t
fetch_end (struct readahead *ra, uint64_t offset, uint64_t end)
{
  for (size_t i = 0; i < RA_RECENT; i++)
    if (ra->recent[i].start > offset && ra->recent[i].start < end)
      end = ra->recent[i].start;
  return end;
}

static struct slot *
find_slot (struct readahead *ra, uint64_t chunk)
{
  for (size_t i = 0; i < RA_SLOTS; i++)
    if (ra->slots[i].state != EMPTY && ra->slots[i].chunk == chunk)
      return &ra->slots[i];
  return NULL;
}

/* An EMPTY slot, else the least recently used idle stale one, to hold [offset, end of its
 * chunk or the next recent request); NULL if there is none or if it would not hold the
 * COUNT bytes asked for.  Called locked.
 */
static struct slot *
claim_slot (struct readahead *ra, uint64_t offset, uint32_t count)
{
  uint64_t chunk = offset / RA_CHUNK, chunk_end = (chunk + 1) * RA_CHUNK;
  uint64_t end = fetch_end (ra, offset, chunk_end < ra->size ? chunk_end : ra->size);
  struct slot *best = NULL;

  if (end - offset < count)
    return NULL;
  for (size_t i = 0; i < RA_SLOTS; i++) {
    struct slot *s = &ra->slots[i];
    if (s->state == EMPTY) {
      best = s;
      break;
    }
    if (s->state == READY && s->users == 0 && ra->clock - s->used > RA_STALE &&
        (best == NULL || s->used < best->used))
      best = s;
  }
  if (best == NULL)
    return NULL;
  if (best->buf == NULL && (best->buf = malloc (RA_CHUNK)) == NULL)
    return NULL;
  best->state = FETCHING;
  best->chunk = chunk;
  best->start = offset;
  best->len = end - offset;
  best->need = best->len;
  best->served = 0;
  best->used = ++ra->clock;
  return best;
}

static int
read_direct (struct readahead *ra, char *buf, uint32_t count, uint64_t offset)
{
  int r;

  ra->direct++;
  pthread_mutex_unlock (&ra->lock);
  r = ra->source.read (ra->opaque, buf, count, offset);
  pthread_mutex_lock (&ra->lock);
  return r;
}

/* Serve [offset, offset+count), all inside one chunk.  Called locked; may unlock. */
static int
read_piece (struct readahead *ra, char *buf, uint32_t count, uint64_t offset,
            bool sequential)
{
  struct slot *s = find_slot (ra, offset / RA_CHUNK);
  bool mine = false;
  int r = 0;

  if (s == NULL && sequential)
    mine = (s = claim_slot (ra, offset, count)) != NULL;
  if (s == NULL || offset < s->start || offset + count > s->start + s->len)
    return read_direct (ra, buf, count, offset);

  s->users++;
  if (mine) { /* fill it without the lock; others wait for us */
    ra->chunks++;
    pthread_mutex_unlock (&ra->lock);
    s->need = ra->source.data_bytes (ra->opaque, s->start, s->len);
    r = ra->source.read (ra->opaque, s->buf, s->len, s->start);
    pthread_mutex_lock (&ra->lock);
    s->state = r == 0 ? READY : FAILED;
    pthread_cond_broadcast (&ra->cond);
  }
  while (s->state == FETCHING)
    pthread_cond_wait (&ra->cond, &ra->lock);

  if (s->state == READY) {
    /* Our user count keeps the slot from being reused while we copy. */
    pthread_mutex_unlock (&ra->lock);
    memcpy (buf, s->buf + (offset - s->start), count);
    pthread_mutex_lock (&ra->lock);
    s->served += count;
    s->used = ++ra->clock;
    ra->hits++;
    r = 0;
  } else /* FAILED: read directly, which reports the error to this caller too */
    r = read_direct (ra, buf, count, offset);
  s->users--;
  if (s->users == 0 && (s->state == FAILED || (s->state == READY && s->served >= s->need)))
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
