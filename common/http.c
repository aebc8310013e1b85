/* SPDX-License-Identifier: Apache-2.0 */
/* ferry: the HTTP layer (see http.h): the handle pool, requests, retries.
 *
 * The pool owns CONNECTIONS curl easy handles, each with its own keep-alive connection.
 * A request borrows a handle (waiting on the condvar while all are busy), runs one or more
 * attempts on it and gives it back.  Each attempt goes:
 *
 *   PREPARE (URL, method, Range, cookie) -> PERFORM -> CLASSIFY, then one of
 *     DONE     the answer is what the caller asked for;
 *     REAUTH   a GET/HEAD answered 401: give the handle back, renew the session once,
 *              borrow again and repeat;
 *     RETRY    http_retry_delay says so: give the handle back, sleep, borrow again;
 *              after a transport failure (reset, stall, timeout) the next attempt opens
 *              a fresh connection rather than trust a kept-alive one;
 *     FAIL     report one error naming the URL, the status and the server's words,
 *              and, when retries ran out, how many there were and for how long.
 *
 * A ranged GET writes the body straight into the caller's buffer; the write callback
 * refuses anything beyond COUNT bytes, and bodies of error answers are kept only up to a
 * small fixed buffer for the message, so the hot path does not allocate.
 *
 * TLS verification and thumbprint pinning live in http-tls.c.
 *
 * THREAD MODEL: pool->lock guards the free list, the cookie and its generation; stats are
 * updated with atomics.  A borrowed handle and its per-attempt state belong to the
 * borrowing thread.  pool->reauth_lock serialises session renewals and is only taken with
 * no handle held, because the reauth callback itself borrows handles to log in.
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <curl/curl.h>
#include <jansson.h>

#include "cleanup.h"
#include "log.h"
#include "util.h"
#include "vector.h"
#include "http.h"

#define BUFFER_SIZE (512 * 1024)  /* CURLOPT_BUFFERSIZE, for throughput */
#define ERRBODY_MAX 256           /* bytes of an error answer kept for the message */
#define ERRBODY_SHOWN 200         /* ... of which the message shows at most this */
#define DISCARD_MAX (1024 * 1024) /* error bodies longer than this abort the transfer */

DEFINE_VECTOR_TYPE (char_vector, char);

enum method { METHOD_GET_RANGE, METHOD_HEAD, METHOD_POST };

static const char *method_names[] = { "GET", "HEAD", "POST" };

struct handle {
  struct http_pool *pool;
  CURL *c;
  char errbuf[CURL_ERROR_SIZE];
  char_vector url;
  struct http_tls_pin pin;

  /* Per attempt, reset by prepare(). */
  unsigned generation;       /* session generation of the cookie sent */
  char *buf;                 /* METHOD_GET_RANGE: the caller's buffer ... */
  size_t count;              /* ... and its size */
  size_t got;                /* body bytes written into buf */
  uint64_t received;         /* all body bytes seen, for stats */
  char_vector body;          /* METHOD_POST: the answer */
  char errbody[ERRBODY_MAX]; /* start of a non-206 answer to a range GET */
  size_t errbody_len;
  const char *abort_why;          /* set when the write callback refused data */
  int64_t range_start, range_end; /* Content-Range, -1 if none */
  long retry_after;               /* Retry-After seconds, -1 if none */
  bool accept_ranges;
  char *set_cookie;
  unsigned seed; /* for the backoff's jitter (rand_r) */
};

struct http_pool {
  struct http_config config; /* strings point to the copies below */
  char *base_url;
  char *cacert;
  char pin[96]; /* normalised thumbprint, "" if not pinned */
  int pin_len;

  pthread_mutex_t lock;
  pthread_cond_t cond;
  struct handle *handles;
  struct handle **free_list;
  size_t nr_free;
  char *cookie;
  unsigned generation;
  char too_large[64]; /* "the answer is larger than N bytes" */

  pthread_mutex_t reauth_lock;
  struct http_stats stats; /* atomics */
  bool answered;           /* atomic: the server has answered a request once */
};

static pthread_once_t init_once = PTHREAD_ONCE_INIT;
static CURLcode init_rc;

