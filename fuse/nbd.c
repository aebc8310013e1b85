/* SPDX-License-Identifier: Apache-2.0 */
/* ferryfs: a pool of libnbd connections to one export, with deadlines.
 *
 * A pool owns up to N handles to one NBD export: N = --connections when the server
 * advertises multi-conn (all connections then see the same data), else 1.  The first
 * handle is opened by pool_open (it tells the size and the flags); the others are opened
 * on first need.  A handle that failed at the transport level or did not answer in time
 * is closed and its slot reconnects on its next use, so a server that comes back is used
 * again and a dead one fails fast (the connect is refused).  A server that answers
 * ESHUTDOWN is stopping and waits for its clients to leave (nbdkit after SIGTERM, before
 * its plugin removes a snapshot): every idle handle of the pool is closed at once.  Every
 * failure reaches the caller as -EIO.
 *
 * Every operation runs with libnbd's asynchronous API and nbd_poll bounded by a deadline
 * of --timeout seconds: a server that stops answering gives -EIO instead of a hang.  A
 * timed-out command still owns the caller's buffer inside libnbd, so its handle is closed
 * (nbd_close drops the command) before the buffer is given back.
 *
 * THREAD MODEL: any thread may call pool_pread / pool_seek.  pool->lock guards the busy
 * flags and the handle pointers; a thread that took a slot (busy) uses its handle alone
 * and without the lock, so handles are never shared between threads.  Threads wait on
 * pool->cond when every slot is busy, which bounds the connections and the memory.
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <libnbd.h>

#include "common/cleanup.h"
#include "common/log.h"
#include "common/util.h"
#include "common/vector.h"

#include "ferryfs.h"

/* Block status is asked in pieces of at most this many bytes (NBD lengths are 32 bit). */
#define BLOCK_STATUS_MAX (1u << 30)

struct conn {
  struct nbd_handle *h; /* NULL = closed, reconnect on next use */
  bool busy;
};

struct nbd_pool {
  char *uri;
  int timeout;
  int64_t size;
  bool can_extents;
  char *description;
  char *export_name;
  unsigned nr_conns;
  struct conn *conns;
  pthread_mutex_t lock;
  pthread_cond_t cond;
};

DEFINE_VECTOR_TYPE (export_vector, struct export_info);

static int64_t
now_ms (void)
{
  return time_monotonic () * 1000;
}

/* Polls H until DONE (H, ARG) is true.  Returns 0, -ETIMEDOUT after the deadline, or
 * -EIO when the connection died.
 */
static int
poll_until (struct nbd_handle *h, int (*done) (struct nbd_handle *, void *), void *arg,
            int64_t deadline)
{
  int r;

  while ((r = done (h, arg)) == 0) {
    int64_t left = deadline - now_ms ();

    if (left <= 0)
      return -ETIMEDOUT;
    if (nbd_poll (h, left > 1000 ? 1000 : (int)left) == -1)
      return -EIO;
  }
  return r == -1 ? -EIO : 0;
}

static int
is_connected (struct nbd_handle *h, void *arg)
{
  bool opt_mode = arg != NULL;

  if (nbd_aio_is_ready (h) || (opt_mode && nbd_aio_is_negotiating (h)))
    return 1;
  if (nbd_aio_is_connecting (h))
    return 0;
  return -1;
}

static int
is_completed (struct nbd_handle *h, void *arg)
{
  int r = nbd_aio_command_completed (h, *(int64_t *)arg);

  if (r == -1 && nbd_get_errno () != 0) {
    /* The server answered with an error: the handle stays usable. */
    *(int64_t *)arg = -nbd_get_errno ();
    return 1;
  }
  return r;
}

/* Opens one handle to URI; OPT_MODE leaves it negotiating (for listing). */
static struct nbd_handle *
connect_uri (const char *uri, int timeout, bool opt_mode)
{
  struct nbd_handle *h;
  int r;

  h = nbd_create ();
  if (h == NULL) {
    log_error ("%s: %s", uri, nbd_get_error ());
    return NULL;
  }
  if (nbd_add_meta_context (h, LIBNBD_CONTEXT_BASE_ALLOCATION) == -1 ||
      nbd_set_full_info (h, true) == -1 || nbd_set_opt_mode (h, opt_mode) == -1 ||
      nbd_aio_connect_uri (h, uri) == -1) {
    log_error ("%s: %s", uri, nbd_get_error ());
    nbd_close (h);
    return NULL;
  }
  r = poll_until (h, is_connected, opt_mode ? h : NULL, now_ms () + timeout * 1000);
  if (r != 0) {
    if (r == -ETIMEDOUT)
      log_error ("%s: no answer within %d s", uri, timeout);
    else
      log_error ("%s: %s", uri, nbd_get_error () ? nbd_get_error () : "connection failed");
    nbd_close (h);
    return NULL;
  }
  return h;
}

