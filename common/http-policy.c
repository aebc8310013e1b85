/* ferry: the pure parts of the HTTP layer (see http.h): URL quoting and the retry policy.
 *
 * Kept apart from the pool so that unit tests exercise them without a network, and so
 * that the policy reads in one place: what is retried, after how long, and what never is.
 */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <curl/curl.h>

#include "log.h"
#include "http.h"

#define BACKOFF_MAX_MS 30000     /* exponential backoff cap */
#define RETRY_AFTER_MAX_MS 60000 /* Retry-After cap */

char *
http_quote (const char *s, bool keep_slash)
{
  static const char hex[] = "0123456789ABCDEF";
  size_t i, j = 0, len = strlen (s);
  char *out;

  out = malloc (len * 3 + 1);
  if (out == NULL) {
    log_error ("malloc: %m");
    return NULL;
  }
  for (i = 0; i < len; i++) {
    unsigned char ch = s[i];

    if ((ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') ||
        ch == '-' || ch == '.' || ch == '_' || ch == '~' || (keep_slash && ch == '/'))
      out[j++] = ch;
    else {
      out[j++] = '%';
      out[j++] = hex[ch >> 4];
      out[j++] = hex[ch & 15];
    }
  }
  out[j] = '\0';
  return out;
}

static long
backoff (unsigned first_ms, unsigned attempt)
{
  long delay = first_ms;

  while (attempt-- > 0 && delay < BACKOFF_MAX_MS)
    delay *= 2;
  return delay < BACKOFF_MAX_MS ? delay : BACKOFF_MAX_MS;
}

long
http_retry_delay (const struct http_config *config, unsigned attempt, int curl_code,
                  long status, bool short_body, long retry_after, bool idempotent)
{
  if (attempt >= config->max_retries)
    return -1;

  if (curl_code != CURLE_OK) {
    switch (curl_code) {
      case CURLE_COULDNT_RESOLVE_HOST:
      case CURLE_COULDNT_CONNECT:
        /* The request never left: safe to repeat whatever it was. */
        break;
      case CURLE_OPERATION_TIMEDOUT:
      case CURLE_SEND_ERROR:
      case CURLE_RECV_ERROR:
      case CURLE_GOT_NOTHING:
      case CURLE_PARTIAL_FILE:
      case CURLE_SSL_CONNECT_ERROR: /* a reset during the handshake */
        if (!idempotent)
          return -1;
        break;
      default:
        return -1;
    }
  } else if (short_body) {
    if (!idempotent)
      return -1;
  } else if (status == 503 || status == 429) {
    /* 503: the server did not process it, so even a POST may be repeated. */
    if (status == 429 && !idempotent)
      return -1;
    if (retry_after >= RETRY_AFTER_MAX_MS / 1000)
      return RETRY_AFTER_MAX_MS;
    if (retry_after >= 0)
      return retry_after * 1000;
  } else if (status >= 500 && status <= 599 && status != 501 && status != 505) {
    /* 501 Not Implemented and 505 HTTP Version Not Supported never get better. */
    if (!idempotent)
      return -1;
  } else
    return -1;

  return backoff (config->backoff_ms, attempt);
}