struct request {
  enum method method;
  const char *path;
  /* METHOD_GET_RANGE */
  char *buf;
  size_t count;
  uint64_t offset;
  bool fresh; /* the last attempt failed in transport: reconnect */
  /* METHOD_POST */
  const char *verb; /* another method with the same handling ("GET", "OPTIONS"), or NULL */
  struct curl_slist *headers;
  const char *body;
  size_t len;
  bool idempotent;
  /* Results */
  uint64_t size; /* METHOD_HEAD */
  struct http_response *resp;
};

/* Every block libcurl or jansson frees is wiped first: libcurl copies a small POST body
 * (a Login envelope with its password) into its request buffer, and jansson copies the
 * strings it parses (an SSO token).  Once per process, before the first handle.
 */
static void
global_init (void)
{
  json_set_alloc_funcs (malloc, wiping_free);
  init_rc = curl_global_init_mem (CURL_GLOBAL_DEFAULT, malloc, wiping_free, wiping_realloc,
                                  strdup, calloc);
}

/* Length of PATH without its query string, which may carry secrets. */
static int
path_shown (const char *path)
{
  return (int)strcspn (path, "?");
}

/* Returns the value of header NAME ("Content-Range") in the raw line PTR/N, with its length
 * in *VLEN (no CRLF), or NULL if the line is another header.
 */
static const char *
header_value (const char *ptr, size_t n, const char *name, size_t *vlen)
{
  size_t nlen = strlen (name);
  const char *v, *end = ptr + n;

  if (n <= nlen || strncasecmp (ptr, name, nlen) != 0 || ptr[nlen] != ':')
    return NULL;
  v = ptr + nlen + 1;
  while (v < end && (*v == ' ' || *v == '\t'))
    v++;
  while (end > v && (end[-1] == '\r' || end[-1] == '\n' || end[-1] == ' '))
    end--;
  *vlen = end - v;
  return v;
}

static size_t
header_cb (char *ptr, size_t size, size_t nmemb, void *opaque)
{
  struct handle *h = opaque;
  size_t n = size * nmemb, vlen;
  const char *v;
  char tmp[64];

  if (n >= 5 && strncmp (ptr, "HTTP/", 5) == 0) {
    /* A new answer (after a 100 Continue, say): forget the previous one's headers. */
    h->range_start = h->range_end = -1;
    h->retry_after = -1;
    h->accept_ranges = false;
  } else if ((v = header_value (ptr, n, "Content-Range", &vlen)) != NULL) {
    unsigned long long start, end;

    snprintf (tmp, sizeof tmp, "%.*s", (int)vlen, v);
    if (sscanf (tmp, "bytes %llu-%llu", &start, &end) == 2) {
      h->range_start = start;
      h->range_end = end;
    }
  } else if ((v = header_value (ptr, n, "Retry-After", &vlen)) != NULL) {
    /* Only the delta-seconds form; an HTTP date falls back to our own backoff. */
    char *endp;
    long secs;

    snprintf (tmp, sizeof tmp, "%.*s", (int)vlen, v);
    errno = 0;
    secs = strtol (tmp, &endp, 10);
    if (errno == 0 && endp != tmp && *endp == '\0' && secs >= 0)
      h->retry_after = secs;
  } else if ((v = header_value (ptr, n, "Accept-Ranges", &vlen)) != NULL)
    h->accept_ranges = memmem (v, vlen, "bytes", 5) != NULL;
  else if ((v = header_value (ptr, n, "Set-Cookie", &vlen)) != NULL) {
    if (h->set_cookie == NULL) {
      size_t clen = 0;

      while (clen < vlen && v[clen] != ';')
        clen++;
      h->set_cookie = strndup (v, clen);
      if (h->set_cookie == NULL)
        return 0;
    }
  }
  return n;
}

