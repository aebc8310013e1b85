/* SPDX-License-Identifier: Apache-2.0 */
/* ferry: unit tests of the plugin's parameter checks (source_config_check). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "common/log.h"
#include "providers/source.h"

static char last_error[1024];

static void
capture (const char *msg)
{
  strncpy (last_error, msg, sizeof last_error - 1);
}

static struct source_config
good (void)
{
  return (struct source_config){
    .provider = "vsphere",
    .server = "vc.example:8443",
    .user = "admin",
    .password = "secret",
    .vm = "vm-42",
    .sslverify = true,
    .connections = 4,
  };
}

static void
expect_error (struct source_config c, const char *words)
{
  last_error[0] = '\0';
  assert_int_equal (source_config_check (&c), -1);
  if (strstr (last_error, words) == NULL)
    fail_msg ("error \"%s\" does not say \"%s\"", last_error, words);
  /* The password never appears in a message. */
  assert_null (strstr (last_error, "secret"));
}

static void
test_good (void **state)
{
  struct source_config c = good ();
  assert_int_equal (source_config_check (&c), 0);
  c.vm = NULL;
  c.vm_uuid = "4213a5b0-0000-0000-0000-000000000001";
  c.thumbprint = "aa:bb:cc:dd:ee:ff:00:11:22:33:44:55:66:77:88:99:aa:bb:cc:dd";
  assert_int_equal (source_config_check (&c), 0);
}

static void
test_bad (void **state)
{
  struct source_config c;

  c = good ();
  c.provider = "hyperv";
  expect_error (c, "provider=hyperv");
  c = good ();
  c.provider = NULL;
  expect_error (c, "provider=(missing)");
  c = good ();
  c.password = NULL;
  expect_error (c, "password=");
  c = good ();
  c.server = "https://vc.example/sdk";
  expect_error (c, "not a URL");
  c = good ();
  c.vm = NULL;
  expect_error (c, "exactly one of vm=");
  c = good ();
  c.vm_uuid = "x";
  expect_error (c, "exactly one of vm=");
  c = good ();
  c.cacert = "/ca.pem";
  c.thumbprint = "AA";
  expect_error (c, "exclusive");
  c = good ();
  c.sslverify = false;
  c.cacert = "/ca.pem";
  expect_error (c, "sslverify=false cannot");
  c = good ();
  c.thumbprint = "AA:BB:CC";
  expect_error (c, "SHA-1 (20 bytes) or SHA-256");
  c = good ();
  c.connections = 0;
  expect_error (c, "between 1 and 64");
  c = good ();
  c.connections = 65;
  expect_error (c, "between 1 and 64");
}

int
main (void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test (test_good),
    cmocka_unit_test (test_bad),
  };
  log_set_handlers (capture, capture);
  return cmocka_run_group_tests (tests, NULL, NULL);
}
