/* SPDX-License-Identifier: Apache-2.0 */
/* ferry: the HTTP layer over libcurl.
 *
 * A pool of keep-alive curl handles to one server.  Callers borrow a handle for one
 * request (the pool blocks while all handles are busy), so N threads get N parallel
 * requests over N persistent TLS connections.
 *
 * TLS: verification is on by default against the system CAs, or against cacert= when
 * given.  thumbprint= pins the server certificate instead (SHA-1 "AA:BB:..." as vSphere
 * shows it, or SHA-256 with 32 bytes), compared on the leaf certificate during the
 * handshake, before any request (and so any password or cookie) is sent.  sslverify=false
 * turns verification off and warns once.
 *
 * Timeouts: each attempt has its own bounds, so a stalled server (SIGSTOPped, or one that
 * stops sending in the middle of a body) costs one bounded attempt, never hours:
 *   connect_timeout  TCP connect plus TLS handshake;
 *   control_timeout  a whole POST or HEAD attempt (SOAP: vSphere answers calls in seconds,
 *                    long operations are tasks that are polled);
 *   data_timeout     a whole range GET attempt;
 *   low_speed_limit/low_speed_time  a range GET that moves fewer than LIMIT bytes/s for
 * TIME seconds (waiting for the headers included) is abandoned. An abandoned attempt is
 * retried like a reset, on a fresh connection.
 *
 * Retries (http_retry_delay decides, a pure function): connection failures, resets,
 * timeouts, short bodies and 5xx answers are retried with exponential backoff and jitter
 * (from backoff_ms, doubling, capped at backoff_max_ms) for as long as the request's time
 * budget (retry_budget_ms, counted from its first attempt) lasts; a 503 or 429 with
 * Retry-After waits as long as the server asks (capped at 60 s), but never less than
 * backoff_ms, so "Retry-After: 0" cannot burn the budget in a busy loop.  Non-idempotent
 * POSTs are retried only when the request cannot have reached the server (connect
 * failures, a failure before the request was sent, 503).  Retries that succeed are debug
 * lines (-D ferry.http=1); only a request that fails for good is an error, which says how
 * many retries and how long it took, and which budget ran out.  Until the server has
 * answered once, the budget is first_contact_budget_ms instead: a wrong host or port, or a
 * server that is down when we start, is reported in seconds; once it has answered, failures
 * are taken as transient (a restarting vCenter, a flapping load balancer) and ridden out.
 *
 * Answers to POST are read into memory up to max_body bytes; a larger one fails with a
 * clear error instead of exhausting memory.
 *
 * Authentication: the pool sends the session cookie set with http_pool_set_cookie on every
 * request.  When a GET answers 401, the pool calls the reauth callback once (which logs in
 * again and sets a new cookie) and repeats the request, so callers never see an expired
 * session.
 *
 * THREAD MODEL: all functions are thread-safe; the cookie is guarded by the pool's lock.
 */
#ifndef FERRY_HTTP_H
#define FERRY_HTTP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct http_pool;

/* Zero in a numeric field means the default given in brackets (http_config_defaults). */
struct http_config {
  const char *base_url;     /* "https://host[:port]", no trailing slash */
  const char *cacert;       /* PEM file of trusted CAs, or NULL for the system store */
  const char *thumbprint;   /* SHA-1 or SHA-256 fingerprint, hex with or without ':' */
  bool sslverify;           /* false only when the user asked (warns) */
  unsigned connections;     /* handles in the pool, >= 1 */
  long connect_timeout;     /* seconds for TCP connect + TLS handshake [30] */
  long control_timeout;     /* seconds for a whole POST or HEAD attempt [120] */
  long data_timeout;        /* seconds for a whole range GET attempt [600] */
  long low_speed_limit;     /* a range GET slower than this many bytes/s ... [1024] */
  long low_speed_time;      /* ... for this many seconds is abandoned [30] */
  unsigned retry_budget_ms; /* time one request may take, retries included [300000] */
  unsigned
      first_contact_budget_ms; /* the same, until the server has answered once [10000] */
  unsigned max_retries;        /* retries after the first attempt; 0: the budget decides */
  unsigned backoff_ms;         /* first delay, and the floor of every delay [250] */
  unsigned backoff_max_ms;     /* cap of the exponential backoff [30000] */
  size_t max_body;             /* largest answer to a POST, bytes [64 MiB] */
  /* Called on 401 to renew the session (must call http_pool_set_cookie); returns 0 on
   * success.  May be NULL.  Called with no pool lock held.
   */
  int (*reauth) (void *opaque, unsigned generation);
  void *reauth_opaque;
};

