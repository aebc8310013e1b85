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
 * Retries (http_retry_delay decides, a pure function): connection failures, resets,
 * timeouts, short bodies and 5xx answers are retried with exponential backoff; a 503 or 429
 * with Retry-After waits as long as the server asks (capped).  Non-idempotent POSTs are
 * retried only when the request cannot have reached the server (connect failures, 503).
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

struct http_config {
  const char *base_url;   /* "https://host[:port]", no trailing slash */
  const char *cacert;     /* PEM file of trusted CAs, or NULL for the system store */
  const char *thumbprint; /* SHA-1 or SHA-256 fingerprint, hex with or without ':' */
  bool sslverify;         /* false only when the user asked (warns) */
  unsigned connections;   /* handles in the pool, >= 1 */
  long connect_timeout;   /* seconds */
  long timeout;           /* seconds for a whole request */
  unsigned max_retries;   /* attempts after the first */
  unsigned backoff_ms;    /* first delay; doubles each retry, capped at 30 s */
  /* Called on 401 to renew the session (must call http_pool_set_cookie); returns 0 on
   * success.  May be NULL.  Called with no pool lock held.
   */
  int (*reauth) (void *opaque, unsigned generation);
  void *reauth_opaque;
};

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

/* Retry policy (pure, for tests).  ATTEMPT counts from 0 for the first retry.  CURL_CODE is
 * a CURLcode (0 = the transfer completed and STATUS is the answer), SHORT_BODY says the
 * body was shorter than promised, RETRY_AFTER is the header's value in seconds or -1.
 * Returns the delay in milliseconds before the next attempt, or -1 when the request must
 * not be retried.
 */
long http_retry_delay (const struct http_config *config, unsigned attempt, int curl_code,
                       long status, bool short_body, long retry_after, bool idempotent);

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
