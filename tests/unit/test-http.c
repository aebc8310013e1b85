/* SPDX-License-Identifier: Apache-2.0 */
/* ferry: unit tests of the pure parts of common/http.c: the retry policy, thumbprint
 * normalisation, URL quoting and the defaults.  The network paths are covered by
 * tests/integration/test-http-tls.sh.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <curl/curl.h>

#include "common/http.h"

static const struct http_config config = {
  .base_url = "https://127.0.0.1",
  .connections = 1,
  .backoff_ms = 100,
  .backoff_max_ms = 30000,
  .retry_budget_ms = 300000,
};

#define OK CURLE_OK
#define NO HTTP_NO_RETRY
#define EXHAUSTED HTTP_RETRY_EXHAUSTED

/* With no jitter: the guaranteed half of the backoff, at the start of the budget. */
static long
delay (unsigned attempt, int curl_code, long status, bool short_body, long retry_after,
       bool idempotent)
{
  return http_retry_delay (&config, attempt, 0, curl_code, status, short_body, retry_after,
                           idempotent, 0);
}

static void
test_defaults (void **state)
{
  struct http_config c = { .connections = 1, .data_timeout = 7, .backoff_ms = 5 };

  (void)state;
  http_config_defaults (&c);
  assert_int_equal (c.connect_timeout, HTTP_DEFAULT_CONNECT_TIMEOUT);
  assert_int_equal (c.control_timeout, HTTP_DEFAULT_CONTROL_TIMEOUT);
  assert_int_equal (c.data_timeout, 7); /* chosen, kept */
  assert_int_equal (c.low_speed_limit, HTTP_DEFAULT_LOW_SPEED_LIMIT);
  assert_int_equal (c.low_speed_time, HTTP_DEFAULT_LOW_SPEED_TIME);
  assert_int_equal (c.retry_budget_ms, HTTP_DEFAULT_RETRY_BUDGET_MS);
  assert_int_equal (c.first_contact_budget_ms, HTTP_DEFAULT_FIRST_CONTACT_BUDGET_MS);
  assert_int_equal (c.max_retries, 0); /* the budget decides */
  assert_int_equal (c.backoff_ms, 5);
  assert_int_equal (c.backoff_max_ms, HTTP_DEFAULT_BACKOFF_MAX_MS);
  assert_true (c.max_body == HTTP_DEFAULT_MAX_BODY);
  /* Every default is finite: no request can wait for ever. */
  assert_true (c.connect_timeout > 0 && c.control_timeout > 0 && c.low_speed_limit > 0);
  /* A cap below the first delay is raised to it; the first contact gets no more time
   * than any request.
   */
  c = (struct http_config){ .backoff_ms = 5000,
                            .backoff_max_ms = 1000,
                            .retry_budget_ms = 3000 };
  http_config_defaults (&c);
  assert_int_equal (c.backoff_max_ms, 5000);
  assert_int_equal (c.first_contact_budget_ms, 3000);
}

static void
test_retry_5xx (void **state)
{
  (void)state;
  assert_int_equal (delay (0, OK, 500, false, -1, true), 100);
  assert_int_equal (delay (0, OK, 502, false, -1, true), 100);
  assert_int_equal (delay (0, OK, 503, false, -1, true), 100);
  assert_int_equal (delay (0, OK, 504, false, -1, true), 100);
  /* Permanent server errors are not worth repeating. */
  assert_int_equal (delay (0, OK, 501, false, -1, true), NO);
  assert_int_equal (delay (0, OK, 505, false, -1, true), NO);
}

static void
test_no_retry_success_and_4xx (void **state)
{
  (void)state;
  assert_int_equal (delay (0, OK, 200, false, -1, true), NO);
  assert_int_equal (delay (0, OK, 206, false, -1, true), NO);
  assert_int_equal (delay (0, OK, 400, false, -1, true), NO);
  assert_int_equal (delay (0, OK, 403, false, -1, true), NO);
  assert_int_equal (delay (0, OK, 404, false, -1, true), NO);
  assert_int_equal (delay (0, OK, 416, false, -1, true), NO);
  /* 401 is the reauth flow's business, not the retry policy's. */
  assert_int_equal (delay (0, OK, 401, false, -1, true), NO);
  assert_int_equal (delay (0, OK, 401, false, 0, true), NO);
  /* Even when the budget is gone, "not retryable" is what it is. */
  assert_int_equal (http_retry_delay (&config, 0, 400000, OK, 404, false, -1, true, 0), NO);
}

