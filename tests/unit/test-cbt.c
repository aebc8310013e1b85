/* SPDX-License-Identifier: Apache-2.0 */
/* ferry: unit tests of the QueryChangedDiskAreas window loop, with soap_call replaced by
 * canned server answers (-Wl,--wrap=soap_call).
 */
#include <inttypes.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "providers/vsphere/soap.h"

#define MiB (UINT64_C (1024) * 1024)
#define KiB UINT64_C (1024)

/* One canned window: the answer for a request at START. */
struct window {
  uint64_t start, length;
  int nareas;
  uint64_t areas[4][2];
};

static const struct window *windows;
static int nwindows;
static int calls;
static uint64_t requested[16];

int __wrap_soap_call (struct vs_session *s, const char *ctx, const char *method,
                      const char *this_type, const char *this_ref, const char *args,
                      bool idempotent, xmlDoc **doc, xmlNode **ret, struct vs_fault *fault);

int
__wrap_soap_call (struct vs_session *s, const char *ctx, const char *method,
                  const char *this_type, const char *this_ref, const char *args,
                  bool idempotent, xmlDoc **doc, xmlNode **ret, struct vs_fault *fault)
{
  const char *p = strstr (args, "<startOffset>");
  uint64_t start;
  char *buf = NULL;
  size_t len = 0;
  FILE *fp;

  assert_string_equal (method, "QueryChangedDiskAreas");
  assert_non_null (strstr (args, "<snapshot type=\"VirtualMachineSnapshot\">snapshot-7<"));
  assert_non_null (strstr (args, "<changeId>*</changeId>"));
  assert_non_null (p);
  start = strtoull (p + strlen ("<startOffset>"), NULL, 10);
  assert_true (calls < 16);
  requested[calls++] = start;
  for (int i = 0; i < nwindows; i++) {
    if (windows[i].start != start)
      continue;
    fp = open_memstream (&buf, &len);
    fprintf (fp,
             "<Envelope><Body><QueryChangedDiskAreasResponse><returnval>"
             "<startOffset>%" PRIu64 "</startOffset><length>%" PRIu64 "</length>",
             windows[i].start, windows[i].length);
    for (int a = 0; a < windows[i].nareas; a++)
      fprintf (fp,
               "<changedArea><start>%" PRIu64 "</start><length>%" PRIu64 "</length>"
               "</changedArea>",
               windows[i].areas[a][0], windows[i].areas[a][1]);
    fprintf (fp, "</returnval></QueryChangedDiskAreasResponse></Body></Envelope>");
    fclose (fp);
    int r = soap_parse (buf, len, 200, doc, ret, fault);
    free (buf);
    return r;
  }
  fail_msg ("unexpected startOffset %" PRIu64, start);
  return -1;
}

static struct vs_vm vm = { .moref = (char *)"vm-42" };
static struct provider_disk disk = { .key = (char *)"2000", .capacity = 10 * MiB };

static int
query (const struct window *w, int n, extent_vector *areas)
{
  windows = w;
  nwindows = n;
  calls = 0;
  return vs_query_changed (NULL, &vm, "snapshot-7", &disk, "*", areas, NULL);
}

/* Four windows, one of them empty in the middle: all are asked for, areas are merged
 * across window boundaries.
 */
static void
test_loops_past_empty_windows (void **state)
{
  static const struct window w[] = {
    { 0, 4 * MiB, 2, { { 0, 64 * KiB }, { 4 * MiB - 64 * KiB, 64 * KiB } } },
    { 4 * MiB, 2 * MiB, 1, { { 4 * MiB, 64 * KiB } } },
    { 6 * MiB, 2 * MiB, 0, { { 0 } } },
    { 8 * MiB, 2 * MiB, 1, { { 9 * MiB, 128 * KiB } } },
  };
  extent_vector areas = empty_vector;

  assert_int_equal (query (w, 4, &areas), 0);
  assert_int_equal (calls, 4);
  assert_true (requested[0] == 0 && requested[1] == 4 * MiB && requested[2] == 6 * MiB &&
               requested[3] == 8 * MiB);
  assert_int_equal (areas.len, 3);
  assert_true (areas.ptr[0].offset == 0 && areas.ptr[0].length == 64 * KiB);
  assert_true (areas.ptr[1].offset == 4 * MiB - 64 * KiB &&
               areas.ptr[1].length == 128 * KiB);
  assert_true (areas.ptr[2].offset == 9 * MiB && areas.ptr[2].length == 128 * KiB);
  extent_vector_reset (&areas);
}

/* A window of length 0 would loop forever: it is an error. */
static void
test_zero_length_window_is_an_error (void **state)
{
  static const struct window w[] = { { 0, 0, 0, { { 0 } } } };
  extent_vector areas = empty_vector;

  assert_int_equal (query (w, 1, &areas), -1);
  assert_int_equal (calls, 1);
  extent_vector_reset (&areas);
}

/* An area outside its window, or a window past the capacity, is refused. */
static void
test_bad_areas_are_errors (void **state)
{
  static const struct window outside[] = {
    { 0, 4 * MiB, 1, { { 4 * MiB, 64 * KiB } } },
  };
  /* Areas that start after their window's end: end - start would underflow. */
  static const struct window beyond_window[] = {
    { 0, 4 * MiB, 1, { { 6 * MiB, 64 * KiB } } },
    { 4 * MiB, 6 * MiB, 0, { { 0 } } },
  };
  static const struct window beyond_disk[] = {
    { 0, 10 * MiB, 1, { { 12 * MiB, 64 * KiB } } },
  };
  static const struct window far_beyond[] = {
    { 0, 10 * MiB, 1, { { UINT64_MAX - 64 * KiB, 64 * KiB } } },
  };
  static const struct window past[] = { { 0, 11 * MiB, 0, { { 0 } } } };
  extent_vector areas = empty_vector;

  assert_int_equal (query (outside, 1, &areas), -1);
  assert_int_equal (query (beyond_window, 2, &areas), -1);
  assert_int_equal (query (beyond_disk, 1, &areas), -1);
  assert_int_equal (query (far_beyond, 1, &areas), -1);
  assert_int_equal (query (past, 1, &areas), -1);
  extent_vector_reset (&areas);
}

int
main (void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test (test_loops_past_empty_windows),
    cmocka_unit_test (test_zero_length_window_is_an_error),
    cmocka_unit_test (test_bad_areas_are_errors),
  };
  return cmocka_run_group_tests (tests, NULL, NULL);
}