struct nbd_pool *
pool_open (const char *uri, unsigned max_conns, int timeout)
{
  struct nbd_pool *pool;
  struct nbd_handle *h;
  char *desc;

  h = connect_uri (uri, timeout, false);
  if (h == NULL)
    return NULL;

  pool = calloc (1, sizeof *pool);
  if (pool == NULL)
    goto err;
  pool->uri = strdup (uri);
  if (pool->uri == NULL)
    goto err_free;
  pool->timeout = timeout;
  pool->size = nbd_get_size (h);
  if (pool->size == -1) {
    log_error ("%s: %s", uri, nbd_get_error ());
    goto err_quiet;
  }
  pool->can_extents = nbd_can_meta_context (h, LIBNBD_CONTEXT_BASE_ALLOCATION) == 1;
  desc = nbd_get_export_description (h);
  pool->description = desc ? desc : strdup ("");
  pool->export_name = nbd_get_export_name (h);
  if (pool->export_name == NULL)
    pool->export_name = strdup ("");
  pool->nr_conns = nbd_can_multi_conn (h) == 1 && max_conns > 1 ? max_conns : 1;
  pool->conns = calloc (pool->nr_conns, sizeof *pool->conns);
  if (pool->description == NULL || pool->export_name == NULL || pool->conns == NULL)
    goto err_free;
  pool->conns[0].h = h;
  pthread_mutex_init (&pool->lock, NULL);
  pthread_cond_init (&pool->cond, NULL);
  if (ferryfs_verbose)
    log_debug ("%s: size %" PRIi64 ", %u connection(s), block status %s", uri, pool->size,
               pool->nr_conns, pool->can_extents ? "yes" : "no");
  return pool;

err_free:
  log_error ("%s: %m", uri);
err_quiet:
  free (pool->conns);
  free (pool->export_name);
  free (pool->description);
  free (pool->uri);
  free (pool);
  nbd_close (h);
  return NULL;
err:
  log_error ("%s: %m", uri);
  nbd_close (h);
  return NULL;
}

void
pool_close (struct nbd_pool *pool)
{
  unsigned i;

  if (pool == NULL)
    return;
  for (i = 0; i < pool->nr_conns; i++)
    nbd_close (pool->conns[i].h);
  pthread_cond_destroy (&pool->cond);
  pthread_mutex_destroy (&pool->lock);
  free (pool->conns);
  free (pool->export_name);
  free (pool->description);
  free (pool->uri);
  free (pool);
}

int64_t
pool_size (const struct nbd_pool *pool)
{
  return pool->size;
}

unsigned
pool_conns (const struct nbd_pool *pool)
{
  return pool->nr_conns;
}

const char *
pool_description (const struct nbd_pool *pool)
{
  return pool->description;
}

const char *
pool_export_name (const struct nbd_pool *pool)
{
  return pool->export_name;
}

/* Takes a free slot, preferring one that is connected; waits while all are busy. */
static struct conn *
acquire (struct nbd_pool *pool)
{
  ACQUIRE_LOCK_FOR_CURRENT_SCOPE (&pool->lock);
  for (;;) {
    struct conn *idle = NULL;
    unsigned i;

    for (i = 0; i < pool->nr_conns; i++) {
      struct conn *c = &pool->conns[i];

      if (c->busy)
        continue;
      if (c->h != NULL) {
        idle = c;
        break;
      }
      if (idle == NULL)
        idle = c;
    }
    if (idle != NULL) {
      idle->busy = true;
      return idle;
    }
    pthread_cond_wait (&pool->cond, &pool->lock);
  }
}

static void
release (struct nbd_pool *pool, struct conn *c)
{
  ACQUIRE_LOCK_FOR_CURRENT_SCOPE (&pool->lock);
  c->busy = false;
  pthread_cond_signal (&pool->cond);
}

/* Closes the handles that no thread is using (the busy ones are closed by their users
 * when their command fails).
 */
static void
close_idle (struct nbd_pool *pool)
{
  ACQUIRE_LOCK_FOR_CURRENT_SCOPE (&pool->lock);
  for (unsigned i = 0; i < pool->nr_conns; i++) {
    if (!pool->conns[i].busy && pool->conns[i].h != NULL) {
      nbd_close (pool->conns[i].h);
      pool->conns[i].h = NULL;
    }
  }
}

