/* SPDX-License-Identifier: Apache-2.0 */
/* ferry: unit tests of the vSphere provider's pure parts — envelopes, answer parsing with
 * both namespace prefixes, disks, changeIds, datastore paths and URL quoting.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "providers/vsphere/soap.h"

/* The same VirtualDisk as vCenter writes it (xsi:) and as vcsim does (XMLSchema-instance:).
 */
#define DEVICE_ANSWER(P, NSDECL)                                                           \
  "<?xml version=\"1.0\"?><soapenv:Envelope "                                              \
  "xmlns:soapenv=\"http://schemas.xmlsoap.org/soap/envelope/\" " NSDECL ">"                \
  "<soapenv:Body><RetrievePropertiesExResponse xmlns=\"urn:vim25\"><returnval><objects>"   \
  "<obj type=\"VirtualMachine\">vm-42</obj><propSet><name>config.hardware.device</name>"   \
  "<val " P ":type=\"ArrayOfVirtualDevice\">"                                              \
  "<VirtualDevice " P ":type=\"VirtualIDEController\"><key>200</key></VirtualDevice>"      \
  "<VirtualDevice " P ":type=\"VirtualDisk\"><key>2000</key>"                              \
  "<deviceInfo><label>Hard disk 1</label></deviceInfo>"                                    \
  "<backing " P ":type=\"VirtualDiskFlatVer2BackingInfo\">"                                \
  "<fileName>[data store 1] web 01/web 01.vmdk</fileName>"                                 \
  "<uuid>6000C291-aaaa</uuid>"                                                             \
  "<changeId>52 de c0 d9 b9 43 9d 10-61 d5 4c 1b e9 7b 65 63/81</changeId></backing>"      \
  "<capacityInKB>4194304</capacityInKB><capacityInBytes>4294967296</capacityInBytes>"      \
  "</VirtualDevice>"                                                                       \
  "<VirtualDevice " P ":type=\"VirtualDisk\"><key>2001</key>"                              \
  "<deviceInfo><label>Hard disk 2</label></deviceInfo>"                                    \
  "<backing " P ":type=\"VirtualDiskFlatVer2BackingInfo\">"                                \
  "<fileName>[ds2] web 01/web 01_1.vmdk</fileName></backing>"                              \
  "<capacityInKB>1024</capacityInKB></VirtualDevice>"                                      \
  "</val></propSet></objects></returnval></RetrievePropertiesExResponse>"                  \
  "</soapenv:Body></soapenv:Envelope>"

static void
check_disks (const char *answer)
{
  xmlDoc *doc;
  xmlNode *ret;
  struct vs_fault fault = { 0 };
  disk_vector disks = empty_vector;

  assert_int_equal (soap_parse (answer, strlen (answer), 200, &doc, &ret, &fault), 0);
  xmlNode *obj = xml_child (ret, "objects");
  assert_non_null (obj);
  assert_int_equal (vs_parse_disks (vs_prop (obj, "config.hardware.device"), &disks), 0);
  assert_int_equal (disks.len, 2);
  assert_string_equal (disks.ptr[0].key, "2000");
  assert_string_equal (disks.ptr[0].label, "Hard disk 1");
  assert_string_equal (disks.ptr[0].datastore, "data store 1");
  assert_string_equal (disks.ptr[0].file_name, "[data store 1] web 01/web 01.vmdk");
  assert_string_equal (disks.ptr[0].uuid, "6000C291-aaaa");
  assert_string_equal (disks.ptr[0].change_id,
                       "52 de c0 d9 b9 43 9d 10-61 d5 4c 1b e9 7b 65 63/81");
  assert_true (disks.ptr[0].capacity == UINT64_C (4294967296));
  assert_string_equal (disks.ptr[0].export_name, "2000-hard-disk-1");
  /* capacityInBytes missing: capacityInKB * 1024; no changeId: NULL. */
  assert_true (disks.ptr[1].capacity == 1024 * 1024);
  assert_null (disks.ptr[1].change_id);
  assert_null (disks.ptr[1].uuid);
  disk_vector_free (&disks);
  xmlFreeDoc (doc);
}

static void
test_disks_xsi_prefix (void **state)
{
  check_disks (
      DEVICE_ANSWER ("xsi", "xmlns:xsi=\"http://www.w3.org/2001/XMLSchema-instance\""));
}

static void
test_disks_vcsim_prefix (void **state)
{
  check_disks (DEVICE_ANSWER (
      "XMLSchema-instance",
      "xmlns:XMLSchema-instance=\"http://www.w3.org/2001/XMLSchema-instance\""));
}