static size_t
write_cb (char *ptr, size_t size, size_t nmemb, void *opaque)
{
  struct handle *h = opaque;
  size_t n = size * nmemb, keep;
  long status = 0;

  h->received += n;
  curl_easy_getinfo (h->c, CURLINFO_RESPONSE_CODE, &status);

  if (h->buf != NULL && status == 206) {
    if (n > h->count - h->got) {
      h->abort_why = "the server sent more bytes than asked";
      return 0;
    }
    memcpy (h->buf + h->got, ptr, n);
    h->got += n;
    return n;
  }
  if (h->buf != NULL && status >= 200 && status < 300) {
    /* Probably the whole file: do not read it. */
    h->abort_why = "the server ignored the Range header";
    return 0;
  }
  if (h->buf == NULL) { /* POST */
    if (h->body.len + n > h->pool->config.max_body) {
      h->abort_why = h->pool->too_large;
      return 0;
    }
    if (char_vector_reserve (&h->body, n + 1) == -1) {
      h->abort_why = "out of memory";
      return 0;
    }
    memcpy (h->body.ptr + h->body.len, ptr, n);
    h->body.len += n;
    h->body.ptr[h->body.len] = '\0';
    return n;
  }

  /* An error answer to a range GET: keep its start for the message. */
  keep = ERRBODY_MAX - 1 - h->errbody_len;
  if (keep > n)
    keep = n;
  memcpy (h->errbody + h->errbody_len, ptr, keep);
  h->errbody_len += keep;
  h->errbody[h->errbody_len] = '\0';
  if (h->received > DISCARD_MAX) {
    h->abort_why = "the error answer is too large";
    return 0;
  }
  return n;
}