static void
test_retry_after (void **state)
{
  (void)state;
  assert_int_equal (delay (0, OK, 503, false, 7, true), 7000);
  assert_int_equal (delay (3, OK, 503, false, 2, true), 2000); /* not the backoff */
  assert_int_equal (delay (0, OK, 503, false, 3600, true), HTTP_RETRY_AFTER_MAX_MS);
  assert_int_equal (delay (0, OK, 503, false, 1L << 50, true), HTTP_RETRY_AFTER_MAX_MS);
  assert_int_equal (delay (0, OK, 429, false, 5, true), 5000);
  /* No jitter on what the server asked for. */
  assert_int_equal (http_retry_delay (&config, 0, 0, OK, 503, false, 7, true, 0.9), 7000);
  /* Without Retry-After: our own backoff. */
  assert_int_equal (delay (2, OK, 503, false, -1, true), 200);
}

/* "Retry-After: 0" (or 1 s in a slow loop) must not turn into a busy loop. */
static void
test_retry_after_floor (void **state)
{
  struct http_config c = config;
  unsigned i;

  (void)state;
  for (i = 0; i < 20; i++)
    assert_int_equal (delay (i, OK, 503, false, 0, true), 100);
  c.backoff_ms = 1500;
  assert_int_equal (http_retry_delay (&c, 0, 0, OK, 503, false, 1, true, 0), 1500);
  assert_int_equal (http_retry_delay (&c, 0, 0, OK, 503, false, 2, true, 0), 2000);
}

static void
test_backoff_growth_jitter_and_cap (void **state)
{
  struct http_config c = config;
  unsigned i;
  long d;

  (void)state;
  c.retry_budget_ms = 100000000;
  /* Jitter 0: half of 100 * 2^attempt, but never below the first delay. */
  assert_int_equal (http_retry_delay (&c, 0, 0, OK, 500, false, -1, true, 0), 100);
  assert_int_equal (http_retry_delay (&c, 1, 0, OK, 500, false, -1, true, 0), 100);
  assert_int_equal (http_retry_delay (&c, 2, 0, OK, 500, false, -1, true, 0), 200);
  assert_int_equal (http_retry_delay (&c, 3, 0, OK, 500, false, -1, true, 0), 400);
  /* Jitter up to 1: up to the full 100 * 2^attempt. */
  assert_int_equal (http_retry_delay (&c, 3, 0, OK, 500, false, -1, true, 0.5), 600);
  d = http_retry_delay (&c, 3, 0, OK, 500, false, -1, true, 0.9999);
  assert_true (d >= 799 && d <= 800);
  assert_int_equal (http_retry_delay (&c, 8, 0, OK, 500, false, -1, true, 0), 12800);
  /* The cap: 30 s at most, 15 s at least, for ever. */
  for (i = 9; i < 100; i++) {
    assert_int_equal (http_retry_delay (&c, i, 0, OK, 500, false, -1, true, 0), 15000);
    d = http_retry_delay (&c, i, 0, OK, 500, false, -1, true, 0.9999);
    assert_true (d > 29990 && d <= 30000);
  }
  /* A jitter out of range is taken as 0, never as a longer delay. */
  assert_int_equal (http_retry_delay (&c, 3, 0, OK, 500, false, -1, true, 7), 400);
  assert_int_equal (http_retry_delay (&c, 3, 0, OK, 500, false, -1, true, -1), 400);
}

static void
test_budget (void **state)
{
  struct http_config c = config;

  (void)state;
  c.retry_budget_ms = 10000;
  /* Plenty left: the backoff. */
  assert_int_equal (http_retry_delay (&c, 0, 5000, OK, 503, false, -1, true, 0), 100);
  /* Less left than the backoff: the last attempt comes when the budget ends. */
  assert_int_equal (http_retry_delay (&c, 0, 9950, OK, 503, false, -1, true, 0), 50);
  assert_int_equal (http_retry_delay (&c, 0, 9999, CURLE_RECV_ERROR, 0, false, -1, true, 0),
                    1);
  /* Nothing left. */
  assert_int_equal (http_retry_delay (&c, 0, 10000, OK, 503, false, -1, true, 0),
                    EXHAUSTED);
  assert_int_equal (
      http_retry_delay (&c, 40, 20000, CURLE_COULDNT_CONNECT, 0, false, -1, true, 0),
      EXHAUSTED);
  /* A Retry-After beyond the budget: coming back early is pointless. */
  assert_int_equal (http_retry_delay (&c, 0, 5000, OK, 503, false, 5, true, 0), 5000);
  assert_int_equal (http_retry_delay (&c, 0, 5001, OK, 503, false, 5, true, 0), EXHAUSTED);
  /* Many retries are fine while the budget lasts. */
  assert_true (http_retry_delay (&c, 1000, 0, OK, 503, false, 0, true, 0) > 0);
  /* max_retries, when set, caps the count too. */
  c.max_retries = 2;
  assert_true (http_retry_delay (&c, 1, 0, OK, 500, false, -1, true, 0) > 0);
  assert_int_equal (http_retry_delay (&c, 2, 0, OK, 500, false, -1, true, 0), EXHAUSTED);
  assert_int_equal (http_retry_delay (&c, 2, 0, OK, 503, false, 0, true, 0), EXHAUSTED);
  assert_int_equal (http_retry_delay (&c, 2, 0, OK, 404, false, -1, true, 0), NO);
}