/* A prefix bound to another namespace must not be taken for xsi. */
static void
test_type_by_namespace_only (void **state)
{
  const char *doc_text = "<a xmlns:xsi=\"urn:not-xsi\" xsi:type=\"VirtualDisk\"/>";
  xmlDoc *doc = xmlReadMemory (doc_text, strlen (doc_text), "t.xml", NULL, 0);
  char *type = xml_type (xmlDocGetRootElement (doc));
  assert_null (type);
  xmlFreeDoc (doc);
}

static void
test_non_flat_backing_refused (void **state)
{
  const char *text =
      "<val xmlns:xsi=\"http://www.w3.org/2001/XMLSchema-instance\">"
      "<VirtualDevice xsi:type=\"VirtualDisk\"><key>2000</key><backing "
      "xsi:type=\"VirtualDiskRawDiskMappingVer1BackingInfo\"><fileName>[ds] "
      "a/a.vmdk</fileName>"
      "</backing><capacityInBytes>1048576</capacityInBytes></VirtualDevice></val>";
  xmlDoc *doc = xmlReadMemory (text, strlen (text), "t.xml", NULL, 0);
  disk_vector disks = empty_vector;
  assert_int_equal (vs_parse_disks (xmlDocGetRootElement (doc), &disks), -1);
  disk_vector_free (&disks);
  xmlFreeDoc (doc);
}

static void
test_fault_parsing (void **state)
{
  /* vCenter: detail element InvalidLoginFault with xsi:type. */
  const char *vc =
      "<soapenv:Envelope xmlns:soapenv=\"http://schemas.xmlsoap.org/soap/envelope/\" "
      "xmlns:xsi=\"http://www.w3.org/2001/"
      "XMLSchema-instance\"><soapenv:Body><soapenv:Fault>"
      "<faultcode>ServerFaultCode</faultcode><faultstring>Cannot complete login due to an "
      "incorrect user name or password.</faultstring><detail><InvalidLoginFault "
      "xmlns=\"urn:vim25\" xsi:type=\"InvalidLogin\"></InvalidLoginFault></detail>"
      "</soapenv:Fault></soapenv:Body></soapenv:Envelope>";
  /* Without xsi:type: the element name minus "Fault". */
  const char *plain =
      "<soapenv:Envelope xmlns:soapenv=\"http://schemas.xmlsoap.org/soap/envelope/\">"
      "<soapenv:Body><soapenv:Fault><faultcode>ServerFaultCode</faultcode>"
      "<faultstring>The session is not authenticated.</faultstring><detail>"
      "<NotAuthenticatedFault xmlns=\"urn:vim25\"/></detail></soapenv:Fault></soapenv:Body>"
      "</soapenv:Envelope>";
  xmlDoc *doc;
  xmlNode *ret;
  struct vs_fault fault = { 0 };

  assert_int_equal (soap_parse (vc, strlen (vc), 500, &doc, &ret, &fault), -1);
  assert_string_equal (fault.type, "InvalidLogin");
  assert_string_equal (fault.message,
                       "Cannot complete login due to an incorrect user name or password.");
  vs_fault_reset (&fault);
  assert_int_equal (soap_parse (plain, strlen (plain), 500, &doc, &ret, &fault), -1);
  assert_string_equal (fault.type, "NotAuthenticated");
  vs_fault_reset (&fault);
  /* Not XML at all (a proxy's error page). */
  assert_int_equal (soap_parse ("<html>502", 9, 502, &doc, &ret, &fault), -1);
  assert_string_equal (fault.type, "InvalidResponse");
  assert_non_null (strstr (fault.message, "HTTP 502"));
  vs_fault_reset (&fault);
}

static void
test_envelope (void **state)
{
  char *e = soap_envelope ("Login", "SessionManager", "SessionManager",
                           "<userName>a&amp;b</userName>");
  assert_non_null (strstr (e,
                           "<Login xmlns=\"urn:vim25\"><_this type=\"SessionManager\">"
                           "SessionManager</_this><userName>a&amp;b</userName></Login>"));
  assert_non_null (
      strstr (e, "xmlns:soapenv=\"http://schemas.xmlsoap.org/soap/envelope/\""));
  /* The envelope parses as XML. */
  xmlDoc *doc = xmlReadMemory (e, strlen (e), "e.xml", NULL, 0);
  assert_non_null (doc);
  xmlFreeDoc (doc);
  free (e);

  char *esc = xml_escape ("<p&ss\"'>");
  assert_string_equal (esc, "&lt;p&amp;ss&quot;&apos;&gt;");
  free (esc);
}