static int
handle_init (struct http_pool *pool, struct handle *h)
{
  const struct http_config *config = &pool->config;
  CURL *c;

  h->pool = pool;
  h->c = c = curl_easy_init ();
  if (c == NULL) {
    log_error ("%s: curl_easy_init failed", pool->base_url);
    return -1;
  }
  curl_easy_setopt (c, CURLOPT_ERRORBUFFER, h->errbuf);
  curl_easy_setopt (c, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt (c, CURLOPT_TCP_KEEPALIVE, 1L);
  curl_easy_setopt (c, CURLOPT_TCP_NODELAY, 1L);
  curl_easy_setopt (c, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_1_1);
  curl_easy_setopt (c, CURLOPT_PROXY, ""); /* no proxy from the environment */
  curl_easy_setopt (c, CURLOPT_BUFFERSIZE, (long)BUFFER_SIZE);
  curl_easy_setopt (c, CURLOPT_FOLLOWLOCATION, 0L);
  curl_easy_setopt (c, CURLOPT_PROTOCOLS_STR, "https,http");
  curl_easy_setopt (c, CURLOPT_CONNECTTIMEOUT, config->connect_timeout);
  curl_easy_setopt (c, CURLOPT_WRITEFUNCTION, write_cb);
  curl_easy_setopt (c, CURLOPT_WRITEDATA, h);
  curl_easy_setopt (c, CURLOPT_HEADERFUNCTION, header_cb);
  curl_easy_setopt (c, CURLOPT_HEADERDATA, h);
  snprintf (h->pin.expected, sizeof h->pin.expected, "%s", pool->pin);
  h->pin.len = pool->pin_len;
  h->seed = (unsigned)time (NULL) ^ (unsigned)(uintptr_t)h;
  return http_tls_setup (c, pool->base_url, config, &h->pin);
}

/* Session cookies are secrets: wiped before they are freed. */
static void
free_secret (char *s)
{
  if (s) {
    explicit_bzero (s, strlen (s));
    free (s);
  }
}

static void
handle_close (struct handle *h)
{
  if (h->c)
    curl_easy_cleanup (h->c);
  char_vector_reset (&h->url);
  char_vector_reset (&h->body);
  free_secret (h->set_cookie);
}

struct http_pool *
http_pool_new (const struct http_config *config)
{
  struct http_pool *pool;
  unsigned i;

  pthread_once (&init_once, global_init);
  if (init_rc != CURLE_OK) {
    log_error ("curl_global_init: %s", curl_easy_strerror (init_rc));
    return NULL;
  }
  if (config->base_url == NULL || config->connections < 1) {
    log_error ("http_pool_new: base_url and connections >= 1 are required");
    return NULL;
  }

  pool = calloc (1, sizeof *pool);
  if (pool == NULL) {
    log_error ("calloc: %m");
    return NULL;
  }
  pool->config = *config;
  http_config_defaults (&pool->config);
  snprintf (pool->too_large, sizeof pool->too_large, "the answer is larger than %zu bytes",
            pool->config.max_body);
  pool->base_url = strdup (config->base_url);
  pool->cacert = config->cacert ? strdup (config->cacert) : NULL;
  if (pool->base_url == NULL || (config->cacert && pool->cacert == NULL)) {
    log_error ("strdup: %m");
    goto err_strings;
  }
  pool->config.base_url = pool->base_url;
  pool->config.cacert = pool->cacert;
  pool->config.thumbprint = NULL; /* the normalised copy is pool->pin */
  if (config->thumbprint && config->thumbprint[0]) {
    pool->pin_len =
        http_normalise_thumbprint (config->thumbprint, pool->pin, sizeof pool->pin);
    if (pool->pin_len == -1) {
      log_error ("thumbprint=%s: not a SHA-1 or SHA-256 fingerprint "
                 "(expected 20 or 32 hex bytes, e.g. AA:BB:...)",
                 config->thumbprint);
      goto err_strings;
    }
  }

  pthread_mutex_init (&pool->lock, NULL);
  pthread_mutex_init (&pool->reauth_lock, NULL);
  pthread_cond_init (&pool->cond, NULL);

  pool->handles = calloc (config->connections, sizeof *pool->handles);
  pool->free_list = calloc (config->connections, sizeof *pool->free_list);
  if (pool->handles == NULL || pool->free_list == NULL) {
    log_error ("calloc: %m");
    goto err_handles;
  }
  for (i = 0; i < config->connections; i++) {
    if (handle_init (pool, &pool->handles[i]) == -1)
      goto err_handles;
    pool->free_list[pool->nr_free++] = &pool->handles[i];
  }

  if (!config->sslverify && pool->pin_len == 0)
    log_warning ("%s: sslverify=false: the server certificate is not verified, "
                 "use cacert= or thumbprint= instead",
                 pool->base_url);
  return pool;

err_handles:
  if (pool->handles)
    for (i = 0; i < config->connections; i++)
      handle_close (&pool->handles[i]);
  free (pool->handles);
  free (pool->free_list);
  pthread_cond_destroy (&pool->cond);
  pthread_mutex_destroy (&pool->reauth_lock);
  pthread_mutex_destroy (&pool->lock);
err_strings:
  free (pool->cacert);
  free (pool->base_url);
  free (pool);
  return NULL;
}

void
http_pool_free (struct http_pool *pool)
{
  unsigned i;

  if (pool == NULL)
    return;
  for (i = 0; i < pool->config.connections; i++)
    handle_close (&pool->handles[i]);
  free (pool->handles);
  free (pool->free_list);
  free_secret (pool->cookie);
  pthread_cond_destroy (&pool->cond);
  pthread_mutex_destroy (&pool->reauth_lock);
  pthread_mutex_destroy (&pool->lock);
  free (pool->cacert);
  free (pool->base_url);
  free (pool);
}

void
http_pool_set_cookie (struct http_pool *pool, const char *cookie)
{
  char *copy = NULL, *old;

  if (cookie && (copy = strdup (cookie)) == NULL) {
    log_error ("strdup: %m");
    return; /* the old cookie stays, the next request's 401 will tell */
  }
  {
    ACQUIRE_LOCK_FOR_CURRENT_SCOPE (&pool->lock);
    old = pool->cookie;
    pool->cookie = copy;
    pool->generation++;
  }
  free_secret (old);
  if (ferry_debug_http)
    log_debug ("%s: session cookie %.*s set", pool->base_url,
               copy ? (int)strcspn (copy, "=") : 6, copy ? copy : "(none)");
}

unsigned
http_pool_generation (struct http_pool *pool)
{
  ACQUIRE_LOCK_FOR_CURRENT_SCOPE (&pool->lock);
  return pool->generation;
}

void
http_pool_stats (struct http_pool *pool, struct http_stats *stats)
{
  stats->requests = __atomic_load_n (&pool->stats.requests, __ATOMIC_RELAXED);
  stats->retries = __atomic_load_n (&pool->stats.retries, __ATOMIC_RELAXED);
  stats->bytes = __atomic_load_n (&pool->stats.bytes, __ATOMIC_RELAXED);
  stats->reauths = __atomic_load_n (&pool->stats.reauths, __ATOMIC_RELAXED);
}

static struct handle *
get_handle (struct http_pool *pool)
{
  ACQUIRE_LOCK_FOR_CURRENT_SCOPE (&pool->lock);
  while (pool->nr_free == 0)
    pthread_cond_wait (&pool->cond, &pool->lock);
  return pool->free_list[--pool->nr_free];
}

static void
put_handle (struct handle **hp)
{
  struct handle *h = *hp;

  if (h == NULL)
    return;
  *hp = NULL;
  ACQUIRE_LOCK_FOR_CURRENT_SCOPE (&h->pool->lock);
  h->pool->free_list[h->pool->nr_free++] = h;
  pthread_cond_signal (&h->pool->cond);
}

/* A borrowed handle given back when the variable goes out of scope. */
#define CLEANUP_PUT_HANDLE __attribute__ ((cleanup (put_handle)))

/* Set up H for one attempt of REQ. */
static int
prepare (struct handle *h, const struct request *req)
{
  struct http_pool *pool = h->pool;
  size_t blen = strlen (pool->base_url), plen = strlen (req->path);
  char range[64];

  h->url.len = 0;
  if (char_vector_reserve (&h->url, blen + plen + 1) == -1) {
    log_error ("%s: %m", req->path);
    return -1;
  }
  memcpy (h->url.ptr, pool->base_url, blen);
  memcpy (h->url.ptr + blen, req->path, plen + 1);
  curl_easy_setopt (h->c, CURLOPT_URL, h->url.ptr);

  h->errbuf[0] = '\0';
  h->pin.mismatch = false;
  h->buf = NULL;
  h->got = 0;
  h->received = 0;
  h->body.len = 0;
  h->errbody_len = 0;
  h->errbody[0] = '\0';
  h->abort_why = NULL;
  h->range_start = h->range_end = -1;
  h->retry_after = -1;
  h->accept_ranges = false;
  free_secret (h->set_cookie);
  h->set_cookie = NULL;

  curl_easy_setopt (h->c, CURLOPT_HTTPGET, 1L);
  curl_easy_setopt (h->c, CURLOPT_RANGE, NULL);
  curl_easy_setopt (h->c, CURLOPT_HTTPHEADER, NULL);
  curl_easy_setopt (h->c, CURLOPT_CUSTOMREQUEST, NULL);
  curl_easy_setopt (h->c, CURLOPT_FRESH_CONNECT, req->fresh ? 1L : 0L);
  /* Control requests get a deadline; data transfers a deadline and a speed floor, so
   * that a stall is noticed in low_speed_time seconds whatever the request's size.
   */
  curl_easy_setopt (h->c, CURLOPT_TIMEOUT,
                    req->method == METHOD_GET_RANGE ? pool->config.data_timeout
                                                    : pool->config.control_timeout);
  curl_easy_setopt (h->c, CURLOPT_LOW_SPEED_LIMIT,
                    req->method == METHOD_GET_RANGE ? pool->config.low_speed_limit : 0L);
  curl_easy_setopt (h->c, CURLOPT_LOW_SPEED_TIME,
                    req->method == METHOD_GET_RANGE ? pool->config.low_speed_time : 0L);
  switch (req->method) {
    case METHOD_GET_RANGE:
      h->buf = req->buf;
      h->count = req->count;
      snprintf (range, sizeof range, "%" PRIu64 "-%" PRIu64, req->offset,
                req->offset + req->count - 1);
      curl_easy_setopt (h->c, CURLOPT_RANGE, range);
      break;
    case METHOD_HEAD:
      curl_easy_setopt (h->c, CURLOPT_NOBODY, 1L);
      break;
    case METHOD_POST:
      if (req->verb == NULL || strcmp (req->verb, "POST") == 0) {
        curl_easy_setopt (h->c, CURLOPT_POSTFIELDS, req->body);
        curl_easy_setopt (h->c, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)req->len);
      } else if (strcmp (req->verb, "GET") != 0)
        curl_easy_setopt (h->c, CURLOPT_CUSTOMREQUEST, req->verb);
      curl_easy_setopt (h->c, CURLOPT_HTTPHEADER, req->headers);
      break;
  }

  /* curl copies the cookie, so it is read under the lock and never held here. */
  {
    ACQUIRE_LOCK_FOR_CURRENT_SCOPE (&pool->lock);
    curl_easy_setopt (h->c, CURLOPT_COOKIE, pool->cookie);
    h->generation = pool->generation;
  }
  return 0;
}