static void
test_transport_errors (void **state)
{
  (void)state;
  assert_int_equal (delay (0, CURLE_RECV_ERROR, 0, false, -1, true), 100);  /* reset */
  assert_int_equal (delay (0, CURLE_SEND_ERROR, 0, false, -1, true), 100);  /* reset */
  assert_int_equal (delay (0, CURLE_GOT_NOTHING, 0, false, -1, true), 100); /* closed */
  /* A stall (low-speed limit) or a timeout. */
  assert_int_equal (delay (2, CURLE_OPERATION_TIMEDOUT, 0, false, -1, true), 200);
  assert_int_equal (delay (0, CURLE_PARTIAL_FILE, 206, false, -1, true), 100);
  assert_int_equal (delay (0, CURLE_COULDNT_CONNECT, 0, false, -1, true), 100);
  assert_int_equal (delay (0, CURLE_COULDNT_RESOLVE_HOST, 0, false, -1, true), 100);
  /* A short body that curl did not notice (Content-Length agreed with it). */
  assert_int_equal (delay (0, OK, 206, true, -1, true), 100);
  /* Verification failures and local errors never get better. */
  assert_int_equal (delay (0, CURLE_PEER_FAILED_VERIFICATION, 0, false, -1, true), NO);
  assert_int_equal (delay (0, CURLE_WRITE_ERROR, 206, false, -1, true), NO);
  assert_int_equal (delay (0, CURLE_URL_MALFORMAT, 0, false, -1, true), NO);
  assert_int_equal (delay (0, CURLE_OUT_OF_MEMORY, 0, false, -1, true), NO);
}

static void
test_non_idempotent_post (void **state)
{
  (void)state;
  /* Cannot have reached the server: retried. */
  assert_int_equal (delay (0, CURLE_COULDNT_CONNECT, 0, false, -1, false), 100);
  assert_int_equal (delay (2, CURLE_COULDNT_RESOLVE_HOST, 0, false, -1, false), 200);
  assert_int_equal (delay (0, OK, 503, false, -1, false), 100);
  assert_int_equal (delay (0, OK, 503, false, 3, false), 3000);
  /* May have been processed: never repeated. */
  assert_int_equal (delay (0, OK, 500, false, -1, false), NO);
  assert_int_equal (delay (0, OK, 502, false, -1, false), NO);
  assert_int_equal (delay (0, OK, 504, false, -1, false), NO);
  assert_int_equal (delay (0, OK, 429, false, 1, false), NO);
  assert_int_equal (delay (0, CURLE_RECV_ERROR, 0, false, -1, false), NO);
  assert_int_equal (delay (0, CURLE_SEND_ERROR, 0, false, -1, false), NO);
  assert_int_equal (delay (0, CURLE_OPERATION_TIMEDOUT, 0, false, -1, false), NO);
  assert_int_equal (delay (0, CURLE_GOT_NOTHING, 0, false, -1, false), NO);
  assert_int_equal (delay (0, OK, 200, true, -1, false), NO);
}

#define SHA1_UPPER "AB:CD:EF:01:23:45:67:89:AB:CD:EF:01:23:45:67:89:AB:CD:EF:01"
#define SHA256_UPPER                                                                       \
  "00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF:"                                       \
  "00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF"

