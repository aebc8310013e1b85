/* SPDX-License-Identifier: Apache-2.0 */
/* ferry: unit tests of the RHV provider's pure parts — the engine's JSON with string
 * scalars, collections and follows, faults (JSON, XML, SSO), imageio extents and the
 * engine URL.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <jansson.h>

#include "providers/rhv/rhv.h"

/* A VM with ?follow=disk_attachments.disk as the engine writes it: every scalar a string.
 * The second attachment is inactive (not part of the VM's storage now).
 */
static const char vm_answer[] =
    "{\"id\":\"123e4567-e89b-12d3-a456-426614174000\",\"name\":\"web01\",\"status\":\"up\","
    "\"host\":{\"id\":\"h1\",\"href\":\"/ovirt-engine/api/hosts/h1\"},"
    "\"disk_attachments\":{\"disk_attachment\":["
    "{\"id\":\"d1\",\"active\":\"true\",\"bootable\":\"true\",\"interface\":\"virtio_"
    "scsi\","
    "\"disk\":{\"id\":\"d1\",\"alias\":\"web01_Disk1\",\"provisioned_size\":"
    "\"46137344000\",\"actual_size\":\"1073741824\","
    "\"format\":\"cow\",\"status\":\"ok\",\"storage_type\":\"image\",\"backup\":"
    "\"incremental\",\"storage_domains\":{\"storage_domain\":[{\"id\":\"sd1\"}]}}},"
    "{\"id\":\"d2\",\"active\":\"false\",\"bootable\":\"false\","
    "\"disk\":{\"id\":\"d2\",\"alias\":\"old\",\"provisioned_size\":\"1024\"}},"
    "{\"id\":\"d3\",\"active\":\"true\",\"bootable\":\"false\",\"interface\":\"virtio\","
    "\"disk\":{\"id\":\"d3\",\"alias\":\"data\",\"provisioned_size\":1048576,"
    "\"format\":\"raw\"}}]}}";

static void
test_string_scalars (void **state)
{
  json_t *j =
      json_loads ("{\"a\":\"46137344\",\"b\":7,\"c\":\"-1\",\"d\":\"12x\",\"e\":\"\","
                  "\"t\":\"true\",\"f\":\"false\",\"tb\":true,\"x\":\"yes\","
                  "\"big\":\"18446744073709551615\",\"over\":\"18446744073709551616\"}",
                  0, NULL);
  uint64_t n = 0;

  assert_non_null (j);
  assert_int_equal (rhv_json_u64 (j, "a", &n), 0);
  assert_true (n == 46137344);
  assert_int_equal (rhv_json_u64 (j, "b", &n), 0);
  assert_true (n == 7);
  assert_int_equal (rhv_json_u64 (j, "big", &n), 0);
  assert_true (n == UINT64_MAX);
  assert_int_equal (rhv_json_u64 (j, "c", &n), -1);
  assert_int_equal (rhv_json_u64 (j, "d", &n), -1);
  assert_int_equal (rhv_json_u64 (j, "e", &n), -1);
  assert_int_equal (rhv_json_u64 (j, "over", &n), -1);
  assert_int_equal (rhv_json_u64 (j, "missing", &n), -1);
  assert_true (rhv_json_bool (j, "t", false));
  assert_false (rhv_json_bool (j, "f", true));
  assert_true (rhv_json_bool (j, "tb", false));
  assert_false (rhv_json_bool (j, "x", false)); /* not a boolean: the default */
  assert_true (rhv_json_bool (j, "missing", true));
  assert_string_equal (rhv_json_str (j, "a"), "46137344");
  assert_null (rhv_json_str (j, "b"));
  json_decref (j);
}