/* Renew the session after a 401 on a request sent with session FAILED; only the first of
 * several threads that saw the same generation fail calls reauth.
 */
static int
renew_session (struct http_pool *pool, unsigned failed)
{
  ACQUIRE_LOCK_FOR_CURRENT_SCOPE (&pool->reauth_lock);
  if (http_pool_generation (pool) != failed) {
    if (ferry_debug_http)
      log_debug ("%s: session already renewed by another thread", pool->base_url);
    return 0;
  }
  if (ferry_debug_http)
    log_debug ("%s: HTTP 401: session expired, re-authenticating", pool->base_url);
  __atomic_fetch_add (&pool->stats.reauths, 1, __ATOMIC_RELAXED);
  return pool->config.reauth (pool->config.reauth_opaque, failed);
}

static bool
is_tls_error (CURLcode rc)
{
  switch (rc) {
    case CURLE_SSL_CONNECT_ERROR:
    case CURLE_PEER_FAILED_VERIFICATION:
    case CURLE_SSL_CERTPROBLEM:
    case CURLE_SSL_CIPHER:
    case CURLE_SSL_CACERT_BADFILE:
    case CURLE_SSL_ISSUER_ERROR:
    case CURLE_SSL_PINNEDPUBKEYNOTMATCH:
    case CURLE_SSL_INVALIDCERTSTATUS:
      return true;
    default:
      return false;
  }
}