/* Runs one command on a slot: ISSUE starts it and returns its cookie.  Returns 0 or
 * -EIO; on a timeout, a dead connection or a server that is stopping the handle is closed.
 */
static int
run_command (struct nbd_pool *pool, const char *what, uint64_t offset,
             int64_t (*issue) (struct nbd_handle *, void *), void *arg)
{
  struct conn *c = acquire (pool);
  int64_t deadline = now_ms () + pool->timeout * 1000;
  bool server_stopping = false, drop = true;
  int64_t cookie;
  int r;

  if (c->h == NULL) {
    c->h = connect_uri (pool->uri, pool->timeout, false);
    if (c->h == NULL) {
      release (pool, c);
      return -EIO;
    }
  }
  cookie = issue (c->h, arg);
  if (cookie == -1) {
    log_error ("%s: %s at %" PRIu64 ": %s", pool->uri, what, offset, nbd_get_error ());
    r = -EIO;
  } else {
    r = poll_until (c->h, is_completed, &cookie, deadline);
    if (r == 0 && cookie < 0) {
      log_error ("%s: %s at %" PRIu64 ": %s", pool->uri, what, offset, strerror (-cookie));
      /* Whatever the server's reason, the caller sees EIO, as documented.  ESHUTDOWN
       * means the server is stopping (nbdkit after SIGTERM) and waits for its clients
       * to go before it exits and cleans up (removes a snapshot): let it go.
       */
      server_stopping = cookie == -ESHUTDOWN;
      drop = server_stopping || !nbd_aio_is_ready (c->h);
      r = -EIO;
    } else if (r == -ETIMEDOUT) {
      log_error ("%s: %s at %" PRIu64 ": no answer within %d s", pool->uri, what, offset,
                 pool->timeout);
      r = -EIO;
    } else if (r != 0) {
      log_error ("%s: %s at %" PRIu64 ": %s", pool->uri, what, offset,
                 nbd_get_error () ? nbd_get_error () : "connection lost");
      r = -EIO;
    }
  }
  if (r != 0 && drop) {
    nbd_close (c->h);
    c->h = NULL;
  }
  if (server_stopping)
    close_idle (pool);
  release (pool, c);
  return r;
}

struct pread_args {
  void *buf;
  size_t count;
  uint64_t offset;
};

static int64_t
issue_pread (struct nbd_handle *h, void *arg)
{
  struct pread_args *a = arg;

  return nbd_aio_pread (h, a->buf, a->count, a->offset, NBD_NULL_COMPLETION, 0);
}

int
pool_pread (struct nbd_pool *pool, void *buf, size_t count, uint64_t offset)
{
  struct pread_args a = { .buf = buf, .count = count, .offset = offset };

  return run_command (pool, "read", offset, issue_pread, &a);
}

/* Block status: finds the first extent at or after the start that is data (or hole). */
struct seek_args {
  uint64_t offset, count;
  bool want_data;
  bool found;
  uint64_t where; /* the match when found, else the end of what was described */
};

static int
extent_cb (void *user_data, const char *metacontext, uint64_t offset, uint32_t *entries,
           size_t nr_entries, int *error)
{
  struct seek_args *a = user_data;
  size_t i;

  if (strcmp (metacontext, LIBNBD_CONTEXT_BASE_ALLOCATION) != 0 || a->found)
    return 0;
  for (i = 0; i + 1 < nr_entries; i += 2) {
    bool is_data = !(entries[i + 1] & LIBNBD_STATE_HOLE);

    if (is_data == a->want_data) {
      a->found = true;
      a->where = offset;
      return 0;
    }
    offset += entries[i];
  }
  a->where = offset;
  return 0;
}

static int64_t
issue_block_status (struct nbd_handle *h, void *arg)
{
  struct seek_args *a = arg;

  return nbd_aio_block_status (
      h, a->count, a->offset,
      (nbd_extent_callback){ .callback = extent_cb, .user_data = a }, NBD_NULL_COMPLETION,
      0);
}

