/* SPDX-License-Identifier: Apache-2.0 */
/* ferry: unit tests of Kubernetes quantities as byte counts (quantity_parse). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "common/quantity.h"

static void
expect_bytes (const char *s, uint64_t want)
{
  uint64_t got = 0;
  const char *why = NULL;

  if (quantity_parse (s, &got, &why) == -1)
    fail_msg ("\"%s\": %s, expected %ju", s, why, (uintmax_t)want);
  if (got != want)
    fail_msg ("\"%s\" = %ju, expected %ju", s, (uintmax_t)got, (uintmax_t)want);
}

static void
expect_junk (const char *s, const char *words)
{
  uint64_t got = 12345;
  const char *why = NULL;

  if (quantity_parse (s, &got, &why) == 0)
    fail_msg ("\"%s\" parsed as %ju", s, (uintmax_t)got);
  assert_non_null (why);
  if (strstr (why, words) == NULL)
    fail_msg ("\"%s\": \"%s\" does not say \"%s\"", s, why, words);
}

static void
test_suffixes (void **state)
{
  expect_bytes ("10737418240", UINT64_C (10737418240));
  expect_bytes ("+42", 42);
  expect_bytes ("0", 0);
  expect_bytes ("0010", 10);
  expect_bytes ("1Ki", 1024);
  expect_bytes ("1Mi", UINT64_C (1) << 20);
  expect_bytes ("10Gi", UINT64_C (10) << 30);
  expect_bytes ("3Ti", UINT64_C (3) << 40);
  expect_bytes ("2Pi", UINT64_C (2) << 50);
  expect_bytes ("7Ei", UINT64_C (7) << 60);
  expect_bytes ("1k", 1000);
  expect_bytes ("1500M", UINT64_C (1500000000));
  expect_bytes ("2G", UINT64_C (2000000000));
  expect_bytes ("4T", UINT64_C (4000000000000));
  expect_bytes ("5P", UINT64_C (5000000000000000));
  expect_bytes ("1E", UINT64_C (1000000000000000000));
  expect_bytes ("1000Ki", 1024000);
}

static void
test_exponents_and_fractions (void **state)
{
  expect_bytes ("1e9", UINT64_C (1000000000));
  expect_bytes ("1E9", UINT64_C (1000000000));
  expect_bytes ("1e+3", 1000);
  expect_bytes ("25e-1", 3); /* 2.5 bytes round up */
  expect_bytes ("1.5Gi", UINT64_C (1610612736));
  expect_bytes (".5Ki", 512);
  expect_bytes ("1.e3", 1000);
  expect_bytes ("7.9Ei", UINT64_C (9108079886394091111));
  expect_bytes ("1500m", 2); /* milli: 1.5 bytes */
  expect_bytes ("0.000000000000000000000000001Gi", 1);
  expect_bytes ("1.000000000000000000000000Gi", UINT64_C (1) << 30);
  expect_bytes ("1e-1000", 1);
  expect_bytes ("0e1000", 0);
  expect_bytes ("9223372036854775807", INT64_MAX);
}

static void
test_junk (void **state)
{
  expect_junk ("", "not a number");
  expect_junk ("abc", "not a number");
  expect_junk (" 1Gi", "not a number");
  expect_junk (".", "not a number");
  expect_junk ("+", "not a number");
  expect_junk ("-1Gi", "negative");
  expect_junk ("10Gx", "suffix");
  expect_junk ("10GB", "suffix");
  expect_junk ("1K", "suffix");
  expect_junk ("1ki", "suffix");
  expect_junk ("1mi", "suffix");
  expect_junk ("1Gi ", "suffix");
  expect_junk ("1.2.3", "suffix");
  expect_junk ("1e", "suffix");
  expect_junk ("1ee3", "suffix");
  expect_junk ("1e3.5", "suffix");
  expect_junk ("1E+", "suffix");
  expect_junk ("9223372036854775808", "too large");
  expect_junk ("8Ei", "too large");
  expect_junk ("8192Pi", "too large");
  expect_junk ("1e19", "too large");
  expect_junk ("1e401", "too large");
  expect_junk ("1.2345678901234567891", "too many digits");
}

int
main (void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test (test_suffixes),
    cmocka_unit_test (test_exponents_and_fractions),
    cmocka_unit_test (test_junk),
  };
  return cmocka_run_group_tests (tests, NULL, NULL);
}