/* A transport failure (reset, stall, timeout) rather than a refusal.  When one happens
 * before the request was sent (connect, TLS handshake, a stalled handshake), the server
 * cannot have processed it, so it is a connect failure whatever curl calls it: even a POST
 * may be repeated.
 */
static bool
is_transport_error (CURLcode rc)
{
  switch (rc) {
    case CURLE_OPERATION_TIMEDOUT:
    case CURLE_SEND_ERROR:
    case CURLE_RECV_ERROR:
    case CURLE_GOT_NOTHING:
    case CURLE_SSL_CONNECT_ERROR:
      return true;
    default:
      return false;
  }
}

/* "GET https://host/path (bytes A-B)" into BUF, for messages. */
static const char *
describe (char *buf, size_t len, const struct http_pool *pool, const struct request *req)
{
  int n =
      snprintf (buf, len, "%s %s%.*s", req->verb ? req->verb : method_names[req->method],
                pool->base_url, path_shown (req->path), req->path);

  if (req->method == METHOD_GET_RANGE && n >= 0 && (size_t)n < len)
    snprintf (buf + n, len - n, " (bytes %" PRIu64 "-%" PRIu64 ")", req->offset,
              req->offset + req->count - 1);
  return buf;
}

/* Why the attempt failed, for debug and error messages, into BUF. */
static const char *
explain (char *buf, size_t len, const struct handle *h, CURLcode rc, long status,
         const char *why)
{
  int body_len;

  if (why)
    snprintf (buf, len, "HTTP %ld: %s", status, why);
  else if (rc != CURLE_OK)
    snprintf (buf, len, "%s%s", is_tls_error (rc) ? "TLS: " : "",
              h->errbuf[0] ? h->errbuf : curl_easy_strerror (rc));
  else {
    /* The first line of the server's answer to a GET, if it has one.  Not of an answer
     * to a POST: it may echo the request, which may carry a password (Login); the caller
     * gets the body and shows what it knows to be safe.
     */
    const char *body = h->buf ? h->errbody : "";

    body_len = (int)strcspn (body, "\r\n");
    if (body_len > ERRBODY_SHOWN)
      body_len = ERRBODY_SHOWN;
    snprintf (buf, len, "HTTP %ld%s%.*s", status, body_len ? ": " : "", body_len, body);
  }
  return buf;
}

