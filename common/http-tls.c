/* SPDX-License-Identifier: Apache-2.0 */
/* ferry: TLS verification and thumbprint pinning for the HTTP pool (see http.h).
 *
 * Three modes, chosen per pool:
 *   verify   curl verifies the chain (system store or cacert=) and the host name;
 *   pinned   thumbprint= was given: curl's own checks are off so that a self-signed
 *            vCenter certificate works, and an OpenSSL verify callback installed through
 *            CURLOPT_SSL_CTX_FUNCTION accepts chain errors but compares the digest of the
 *            leaf certificate (depth 0) with the expected one.  On a mismatch the
 *            handshake fails before any request, cookie or password is sent, and the
 *            server's fingerprint is kept in the handle's http_tls_pin for the message;
 *   none     sslverify=false (the pool warns once).
 *
 * THREAD MODEL: the verify callback runs inside curl_easy_perform on the thread that
 * borrowed the handle, and only touches that handle's http_tls_pin.
 */
#include <ctype.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include <curl/curl.h>
#include <openssl/evp.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include "log.h"
#include "http.h"

static pthread_once_t index_once = PTHREAD_ONCE_INIT;
static int pin_index = -1; /* SSL_CTX ex_data slot holding the handle's http_tls_pin */

static void
index_init (void)
{
  pin_index = SSL_CTX_get_ex_new_index (0, NULL, NULL, NULL, NULL);
}

static void
format_digest (const unsigned char *md, unsigned len, char *out)
{
  static const char hex[] = "0123456789ABCDEF";
  unsigned i;

  for (i = 0; i < len; i++) {
    *out++ = hex[md[i] >> 4];
    *out++ = hex[md[i] & 15];
    *out++ = i + 1 < len ? ':' : '\0';
  }
  if (len == 0)
    *out = '\0';
}

int
http_normalise_thumbprint (const char *in, char *out, size_t outlen)
{
  unsigned char md[32];
  size_t n = 0;
  bool colons = strchr (in, ':') != NULL;
  const char *p = in;

  while (*p) {
    int hi, lo;

    if (n == sizeof md || !isxdigit ((unsigned char)p[0]) ||
        !isxdigit ((unsigned char)p[1]))
      return -1;
    hi = isdigit ((unsigned char)p[0]) ? p[0] - '0'
                                       : toupper ((unsigned char)p[0]) - 'A' + 10;
    lo = isdigit ((unsigned char)p[1]) ? p[1] - '0'
                                       : toupper ((unsigned char)p[1]) - 'A' + 10;
    md[n++] = hi << 4 | lo;
    p += 2;
    /* With colons, every byte but the last is followed by exactly one. */
    if (colons && *p) {
      if (*p != ':' || p[1] == '\0')
        return -1;
      p++;
    }
  }
  if (n != 20 && n != 32)
    return -1;
  if (outlen < n * 3)
    return -1;
  format_digest (md, n, out);
  return n;
}

/* Runs for each certificate of the chain (and again for each error). */
static int
verify_cb (int preverify_ok, X509_STORE_CTX *store)
{
  SSL *ssl = X509_STORE_CTX_get_ex_data (store, SSL_get_ex_data_X509_STORE_CTX_idx ());
  struct http_tls_pin *pin;
  X509 *cert;
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned len = 0;

  if (ssl == NULL)
    return preverify_ok;
  pin = SSL_CTX_get_ex_data (SSL_get_SSL_CTX (ssl), pin_index);
  if (pin == NULL)
    return preverify_ok;

  /* The chain does not matter: only the pinned leaf does. */
  if (X509_STORE_CTX_get_error_depth (store) != 0)
    return 1;

  cert = X509_STORE_CTX_get_current_cert (store);
  if (cert == NULL ||
      !X509_digest (cert, pin->len == 20 ? EVP_sha1 () : EVP_sha256 (), md, &len) ||
      len != (unsigned)pin->len) {
    snprintf (pin->actual, sizeof pin->actual, "(no certificate digest)");
    pin->mismatch = true;
    return 0;
  }
  format_digest (md, len, pin->actual);
  if (strcmp (pin->actual, pin->expected) != 0) {
    pin->mismatch = true;
    return 0;
  }
  X509_STORE_CTX_set_error (store, X509_V_OK);
  return 1;
}

/* curl calls this for every new connection, after its own SSL_CTX set-up. */
static CURLcode
ssl_ctx_cb (CURL *c, void *sslctx, void *opaque)
{
  SSL_CTX *ctx = sslctx;

  (void)c;
  if (pin_index < 0 || !SSL_CTX_set_ex_data (ctx, pin_index, opaque))
    return CURLE_SSL_CERTPROBLEM;
  SSL_CTX_set_verify (ctx, SSL_VERIFY_PEER, verify_cb);
  return CURLE_OK;
}

int
http_tls_setup (void *curl, const char *base_url, const struct http_config *config,
                struct http_tls_pin *pin)
{
  CURL *c = curl;
  CURLcode rc;

  if (pin->len > 0) {
    pthread_once (&index_once, index_init);
    curl_easy_setopt (c, CURLOPT_SSL_VERIFYPEER, 0L);
    curl_easy_setopt (c, CURLOPT_SSL_VERIFYHOST, 0L);
    rc = curl_easy_setopt (c, CURLOPT_SSL_CTX_FUNCTION, ssl_ctx_cb);
    if (rc == CURLE_OK)
      rc = curl_easy_setopt (c, CURLOPT_SSL_CTX_DATA, pin);
    if (rc != CURLE_OK || pin_index < 0) {
      log_error ("%s: thumbprint= needs libcurl built with OpenSSL: %s", base_url,
                 curl_easy_strerror (rc));
      return -1;
    }
  } else if (config->sslverify) {
    curl_easy_setopt (c, CURLOPT_SSL_VERIFYPEER, 1L);
    curl_easy_setopt (c, CURLOPT_SSL_VERIFYHOST, 2L);
    if (config->cacert) {
      rc = curl_easy_setopt (c, CURLOPT_CAINFO, config->cacert);
      if (rc != CURLE_OK) {
        log_error ("%s: cacert=%s: %s", base_url, config->cacert, curl_easy_strerror (rc));
        return -1;
      }
    }
  } else {
    curl_easy_setopt (c, CURLOPT_SSL_VERIFYPEER, 0L);
    curl_easy_setopt (c, CURLOPT_SSL_VERIFYHOST, 0L);
  }
  return 0;
}