static void
test_lists (void **state)
{
  json_t *j = json_loads ("{\"vm\":[{\"id\":\"1\"},{\"id\":\"2\"}],"
                          "\"disk_attachments\":{\"disk_attachment\":[{\"id\":\"a\"}]},"
                          "\"empty\":{}}",
                          0, NULL);

  assert_int_equal (json_array_size (rhv_json_list (j, "vm", NULL)), 2);
  assert_int_equal (
      json_array_size (rhv_json_list (j, "disk_attachments", "disk_attachment")), 1);
  /* A collection with nothing in it has no key at all. */
  assert_int_equal (json_array_size (rhv_json_list (j, "empty", "disk_attachment")), 0);
  assert_int_equal (json_array_size (rhv_json_list (j, "checkpoint", NULL)), 0);
  assert_true (json_is_array (rhv_json_list (j, "checkpoint", NULL)));
  json_decref (j);
}

static void
test_vm_with_disks (void **state)
{
  json_t *j = json_loads (vm_answer, 0, NULL);
  struct rhv_vm vm;

  assert_non_null (j);
  assert_int_equal (rhv_parse_vm (j, &vm), 0);
  assert_string_equal (vm.id, "123e4567-e89b-12d3-a456-426614174000");
  assert_string_equal (vm.name, "web01");
  assert_string_equal (vm.status, "up");
  assert_string_equal (vm.host, "h1");
  assert_int_equal (vm.disks.len, 2); /* the inactive one is left out */
  assert_string_equal (vm.disks.ptr[0].id, "d1");
  assert_string_equal (vm.disks.ptr[0].alias, "web01_Disk1");
  assert_true (vm.disks.ptr[0].provisioned_size == 46137344000ULL);
  assert_true (vm.disks.ptr[0].actual_size == 1073741824ULL);
  assert_true (vm.disks.ptr[1].actual_size == 0); /* not given */
  assert_string_equal (vm.disks.ptr[0].format, "cow");
  assert_string_equal (vm.disks.ptr[0].backup, "incremental");
  assert_string_equal (vm.disks.ptr[0].storage_domain, "sd1");
  assert_string_equal (vm.disks.ptr[0].interface, "virtio_scsi");
  assert_true (vm.disks.ptr[0].bootable);
  assert_string_equal (vm.disks.ptr[1].id, "d3");
  assert_true (vm.disks.ptr[1].provisioned_size == 1048576); /* a number works too */
  assert_false (vm.disks.ptr[1].bootable);
  assert_null (vm.disks.ptr[1].storage_domain);
  rhv_vm_free (&vm);
  json_decref (j);
}

static void
test_vm_refused (void **state)
{
  struct rhv_vm vm;
  /* Attachments without the disk's details (no follow) and a disk without a size. */
  json_t *a = json_loads ("{\"id\":\"v\",\"status\":\"down\",\"disk_attachments\":"
                          "{\"disk_attachment\":[{\"id\":\"d\",\"disk\":{\"id\":\"d\"}}]}}",
                          0, NULL);
  json_t *b = json_loads ("{\"id\":\"d\",\"provisioned_size\":\"lots\"}", 0, NULL);
  json_t *c = json_loads ("{\"name\":\"no id\"}", 0, NULL);
  struct rhv_disk d;

  assert_int_equal (rhv_parse_vm (a, &vm), -1);
  assert_int_equal (rhv_parse_disk (b, &d), -1);
  assert_int_equal (rhv_parse_vm (c, &vm), -1);
  json_decref (a);
  json_decref (b);
  json_decref (c);
}

static void
check_fault (const char *body, const char *want)
{
  char *s = rhv_fault_message (body);
  assert_non_null (s);
  assert_string_equal (s, want);
  free (s);
}

static void
test_faults (void **state)
{
  check_fault (
      "{\"reason\":\"Operation Failed\",\"detail\":\"[Cannot transfer Virtual Disk: "
      "Disk is locked.]\"}",
      "Operation Failed: [Cannot transfer Virtual Disk: Disk is locked.]");
  check_fault ("<?xml version=\"1.0\"?><fault><reason>Operation Failed</reason>"
               "<detail>[Cannot backup VM &amp; disks]</detail></fault>",
               "Operation Failed: [Cannot backup VM & disks]");
  check_fault ("{\"error_code\":\"access_denied\",\"error\":\"Cannot authenticate user\"}",
               "Cannot authenticate user");
  check_fault ("{\"error\":\"invalid_grant\",\"error_description\":\"bad password\"}",
               "bad password");
  check_fault ("You are not allowed to access this resource: no ticket\nmore",
               "You are not allowed to access this resource: no ticket");
  check_fault ("", "(no message)");
}