static int
do_request (struct http_pool *pool, struct request *req)
{
  CLEANUP_PUT_HANDLE struct handle *h = NULL;
  unsigned attempt = 0;
  bool reauthed = false, idempotent = req->method != METHOD_POST || req->idempotent;
  double t0 = time_monotonic (), t1;
  char what[512], why[512], detail[128];

  for (;;) {
    CURLcode rc;
    long status = 0, delay;
    curl_off_t pretransfer = 0;
    struct http_config policy;
    bool first_contact;
    bool short_body = false;
    const char *fatal = NULL;

    h = get_handle (pool);
    if (prepare (h, req) == -1)
      return -1;
    t1 = time_monotonic ();
    rc = curl_easy_perform (h->c);
    curl_easy_getinfo (h->c, CURLINFO_RESPONSE_CODE, &status);
    curl_easy_getinfo (h->c, CURLINFO_PRETRANSFER_TIME_T, &pretransfer);
    __atomic_fetch_add (&pool->stats.requests, 1, __ATOMIC_RELAXED);
    __atomic_fetch_add (&pool->stats.bytes, h->received, __ATOMIC_RELAXED);
    if (status > 0)
      __atomic_store_n (&pool->answered, true, __ATOMIC_RELAXED);
    if (ferry_debug_http) {
      if (rc == CURLE_OK)
        snprintf (why, sizeof why, "HTTP %ld", status);
      log_debug ("%s: %s, %" PRIu64 " bytes in %.3f s",
                 describe (what, sizeof what, pool, req),
                 rc == CURLE_OK ? why : curl_easy_strerror (rc), h->received,
                 time_monotonic () - t1);
    }

    if (h->pin.mismatch) {
      log_error ("%s: TLS: server certificate thumbprint %s does not match the expected "
                 "thumbprint %s",
                 pool->base_url, h->pin.actual, h->pin.expected);
      return -1;
    }
    if (rc == CURLE_WRITE_ERROR && h->abort_why)
      fatal = h->abort_why;

    if (rc == CURLE_OK && status == 401 && req->method != METHOD_POST && !reauthed &&
        pool->config.reauth) {
      unsigned generation = h->generation;

      put_handle (&h);
      reauthed = true;
      if (renew_session (pool, generation) == -1) {
        log_error ("%s: HTTP 401 and re-authentication failed",
                   describe (what, sizeof what, pool, req));
        return -1;
      }
      continue;
    }

    if (rc == CURLE_OK) {
      switch (req->method) {
        case METHOD_GET_RANGE:
          if (status != 206)
            break;
          if (h->range_start != (int64_t)req->offset ||
              (h->range_end != -1 &&
               h->range_end != (int64_t)(req->offset + req->count - 1))) {
            snprintf (detail, sizeof detail,
                      "the server answered with bytes %" PRId64 "-%" PRId64, h->range_start,
                      h->range_end);
            fatal = detail;
          } else if (h->got < req->count)
            short_body = true;
          else
            goto done;
          break;
        case METHOD_HEAD:
          if (status != 200)
            break;
          curl_off_t cl = -1;
          curl_easy_getinfo (h->c, CURLINFO_CONTENT_LENGTH_DOWNLOAD_T, &cl);
          if (cl < 0)
            fatal = "no Content-Length";
          else if (!h->accept_ranges)
            fatal = "the server does not accept byte ranges (no Accept-Ranges: bytes)";
          else {
            req->size = cl;
            goto done;
          }
          break;
        case METHOD_POST:
          /* A SOAP fault is a 500 with a body: that is an answer, not a failure. */
          if (status < 500 || (status == 500 && h->body.len > 0))
            goto done;
          break;
      }
    }

    if (fatal) {
      log_error ("%s: %s", describe (what, sizeof what, pool, req),
                 explain (why, sizeof why, h, rc, status, fatal));
      return -1;
    }

    policy = pool->config;
    first_contact = !__atomic_load_n (&pool->answered, __ATOMIC_RELAXED);
    if (first_contact)
      policy.retry_budget_ms = policy.first_contact_budget_ms;
    delay = http_retry_delay (
        &policy, attempt, (long)((time_monotonic () - t0) * 1000),
        pretransfer == 0 && is_transport_error (rc) ? CURLE_COULDNT_CONNECT : rc, status,
        short_body, h->retry_after, idempotent, rand_r (&h->seed) / ((double)RAND_MAX + 1));
    if (short_body)
      snprintf (why, sizeof why, "short body: %zu of %zu bytes", h->got, req->count);
    else
      explain (why, sizeof why, h, rc, status, NULL);
    if (delay < 0) {
      if (req->method == METHOD_POST && rc == CURLE_OK)
        goto done; /* any answer is an answer */
      if (delay == HTTP_RETRY_EXHAUSTED) {
        /* Name the budget that ran out, so that a user can tell what to lengthen. */
        char budget[64] = "";
        if (policy.max_retries == 0 || attempt < policy.max_retries)
          snprintf (budget, sizeof budget, ", %s budget %g s",
                    first_contact ? "first-contact" : "retry",
                    policy.retry_budget_ms / 1000.0);
        log_error_transient ("%s: %s (gave up after %u %s in %.1f s%s)",
                             describe (what, sizeof what, pool, req), why, attempt,
                             attempt == 1 ? "retry" : "retries", time_monotonic () - t0,
                             budget);
      } else if ((rc != CURLE_OK && !is_tls_error (rc)) || status >= 500 || short_body)
        log_error_transient ("%s: %s", describe (what, sizeof what, pool, req), why);
      else
        log_error ("%s: %s", describe (what, sizeof what, pool, req), why);
      return -1;
    }
    req->fresh = rc != CURLE_OK;
    if (h->retry_after >= 0)
      snprintf (detail, sizeof detail, " (Retry-After: %ld)", h->retry_after);
    else
      detail[0] = '\0';
    put_handle (&h);
    attempt++;
    __atomic_fetch_add (&pool->stats.retries, 1, __ATOMIC_RELAXED);
    if (ferry_debug_http)
      log_debug ("%s: %s: retry %u in %ld ms%s%s", describe (what, sizeof what, pool, req),
                 why, attempt, delay, detail, req->fresh ? " on a fresh connection" : "");
    sleep_ms (delay);
  }

done:
  if (attempt > 0 && ferry_debug_http)
    log_debug ("%s: recovered after %u %s in %.3f s",
               describe (what, sizeof what, pool, req), attempt,
               attempt == 1 ? "retry" : "retries", time_monotonic () - t0);
  if (req->resp) {
    struct http_response *resp = req->resp;

    curl_easy_getinfo (h->c, CURLINFO_RESPONSE_CODE, &resp->status);
    if (h->body.ptr == NULL && char_vector_reserve (&h->body, 1) == -1) {
      log_error ("%s: %m", describe (what, sizeof what, pool, req));
      return -1;
    }
    h->body.ptr[h->body.len] = '\0';
    resp->body = h->body.ptr;
    resp->len = h->body.len;
    h->body = (char_vector)empty_vector;
    resp->set_cookie = h->set_cookie;
    h->set_cookie = NULL;
    resp->seconds = time_monotonic () - t0;
  }
  return 0;
}