static void
test_change_id (void **state)
{
  char uuid[64];
  uint64_t seq;

  assert_int_equal (
      vs_parse_change_id ("52 de c0 d9 b9 43 9d 10-61 d5 4c 1b e9 7b 65 63/81", uuid,
                          sizeof uuid, &seq),
      0);
  assert_string_equal (uuid, "52 de c0 d9 b9 43 9d 10-61 d5 4c 1b e9 7b 65 63");
  assert_true (seq == 81);
  assert_int_equal (vs_parse_change_id ("*", uuid, sizeof uuid, &seq), -1);
  assert_int_equal (vs_parse_change_id ("52 de/1", uuid, sizeof uuid, &seq), -1);
  assert_int_equal (vs_parse_change_id ("52 de c0 d9 b9 43 9d 10-61 d5 4c 1b e9 7b 65 63/",
                                        uuid, sizeof uuid, &seq),
                    -1);
  assert_int_equal (vs_parse_change_id ("52 de c0 d9 b9 43 9d 10-61 d5 4c 1b e9 7b 65 6x/2",
                                        uuid, sizeof uuid, &seq),
                    -1);
  assert_int_equal (
      vs_parse_change_id ("52 de c0 d9 b9 43 9d 10-61 d5 4c 1b e9 7b 65 63/1a", uuid,
                          sizeof uuid, &seq),
      -1);
}

static void
test_file_name_and_url (void **state)
{
  char *ds, *path, *url;

  assert_int_equal (vs_parse_file_name ("[data store 1] web 01/web 01.vmdk", &ds, &path),
                    0);
  assert_string_equal (ds, "data store 1");
  assert_string_equal (path, "web 01/web 01.vmdk");
  url = vs_folder_url (ds, path, "Folder A/DC #1");
  assert_string_equal (url, "/folder/web%2001/web%2001-flat.vmdk"
                            "?dcPath=Folder%20A%2FDC%20%231&dsName=data%20store%201");
  free (url);
  free (ds);
  free (path);
  url = vs_folder_url ("a&b", "x+y/z[1].vmdk", "DC0");
  assert_string_equal (url, "/folder/x%2By/z%5B1%5D-flat.vmdk?dcPath=DC0&dsName=a%26b");
  free (url);
  assert_int_equal (vs_parse_file_name ("no brackets.vmdk", &ds, &path), -1);
  assert_int_equal (vs_parse_file_name ("[ds]", &ds, &path), -1);
  assert_int_equal (vs_parse_file_name ("[] a.vmdk", &ds, &path), -1);
}

static void
test_export_names_and_merge (void **state)
{
  char *n = provider_export_name ("2000", "Hard disk 1");
  assert_string_equal (n, "2000-hard-disk-1");
  free (n);
  n = provider_export_name ("2001", "  Disk (boot) #2 ");
  assert_string_equal (n, "2001-disk-boot-2");
  free (n);
  n = provider_export_name ("2002", NULL);
  assert_string_equal (n, "2002");
  free (n);

  extent_vector v = empty_vector;
  assert_int_equal (extent_append_merge (&v, 0, 65536), 0);
  assert_int_equal (extent_append_merge (&v, 65536, 65536), 0);  /* touches: merged */
  assert_int_equal (extent_append_merge (&v, 100000, 50000), 0); /* overlaps: merged */
  assert_int_equal (extent_append_merge (&v, 262144, 0), 0);     /* empty: ignored */
  assert_int_equal (extent_append_merge (&v, 262144, 65536), 0); /* gap: new */
  assert_int_equal (v.len, 2);
  assert_true (v.ptr[0].offset == 0 && v.ptr[0].length == 150000);
  assert_true (v.ptr[1].offset == 262144 && v.ptr[1].length == 65536);
  extent_vector_reset (&v);
}

/* An answer with a DOCTYPE is refused before any entity is declared, expanded or loaded,
 * whatever the DOCTYPE holds, and the refusal says why.
 */
#define ENVELOPE_OPEN                                                                      \
  "<soapenv:Envelope xmlns:soapenv=\"http://schemas.xmlsoap.org/soap/envelope/\">"         \
  "<soapenv:Body>"
#define ENVELOPE_CLOSE "</soapenv:Body></soapenv:Envelope>"

static void
check_doctype_refused (const char *answer)
{
  xmlDoc *doc = (xmlDoc *)1;
  xmlNode *ret = (xmlNode *)1;
  struct vs_fault fault = { 0 };

  assert_int_equal (soap_parse (answer, strlen (answer), 200, &doc, &ret, &fault), -1);
  assert_null (doc);
  assert_null (ret);
  assert_string_equal (fault.type, "InvalidResponse");
  assert_non_null (strstr (fault.message, "DOCTYPE"));
  vs_fault_reset (&fault);
}