off_t
pool_seek (struct nbd_pool *pool, off_t offset, int whence)
{
  bool want_data = whence == SEEK_DATA;
  uint64_t pos = offset;

  if (offset < 0 || offset >= pool->size)
    return -ENXIO;
  if (!pool->can_extents) /* all data, a hole at the end only */
    return want_data ? offset : pool->size;

  while (pos < (uint64_t)pool->size) {
    uint64_t left = pool->size - pos;
    struct seek_args a = { .offset = pos,
                           .count = left < BLOCK_STATUS_MAX ? left : BLOCK_STATUS_MAX,
                           .want_data = want_data,
                           .where = pos };
    int r = run_command (pool, "block status", pos, issue_block_status, &a);

    if (r != 0)
      return r;
    if (a.found)
      return a.where > pos ? (off_t)a.where : (off_t)pos;
    if (a.where <= pos) /* no progress: take the rest as data */
      return want_data ? (off_t)pos : pool->size;
    pos = a.where;
  }
  return want_data ? -ENXIO : pool->size;
}

/* Listing: the server's exports in option mode. */
void
free_exports (struct export_info *exports, size_t n)
{
  for (size_t i = 0; i < n; i++) {
    free (exports[i].name);
    free (exports[i].description);
  }
  free (exports);
}

static int
list_cb (void *user_data, const char *name, const char *description)
{
  export_vector *v = user_data;
  struct export_info e = { strdup (name), strdup (description ? description : "") };

  if (e.name == NULL || e.description == NULL || export_vector_append (v, e) == -1) {
    free (e.name);
    free (e.description);
    return -1;
  }
  return 0;
}

static int
list_done_cb (void *user_data, int *error)
{
  int *done = user_data;

  *done = *error ? -*error - 1 : 1;
  return 1;
}

static int
is_flag_set (struct nbd_handle *h, void *arg)
{
  return *(int *)arg != 0;
}

int
ferryfs_list_exports (const char *uri, int timeout, bool required,
                      struct export_info **exports)
{
  export_vector v = empty_vector;
  struct nbd_handle *h;
  int done = 0;
  int r;

  *exports = NULL;
  h = connect_uri (uri, timeout, true);
  if (h == NULL)
    return -1;
  if (!nbd_aio_is_negotiating (h)) {
    /* An oldstyle server: no options, only its one export. */
    if (required) {
      log_error ("%s: listing exports: the server does not negotiate options", uri);
      goto err;
    }
    goto unlisted;
  }
  if (nbd_aio_opt_list (h, (nbd_list_callback){ .callback = list_cb, .user_data = &v },
                        (nbd_completion_callback){ .callback = list_done_cb,
                                                   .user_data = &done }) == -1) {
    log_error ("%s: listing exports: %s", uri, nbd_get_error ());
    goto err;
  }
  r = poll_until (h, is_flag_set, &done, now_ms () + timeout * 1000);
  if (r == -ETIMEDOUT) {
    log_error ("%s: listing exports: no answer within %d s", uri, timeout);
    goto err;
  }
  if (r != 0 || (done != 1 && !nbd_aio_is_negotiating (h))) {
    /* The connection broke: the list is unknown, and a part of it is not the VM. */
    log_error ("%s: listing exports: %s", uri,
               done < 0 ? strerror (-done - 1)
                        : (nbd_get_error () ? nbd_get_error () : "connection lost"));
    goto err;
  }
  if (done != 1) {
    /* The server answered the option with an error: it cannot list. */
    if (required) {
      log_error ("%s: listing exports: the server answered with an error (%s)", uri,
                 strerror (-done - 1));
      goto err;
    }
    log_error ("%s: the server cannot list its exports (%s); mounting its default export",
               uri, strerror (-done - 1));
    free_exports (v.ptr, v.len);
    v = (export_vector)empty_vector;
  }
  nbd_aio_opt_abort (h);
unlisted:
  nbd_close (h);
  *exports = v.ptr;
  return (int)v.len;

err:
  nbd_close (h);
  free_exports (v.ptr, v.len);
  return -1;
}

/* Appends STR to the percent-encoded URI being built in *OUT. */
static int
uri_append (char **out, const char *str, const char *keep)
{
  size_t len = strlen (*out), i;
  char *s = realloc (*out, len + strlen (str) * 3 + 1);

  if (s == NULL)
    return -1;
  for (i = 0; str[i]; i++) {
    unsigned char c = str[i];

    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
        strchr ("-._~", c) || (c && strchr (keep, c)))
      s[len++] = c;
    else
      len += sprintf (s + len, "%%%02X", c);
  }
  s[len] = '\0';
  *out = s;
  return 0;
}

char *
ferryfs_unix_uri (const char *socket, const char *export_name)
{
  char *uri = strdup ("nbd+unix:///");

  if (uri == NULL || uri_append (&uri, export_name, "") == -1 ||
      uri_append (&uri, "?socket=", "?=") == -1 || uri_append (&uri, socket, "/") == -1) {
    free (uri);
    return NULL;
  }
  return uri;
}