int
http_post (struct http_pool *pool, const char *path, const char *const *headers,
           const char *body, size_t len, bool idempotent, struct http_response *resp)
{
  return http_request (pool, "POST", path, headers, body, len, idempotent, resp);
}

int
http_request (struct http_pool *pool, const char *verb, const char *path,
              const char *const *headers, const char *body, size_t len, bool idempotent,
              struct http_response *resp)
{
  struct request req = { .method = METHOD_POST,
                         .verb = verb,
                         .path = path,
                         .body = body,
                         .len = len,
                         .idempotent = idempotent,
                         .resp = resp };
  struct curl_slist *list = NULL, *next;
  size_t i;
  int r;

  memset (resp, 0, sizeof *resp);
  /* No "Expect: 100-continue" round trip before large bodies. */
  list = curl_slist_append (list, "Expect:");
  for (i = 0; list && headers && headers[i]; i++) {
    next = curl_slist_append (list, headers[i]);
    if (next == NULL) {
      curl_slist_free_all (list);
      list = NULL;
    }
    list = next;
  }
  if (list == NULL) {
    log_error ("POST %s: out of memory", path);
    return -1;
  }
  req.headers = list;
  r = do_request (pool, &req);
  curl_slist_free_all (list);
  return r;
}

int
http_head_size (struct http_pool *pool, const char *path, uint64_t *size)
{
  struct request req = { .method = METHOD_HEAD, .path = path };

  if (do_request (pool, &req) == -1)
    return -1;
  *size = req.size;
  return 0;
}

int
http_get_range (struct http_pool *pool, const char *path, void *buf, size_t count,
                uint64_t offset)
{
  struct request req = {
    .method = METHOD_GET_RANGE, .path = path, .buf = buf, .count = count, .offset = offset
  };

  if (count == 0)
    return 0;
  return do_request (pool, &req);
}

void
http_response_reset (struct http_response *resp)
{
  free (resp->body);
  free_secret (resp->set_cookie);
  memset (resp, 0, sizeof *resp);
}