static void
test_thumbprint (void **state)
{
  char out[96];

  (void)state;
  memset (out, 'x', sizeof out);
  assert_int_equal (http_normalise_thumbprint (SHA1_UPPER, out, sizeof out), 20);
  assert_string_equal (out, SHA1_UPPER);
  assert_int_equal (
      http_normalise_thumbprint (
          "ab:cd:ef:01:23:45:67:89:ab:cd:ef:01:23:45:67:89:ab:cd:ef:01", out, sizeof out),
      20);
  assert_string_equal (out, SHA1_UPPER);
  assert_int_equal (http_normalise_thumbprint ("abcdef0123456789ABCDEF0123456789abcdef01",
                                               out, sizeof out),
                    20);
  assert_string_equal (out, SHA1_UPPER);

  assert_int_equal (http_normalise_thumbprint (SHA256_UPPER, out, sizeof out), 32);
  assert_string_equal (out, SHA256_UPPER);
  assert_int_equal (http_normalise_thumbprint (
                        "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff",
                        out, sizeof out),
                    32);
  assert_string_equal (out, SHA256_UPPER);

  /* Garbage. */
  assert_int_equal (http_normalise_thumbprint ("", out, sizeof out), -1);
  assert_int_equal (http_normalise_thumbprint ("hello", out, sizeof out), -1);
  assert_int_equal (http_normalise_thumbprint ("AB:CD", out, sizeof out),
                    -1); /* too short */
  /* 19 and 21 bytes. */
  assert_int_equal (
      http_normalise_thumbprint ("abcdef0123456789ABCDEF0123456789abcdef", out, sizeof out),
      -1);
  assert_int_equal (http_normalise_thumbprint ("abcdef0123456789ABCDEF0123456789abcdef0102",
                                               out, sizeof out),
                    -1);
  /* Odd digit count, a non-hex digit, misplaced colons. */
  assert_int_equal (http_normalise_thumbprint ("abcdef0123456789ABCDEF0123456789abcdef012",
                                               out, sizeof out),
                    -1);
  assert_int_equal (http_normalise_thumbprint ("gbcdef0123456789ABCDEF0123456789abcdef01",
                                               out, sizeof out),
                    -1);
  assert_int_equal (
      http_normalise_thumbprint (
          "ABC:DEF:01:23:45:67:89:AB:CD:EF:01:23:45:67:89:AB:CD:EF:01:00", out, sizeof out),
      -1);
  assert_int_equal (http_normalise_thumbprint (SHA1_UPPER ":", out, sizeof out), -1);
  assert_int_equal (http_normalise_thumbprint (":" SHA1_UPPER, out, sizeof out), -1);
  assert_int_equal (
      http_normalise_thumbprint (
          "AB::CD:EF:01:23:45:67:89:AB:CD:EF:01:23:45:67:89:AB:CD:EF:01", out, sizeof out),
      -1);
  assert_int_equal (http_normalise_thumbprint (SHA1_UPPER " ", out, sizeof out), -1);
  /* Output too small. */
  assert_int_equal (http_normalise_thumbprint (SHA1_UPPER, out, 20), -1);
}

static void
check_quote (const char *in, bool keep_slash, const char *expected)
{
  char *s = http_quote (in, keep_slash);

  assert_non_null (s);
  assert_string_equal (s, expected);
  free (s);
}

static void
test_quote (void **state)
{
  (void)state;
  check_quote ("", true, "");
  check_quote ("plain-Name_1.vmdk~", true, "plain-Name_1.vmdk~");
  check_quote ("my vm/my vm-flat.vmdk", true, "my%20vm/my%20vm-flat.vmdk");
  check_quote ("my vm/my vm-flat.vmdk", false, "my%20vm%2Fmy%20vm-flat.vmdk");
  check_quote ("[datastore1] vm", false, "%5Bdatastore1%5D%20vm");
  check_quote ("100%", true, "100%25");
  check_quote ("a&b?c#d+e=f", true, "a%26b%3Fc%23d%2Be%3Df");
  check_quote ("café/ü", true, "caf%C3%A9/%C3%BC");
  check_quote ("日本", false, "%E6%97%A5%E6%9C%AC");
  check_quote ("//", true, "//");
  check_quote ("//", false, "%2F%2F");
}

int
main (void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test (test_defaults),
    cmocka_unit_test (test_retry_5xx),
    cmocka_unit_test (test_no_retry_success_and_4xx),
    cmocka_unit_test (test_retry_after),
    cmocka_unit_test (test_retry_after_floor),
    cmocka_unit_test (test_backoff_growth_jitter_and_cap),
    cmocka_unit_test (test_budget),
    cmocka_unit_test (test_transport_errors),
    cmocka_unit_test (test_non_idempotent_post),
    cmocka_unit_test (test_thumbprint),
    cmocka_unit_test (test_quote),
  };

  return cmocka_run_group_tests (tests, NULL, NULL);
}
