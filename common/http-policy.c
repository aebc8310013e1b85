/* SPDX-License-Identifier: Apache-2.0 */
/* ferry: the pure parts of the HTTP layer (see http.h): URL quoting, the defaults and the
 * retry policy.
 *
 * Kept apart from the pool so that unit tests exercise them without a network, and so
 * that the policy reads in one place: what is retried, after how long, and what never is.
 * A retry is bounded by time, not by a count: a request may keep retrying while its budget
 * lasts, so that a burst of faults (a busy vCenter, a flapping load balancer) is ridden
 * out, while a server that is gone fails the request after a known time.
 */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <curl/curl.h>

#include "log.h"
#include "http.h"

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

void
http_config_defaults (struct http_config *config)
{
#define DEFAULT(field, value)                                                              \
  do {                                                                                     \
    if (config->field == 0)                                                                \
      config->field = (value);                                                             \
  } while (0)
  DEFAULT (connect_timeout, HTTP_DEFAULT_CONNECT_TIMEOUT);
  DEFAULT (control_timeout, HTTP_DEFAULT_CONTROL_TIMEOUT);
  DEFAULT (data_timeout, HTTP_DEFAULT_DATA_TIMEOUT);
  DEFAULT (low_speed_limit, HTTP_DEFAULT_LOW_SPEED_LIMIT);
  DEFAULT (low_speed_time, HTTP_DEFAULT_LOW_SPEED_TIME);
  DEFAULT (retry_budget_ms, HTTP_DEFAULT_RETRY_BUDGET_MS);
  DEFAULT (first_contact_budget_ms, HTTP_DEFAULT_FIRST_CONTACT_BUDGET_MS);
  DEFAULT (backoff_ms, HTTP_DEFAULT_BACKOFF_MS);
  DEFAULT (backoff_max_ms, HTTP_DEFAULT_BACKOFF_MAX_MS);
  DEFAULT (max_body, HTTP_DEFAULT_MAX_BODY);
#undef DEFAULT
  if (config->first_contact_budget_ms > config->retry_budget_ms)
    config->first_contact_budget_ms = config->retry_budget_ms;
  if (config->backoff_max_ms < config->backoff_ms)
    config->backoff_max_ms = config->backoff_ms;
}

/* Exponential backoff with "equal jitter": the delay of retry ATTEMPT is drawn from
 * [d/2, d) where d doubles from the first delay up to the cap, and is never below the
 * first delay.  Half of it is guaranteed, so the backoff still grows; the other half
 * spreads the threads of one pool, and the pools of many importers, over time.
 */
static long
backoff (const struct http_config *config, unsigned attempt, double jitter)
{
  long d = config->backoff_ms, delay;

  while (attempt-- > 0 && d < (long)config->backoff_max_ms)
    d *= 2;
  if (d > (long)config->backoff_max_ms)
    d = config->backoff_max_ms;
  if (jitter < 0 || jitter >= 1)
    jitter = 0;
  delay = d / 2 + (long)(jitter * (d - d / 2));
  return delay > (long)config->backoff_ms ? delay : (long)config->backoff_ms;
}

long
http_retry_delay (const struct http_config *config, unsigned attempt, long elapsed_ms,
                  int curl_code, long status, bool short_body, long retry_after,
                  bool idempotent, double jitter)
{
  long delay, left = (long)config->retry_budget_ms - elapsed_ms;
  bool asked = false; /* the server said when */

  if (curl_code != CURLE_OK) {
    switch (curl_code) {
      case CURLE_COULDNT_RESOLVE_HOST:
      case CURLE_COULDNT_CONNECT:
        /* The request never left: safe to repeat whatever it was. */
        break;
      case CURLE_OPERATION_TIMEDOUT: /* a stall, or too slow */
      case CURLE_SEND_ERROR:
      case CURLE_RECV_ERROR:
      case CURLE_GOT_NOTHING:
      case CURLE_PARTIAL_FILE:
      case CURLE_SSL_CONNECT_ERROR: /* a reset during the handshake */
        if (!idempotent)
          return HTTP_NO_RETRY;
        break;
      default:
        return HTTP_NO_RETRY;
    }
  } else if (short_body) {
    if (!idempotent)
      return HTTP_NO_RETRY;
  } else if (status == 503 || status == 429) {
    /* 503: the server did not process it, so even a POST may be repeated. */
    if (status == 429 && !idempotent)
      return HTTP_NO_RETRY;
    asked = retry_after >= 0;
  } else if (status >= 500 && status <= 599 && status != 501 && status != 505) {
    /* 501 Not Implemented and 505 HTTP Version Not Supported never get better. */
    if (!idempotent)
      return HTTP_NO_RETRY;
  } else
    return HTTP_NO_RETRY;

  if (config->max_retries > 0 && attempt >= config->max_retries)
    return HTTP_RETRY_EXHAUSTED;
  if (left <= 0)
    return HTTP_RETRY_EXHAUSTED;

  if (asked) {
    /* As the server asks, within reason, and never a busy loop. */
    delay = retry_after >= HTTP_RETRY_AFTER_MAX_MS / 1000 ? HTTP_RETRY_AFTER_MAX_MS
                                                          : retry_after * 1000;
    if (delay < (long)config->backoff_ms)
      delay = config->backoff_ms;
    /* Coming back earlier than asked would only be refused again. */
    return delay <= left ? delay : HTTP_RETRY_EXHAUSTED;
  }
  delay = backoff (config, attempt, jitter);
  /* The last attempt happens when the budget ends, not never. */
  return delay <= left ? delay : left;
}