#define HTTP_DEFAULT_CONNECT_TIMEOUT 30
#define HTTP_DEFAULT_CONTROL_TIMEOUT 120
#define HTTP_DEFAULT_DATA_TIMEOUT 600
#define HTTP_DEFAULT_LOW_SPEED_LIMIT 1024
#define HTTP_DEFAULT_LOW_SPEED_TIME 30
#define HTTP_DEFAULT_RETRY_BUDGET_MS 300000
#define HTTP_DEFAULT_FIRST_CONTACT_BUDGET_MS 10000
#define HTTP_DEFAULT_BACKOFF_MS 250
#define HTTP_DEFAULT_BACKOFF_MAX_MS 30000
#define HTTP_DEFAULT_MAX_BODY ((size_t)64 << 20)
#define HTTP_RETRY_AFTER_MAX_MS 60000 /* a longer Retry-After is cut to this */

/* Replace the zero fields of CONFIG by their defaults. */
void http_config_defaults (struct http_config *config);

struct http_response {
  long status;
  char *body; /* NUL-terminated, malloc'd; free with http_response_reset */
  size_t len;
  char *set_cookie; /* "name=value" of the first Set-Cookie, or NULL */
  double seconds;   /* wall time including retries */
};

struct http_stats {
  uint64_t requests; /* requests sent, retries included */
  uint64_t retries;
  uint64_t bytes; /* body bytes received */
  uint64_t reauths;
};

struct http_pool *http_pool_new (const struct http_config *config);
void http_pool_free (struct http_pool *pool);

/* The cookie ("name=value") sent with every request; NULL clears it.  Bumps the session
 * generation passed to reauth, so concurrent 401s renew the session only once.
 */
void http_pool_set_cookie (struct http_pool *pool, const char *cookie);
unsigned http_pool_generation (struct http_pool *pool);
void http_pool_stats (struct http_pool *pool, struct http_stats *stats);

/* POST BODY to PATH (e.g. "/sdk") with extra header lines (NULL-terminated array, may be
 * NULL).  Any HTTP status is a success here (a SOAP fault is HTTP 500 with a body); -1 only
 * when no answer could be had after retries, with the error reported.
 */
int http_post (struct http_pool *pool, const char *path, const char *const *headers,
               const char *body, size_t len, bool idempotent, struct http_response *resp);

/* The same for another method: VERB "GET" or "OPTIONS" (BODY NULL), "POST", "DELETE"...
 * The caller handles a 401 (the pool's reauth is for GET/HEAD of data).
 */
int http_request (struct http_pool *pool, const char *verb, const char *path,
                  const char *const *headers, const char *body, size_t len, bool idempotent,
                  struct http_response *resp);

/* HEAD PATH: *size from Content-Length; fails unless 200 and Accept-Ranges: bytes. */
int http_head_size (struct http_pool *pool, const char *path, uint64_t *size);

/* GET bytes [offset, offset+count) of PATH into BUF.  Succeeds only on 206 with a
 * Content-Range starting at OFFSET and exactly COUNT body bytes; a short body is retried.
 * Errors name the URL (without query secrets), the status and the server's message.
 */
int http_get_range (struct http_pool *pool, const char *path, void *buf, size_t count,
                    uint64_t offset);

void http_response_reset (struct http_response *resp);

/* Percent-encode S for a URL path (keep_slash) or a query value. Returns malloc'd string.
 */
char *http_quote (const char *s, bool keep_slash);

/* Retry policy (pure, for tests).  CONFIG has its defaults filled in.  ATTEMPT counts the
 * retries already made (0 before the first retry), ELAPSED_MS the time since the request's
 * first attempt started.  CURL_CODE is a CURLcode (0 = the transfer completed and STATUS is
 * the answer; a failure before the request was sent is best passed as
 * CURLE_COULDNT_CONNECT), SHORT_BODY says the body was shorter than promised, RETRY_AFTER
 * is the header's value in seconds or -1, JITTER a random number in [0, 1) that spreads
 * the backoff of many clients.  Returns the delay in milliseconds before the next attempt,
 * HTTP_NO_RETRY when this outcome must not be retried, or HTTP_RETRY_EXHAUSTED when it
 * could be but the time budget (or max_retries) does not allow another attempt.
 */
#define HTTP_NO_RETRY (-1)
#define HTTP_RETRY_EXHAUSTED (-2)
long http_retry_delay (const struct http_config *config, unsigned attempt, long elapsed_ms,
                       int curl_code, long status, bool short_body, long retry_after,
                       bool idempotent, double jitter);

/* Normalise a fingerprint ("aa:bb.." / "AABB..") into upper-case colon form in OUT (size
 * >= 96); returns the digest length in bytes (20 or 32) or -1 if it is neither.
 */
int http_normalise_thumbprint (const char *in, char *out, size_t outlen);

/* Internal to common/http.c and common/http-tls.c: per-handle TLS pinning state. */
struct http_tls_pin {
  char expected[96]; /* normalised thumbprint, "" when not pinned */
  int len;           /* 20 (SHA-1) or 32 (SHA-256) */
  bool mismatch;     /* the last handshake failed on the thumbprint ... */
  char actual[96];   /* ... of this server certificate */
};
/* Sets the TLS options of curl handle CURL (verify, cacert, pinning with PIN). */
int http_tls_setup (void *curl, const char *base_url, const struct http_config *config,
                    struct http_tls_pin *pin);

#endif /* FERRY_HTTP_H */
