/* SPDX-License-Identifier: Apache-2.0 */
/* ferry: unit tests of libconvert's pure parts — the libvirt XML virt-v2v reads, DNS-1123
 * names, PVC sizes, the count of blocks an overlay holds, and the YAML writer.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <jansson.h>

#include "convert/convert.h"

#define MiB (UINT64_C (1) << 20)

static json_t *
description (const char *firmware)
{
  return json_pack ("{s:s, s:s, s:i, s:I, s:s, s:[{s:s, s:I}, {s:s, s:I}], "
                    "s:[{s:s, s:s, s:s}, {s:s, s:s, s:s}]}",
                    "name", "db<01>&'x", "uuid", "4211-aa", "cpus", 3, "memoryMB",
                    (json_int_t)6144, "firmware", firmware, "disks", "key", "2000",
                    "capacity", (json_int_t)(1 << 30), "key", "2001", "capacity",
                    (json_int_t)(2 << 20), "nics", "type", "VirtualE1000e", "mac",
                    "00:50:56:01:02:03", "network", "VM Network", "type", "VirtualVmxnet3",
                    "mac", "00:50:56:0a:0b:0c", "network", "Prod & Test");
}

static void
test_xml (void **state)
{
  json_t *d = description ("efi");
  int ports[2] = { 10809, 40123 };
  char *xml = convert_libvirt_xml (d, ports, 2);

  assert_non_null (xml);
  /* virt-v2v 2.2 takes an NBD disk only with the literal name localhost and a port. */
  assert_non_null (strstr (xml, "<source protocol='nbd'><host name='localhost' "
                                "port='10809'/></source>\n      <target dev='sda'"));
  assert_non_null (strstr (xml, "port='40123'/></source>\n      <target dev='sdb'"));
  assert_true (strstr (xml, "port='10809'") < strstr (xml, "port='40123'"));
  assert_non_null (strstr (xml, "<domain type='vmware'>"));
  assert_non_null (strstr (xml, "<name>db&lt;01&gt;&amp;&apos;x</name>"));
  assert_non_null (strstr (xml, "<memory unit='KiB'>6291456</memory>"));
  assert_non_null (strstr (xml, "<vcpu>3</vcpu>"));
  assert_non_null (strstr (xml, "<os firmware='efi'>"));
  assert_non_null (strstr (xml, "<mac address='00:50:56:01:02:03'/>\n      <source "
                                "bridge='VM Network'/>\n      <model type='e1000e'/>"));
  assert_non_null (strstr (xml, "<source bridge='Prod &amp; Test'/>\n      <model "
                                "type='vmxnet3'/>"));
  free (xml);
  json_decref (d);

  /* BIOS: no firmware attribute; a port list that does not match the disks is refused. */
  d = description ("bios");
  xml = convert_libvirt_xml (d, ports, 2);
  assert_non_null (strstr (xml, "<os>\n"));
  free (xml);
  assert_null (convert_libvirt_xml (d, ports, 1));
  json_decref (d);
}

static void
test_dns_name (void **state)
{
  char out[64];
  char long_name[100];

  convert_dns_name ("Web_01.prod", out);
  assert_string_equal (out, "web-01-prod");
  convert_dns_name ("--DB  (new)--", out);
  assert_string_equal (out, "db-new");
  convert_dns_name ("***", out);
  assert_string_equal (out, "vm");
  memset (long_name, 'a', sizeof long_name - 1);
  long_name[sizeof long_name - 1] = '\0';
  long_name[62] = '-';
  convert_dns_name (long_name, out);
  assert_int_equal (strlen (out), 62); /* cut at 63, then the trailing '-' dropped */
  assert_true (out[61] == 'a');
}

static void
test_pvc_size (void **state)
{
  /* 1 GiB / 0.945 = 1083.6 MiB -> 1084 MiB. */
  assert_int_equal (convert_pvc_size (1024 * MiB, true, 0.055), 1084 * MiB);
  /* 5000000 B -> 5 MiB aligned -> 5.29 MiB -> 6 MiB; block: aligned only. */
  assert_int_equal (convert_pvc_size (5000000, true, 0.055), 6 * MiB);
  assert_int_equal (convert_pvc_size (5000000, false, 0.055), 5 * MiB);
  assert_int_equal (convert_pvc_size (64 * MiB, false, 0.055), 64 * MiB);
  /* Never smaller than the disk plus its overhead share. */
  for (uint64_t s = 1; s < 4096 * MiB; s = s * 3 + 12345) {
    uint64_t p = convert_pvc_size (s, true, 0.055);
    assert_true (p % MiB == 0);
    assert_true ((double)p * (1 - 0.055) >= (double)s);
  }
}