static void
test_doctype_refused (void **state)
{
  char marker_file[] = "/tmp/ferry-xxe.XXXXXX", *xxe = NULL;
  int fd;

  (void)state;
  /* Billion laughs: 10^9 "lol"s if expanded. */
  check_doctype_refused (
      "<?xml version=\"1.0\"?><!DOCTYPE lolz [<!ENTITY lol \"lol\">"
      "<!ENTITY lol1 \"&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;\">"
      "<!ENTITY lol2 \"&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;\">"
      "<!ENTITY lol3 \"&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;\">"
      "<!ENTITY lol4 \"&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;\">"
      "<!ENTITY lol5 \"&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;\">"
      "<!ENTITY lol6 \"&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;\">"
      "<!ENTITY lol7 \"&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;\">"
      "<!ENTITY lol8 \"&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;\">"
      "<!ENTITY lol9 "
      "\"&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;\">]>" ENVELOPE_OPEN
      "<soapenv:Fault><faultcode>x</faultcode><faultstring>&lol9;</faultstring>"
      "</soapenv:Fault>" ENVELOPE_CLOSE);

  /* An external entity that would read a local file into the answer. */
  fd = mkstemp (marker_file);
  assert_true (fd >= 0);
  assert_int_equal (write (fd, "XXE-MARKER", 10), 10);
  close (fd);
  assert_true (asprintf (&xxe,
                         "<?xml version=\"1.0\"?><!DOCTYPE e [<!ENTITY x SYSTEM "
                         "\"file://%s\">]>" ENVELOPE_OPEN
                         "<RetrieveServiceContentResponse xmlns=\"urn:vim25\"><returnval>"
                         "<rootFolder>&x;</rootFolder></returnval>"
                         "</RetrieveServiceContentResponse>" ENVELOPE_CLOSE,
                         marker_file) > 0);
  check_doctype_refused (xxe);
  free (xxe);
  unlink (marker_file);

  /* A DOCTYPE with an external DTD only (never fetched), after a comment. */
  check_doctype_refused ("<?xml version=\"1.0\"?><!-- hello --><!DOCTYPE soapenv:Envelope "
                         "SYSTEM \"http://127.0.0.1:9/x.dtd\">" ENVELOPE_OPEN
                         "<LogoutResponse xmlns=\"urn:vim25\"/>" ENVELOPE_CLOSE);
  /* An empty internal subset is a DOCTYPE all the same. */
  check_doctype_refused ("<!DOCTYPE a []>" ENVELOPE_OPEN
                         "<LogoutResponse/>" ENVELOPE_CLOSE);
}

/* "<!DOCTYPE" as data (CDATA, escaped text) is just text; an entity never declared is an
 * error, not an empty string.
 */
static void
test_doctype_as_text_and_undeclared_entity (void **state)
{
  const char *cdata = ENVELOPE_OPEN
      "<soapenv:Fault><faultcode>x</faultcode>"
      "<faultstring><![CDATA[<!DOCTYPE a []>]]> &lt;!DOCTYPE b&gt;</faultstring>"
      "</soapenv:Fault>" ENVELOPE_CLOSE;
  const char *undeclared = ENVELOPE_OPEN "<soapenv:Fault><faultcode>x</faultcode>"
                                         "<faultstring>&undeclared;</faultstring>"
                                         "</soapenv:Fault>" ENVELOPE_CLOSE;
  xmlDoc *doc;
  xmlNode *ret;
  struct vs_fault fault = { 0 };

  (void)state;
  assert_int_equal (soap_parse (cdata, strlen (cdata), 500, &doc, &ret, &fault), -1);
  assert_string_equal (fault.message, "<!DOCTYPE a []> <!DOCTYPE b>");
  vs_fault_reset (&fault);
  assert_int_equal (soap_parse (undeclared, strlen (undeclared), 500, &doc, &ret, &fault),
                    -1);
  assert_string_equal (fault.type, "InvalidResponse");
  assert_null (strstr (fault.message, "DOCTYPE"));
  vs_fault_reset (&fault);
}

int
main (void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test (test_disks_xsi_prefix),
    cmocka_unit_test (test_disks_vcsim_prefix),
    cmocka_unit_test (test_type_by_namespace_only),
    cmocka_unit_test (test_non_flat_backing_refused),
    cmocka_unit_test (test_fault_parsing),
    cmocka_unit_test (test_envelope),
    cmocka_unit_test (test_change_id),
    cmocka_unit_test (test_file_name_and_url),
    cmocka_unit_test (test_export_names_and_merge),
    cmocka_unit_test (test_doctype_refused),
    cmocka_unit_test (test_doctype_as_text_and_undeclared_entity),
  };
  return cmocka_run_group_tests (tests, NULL, NULL);
}