static void
test_extents (void **state)
{
  rhv_extent_vector v = empty_vector;
  char *why = NULL;

  assert_int_equal (
      rhv_parse_extents (
          "[{\"start\":0,\"length\":65536,\"zero\":false,\"hole\":false},"
          "{\"start\":65536,\"length\":1048576,\"zero\":true,\"hole\":true},"
          "{\"start\":1114112,\"length\":65536,\"dirty\":true,\"zero\":true}]",
          &v, &why),
      0);
  assert_int_equal (v.len, 3);
  assert_false (v.ptr[0].zero);
  assert_true (v.ptr[1].zero && v.ptr[1].hole && !v.ptr[1].dirty);
  assert_true (v.ptr[1].start == 65536 && v.ptr[1].length == 1048576);
  assert_true (v.ptr[2].dirty && v.ptr[2].zero && !v.ptr[2].hole);
  /* A gap or an overlap is refused: the list must cover the image from 0. */
  assert_int_equal (rhv_parse_extents ("[{\"start\":0,\"length\":10},{\"start\":20,"
                                       "\"length\":10}]",
                                       &v, &why),
                    -1);
  assert_non_null (strstr (why, "starts at 20, expected 10"));
  free (why);
  assert_int_equal (rhv_parse_extents ("{\"start\":0}", &v, &why), -1);
  free (why);
  assert_int_equal (rhv_parse_extents ("[{\"start\":0}]", &v, &why), -1);
  free (why);
  rhv_extent_vector_reset (&v);
}

static void
test_url (void **state)
{
  char *base, *api, *sso, *logout;

  assert_int_equal (rhv_parse_url ("https://engine.example.com:8443/ovirt-engine/api/",
                                   &base, &api, &sso, &logout),
                    0);
  assert_string_equal (base, "https://engine.example.com:8443");
  assert_string_equal (api, "/ovirt-engine/api");
  assert_string_equal (sso, "/ovirt-engine/sso/oauth/token");
  assert_string_equal (logout, "/ovirt-engine/services/sso-logout");
  free (base);
  free (api);
  free (sso);
  free (logout);
  assert_int_equal (
      rhv_parse_url ("https://engine/ovirt-engine", &base, &api, &sso, &logout), -1);
  assert_int_equal (rhv_parse_url ("engine/ovirt-engine/api", &base, &api, &sso, &logout),
                    -1);
  assert_int_equal (rhv_parse_url ("https://engine", &base, &api, &sso, &logout), -1);
}

static void
test_xml_body (void **state)
{
  char *x = rhv_xml ("image_transfer", "disk@id", "d<1>", "direction", "download", "format",
                     "raw", (const char *)NULL);

  assert_non_null (x);
  assert_non_null (strstr (x, "<image_transfer><disk id=\"d&lt;1&gt;\"/>"
                              "<direction>download</direction><format>raw</format>"
                              "</image_transfer>"));
  free (x);
  x = rhv_xml ("action", (const char *)NULL);
  assert_non_null (strstr (x, "<action/>"));
  free (x);
}

int
main (void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test (test_string_scalars),
    cmocka_unit_test (test_lists),
    cmocka_unit_test (test_vm_with_disks),
    cmocka_unit_test (test_vm_refused),
    cmocka_unit_test (test_faults),
    cmocka_unit_test (test_extents),
    cmocka_unit_test (test_url),
    cmocka_unit_test (test_xml_body),
  };
  return cmocka_run_group_tests (tests, NULL, NULL);
}