static void
test_overlay_blocks (void **state)
{
  /* Depth 0 = in the overlay: [0, 64K) data, [128K, 192K+4K) data (2 blocks), a zero
   * cluster at 1 MiB; depth 1 = the backing file, not counted.
   */
  const char *map =
      "[{ \"start\": 0, \"length\": 65536, \"depth\": 0, \"present\": true, \"zero\": "
      "false, \"data\": true},"
      "{ \"start\": 65536, \"length\": 65536, \"depth\": 1, \"present\": true, \"zero\": "
      "false, \"data\": true},"
      "{ \"start\": 131072, \"length\": 69632, \"depth\": 0, \"present\": true, \"zero\": "
      "false, \"data\": true},"
      "{ \"start\": 200704, \"length\": 4096, \"depth\": 0, \"present\": true, \"zero\": "
      "true, \"data\": false},"
      "{ \"start\": 1048576, \"length\": 65536, \"depth\": 0, \"present\": true, \"zero\": "
      "true, \"data\": false}]";

  assert_int_equal (convert_count_overlay_blocks (map), 4);
  assert_int_equal (convert_count_overlay_blocks ("[]"), 0);
  assert_int_equal (convert_count_overlay_blocks ("qemu-img: error"), -1);
}

static void
test_yaml (void **state)
{
  json_t *doc =
      json_pack ("{s:s, s:{s:[{s:s, s:{s:s}}, {}], s:{}, s:[s], s:i, s:b}, s:s}", "kind",
                 "X", "spec", "list", "name", "a: b", "m", "k", "v", "empty", "tags", "yes",
                 "n", 7, "on", 1, "app.kubernetes.io/x", "y");
  char *buf = NULL;
  size_t len = 0;
  FILE *fp = open_memstream (&buf, &len);

  convert_yaml_emit (fp, doc);
  fclose (fp);
  assert_string_equal (buf, "---\n"
                            "kind: \"X\"\n"
                            "spec:\n"
                            "  list:\n"
                            "    - name: \"a: b\"\n"
                            "      m:\n"
                            "        k: \"v\"\n"
                            "    - {}\n"
                            "  empty: {}\n"
                            "  tags:\n"
                            "    - \"yes\"\n"
                            "  \"n\": 7\n"
                            "  \"on\": true\n"
                            "app.kubernetes.io/x: \"y\"\n");
  free (buf);
  json_decref (doc);
}

static void
test_vmdk (void **state)
{
  struct convert_vmdk v;
  char *why;

  /* A VMFS base disk as the datastore holds it. */
  assert_int_equal (convert_vmdk_parse ("# Disk DescriptorFile\nversion=1\nCID=1a2b\n"
                                        "parentCID=ffffffff\ncreateType=\"vmfs\"\n\n"
                                        "RW 2097152 VMFS \"web01-flat.vmdk\"\n\n"
                                        "ddb.uuid = \"60 00 C2 9a 11 22 33 44-55 66 77 88 "
                                        "99 aa bb cc\"\n",
                                        &v, &why),
                    0);
  assert_string_equal (v.extent, "web01-flat.vmdk");
  assert_int_equal (v.size, 2097152 * UINT64_C (512));
  assert_true (convert_same_uuid (v.uuid, "6000C29a-1122-3344-5566-778899aabbcc"));
  assert_false (convert_same_uuid (v.uuid, "6000C29a-1122-3344-5566-778899aabbcd"));
  assert_false (convert_same_uuid (v.uuid, "6000C29a-1122-3344-5566-778899aabb"));
  free (v.extent);
  free (v.uuid);
  /* monolithicFlat, offset 0, CRLF, no uuid. */
  assert_int_equal (convert_vmdk_parse ("createType=\"monolithicFlat\"\r\n"
                                        "RW 2048 FLAT \"a b-flat.vmdk\" 0\r\n",
                                        &v, &why),
                    0);
  assert_string_equal (v.extent, "a b-flat.vmdk");
  assert_null (v.uuid);
  free (v.extent);

  /* Refused, each with its reason. */
  static const struct {
    const char *text, *why;
  } bad[] = {
    { "KDMV\x01", "sparse VMDK" },
    { "createType=\"monolithicSparse\"\nRW 2048 SPARSE \"a.vmdk\"\n", "SPARSE" },
    { "createType=\"streamOptimized\"\n", "createType \"streamOptimized\"" },
    { "createType=\"vmfs\"\nRW 2048 VMFS \"a-flat.vmdk\"\nRW 2048 VMFS \"b-flat.vmdk\"\n",
      "2 extents" },
    { "createType=\"vmfs\"\n", "0 extents" },
    { "createType=\"monolithicFlat\"\nRW 2048 FLAT \"a-flat.vmdk\" 63\n", "sector 63" },
    { "createType=\"vmfs\"\nRDONLY 2048 VMFS \"a-flat.vmdk\"\n", "not RW" },
    { "parentCID=1234abcd\ncreateType=\"vmfs\"\nRW 2048 VMFS \"a-flat.vmdk\"\n", "child" },
    { "createType=\"vmfs\"\nRW 2048 VMFS \"../x/a-flat.vmdk\"\n", "not in the" },
    { "hello\n", "not a VMDK descriptor" },
  };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    assert_int_equal (convert_vmdk_parse (bad[i].text, &v, &why), -1);
    assert_non_null (why);
    if (strstr (why, bad[i].why) == NULL)
      fail_msg ("descriptor %zu: \"%s\" lacks \"%s\"", i, why, bad[i].why);
    assert_null (v.extent);
    free (why);
  }
}

int
main (void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test (test_xml),      cmocka_unit_test (test_dns_name),
    cmocka_unit_test (test_pvc_size), cmocka_unit_test (test_overlay_blocks),
    cmocka_unit_test (test_yaml),     cmocka_unit_test (test_vmdk),
  };
  return cmocka_run_group_tests (tests, NULL, NULL);
}
