/* SPDX-License-Identifier: Apache-2.0 */
/* ferry: the ovirt-imageio client calls beyond ranged GETs (which are http_get_range):
 * OPTIONS (features, max_readers; it also touches the ticket) and /extents.
 *
 * imageio has no HEAD, one range per request and no suffix ranges; /extents always
 * answers for the whole image, so it is asked once per transfer and context.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "common/cleanup.h"
#include "common/http.h"
#include "common/log.h"
#include "rhv.h"

static const char *const json_headers[] = { "Accept: application/json", NULL };

int
rhv_imageio_options (struct http_pool *pool, const char *path, unsigned *max_readers,
                     bool *extents)
{
  struct http_response resp;
  json_t *j, *features, *f;
  uint64_t n;
  size_t i;

  *max_readers = 1;
  *extents = false;
  if (http_request (pool, "OPTIONS", path, json_headers, NULL, 0, true, &resp) == -1)
    return -1;
  /* 204 or 405: an old server without features, one reader. */
  if (resp.status == 204 || resp.status == 405) {
    http_response_reset (&resp);
    return 0;
  }
  if (resp.status != 200) {
    CLEANUP_FREE char *why = rhv_fault_message (resp.body);
    log_error ("OPTIONS %.*s: HTTP %ld: %s", (int)strcspn (path, "?"), path, resp.status,
               why ? why : "?");
    http_response_reset (&resp);
    return -1;
  }
  j = json_loads (resp.body, 0, NULL);
  http_response_reset (&resp);
  features = json_object_get (j, "features");
  json_array_foreach (features, i, f)
  {
    if (json_is_string (f) && strcmp (json_string_value (f), "extents") == 0)
      *extents = true;
  }
  if (rhv_json_u64 (j, "max_readers", &n) == 0 && n >= 1)
    *max_readers = n > 64 ? 64 : n;
  json_decref (j);
  return 0;
}

int
rhv_imageio_extents (struct http_pool *pool, const char *path, const char *context,
                     rhv_extent_vector *out)
{
  CLEANUP_FREE char *p = NULL, *why = NULL;
  struct http_response resp;

  if (asprintf (&p, "%s/extents?context=%s", path, context) == -1)
    return -1;
  if (http_request (pool, "GET", p, json_headers, NULL, 0, true, &resp) == -1)
    return -1;
  if (resp.status != 200) {
    CLEANUP_FREE char *msg = rhv_fault_message (resp.body);
    log_error ("GET %s/extents?context=%s: HTTP %ld: %s", path, context, resp.status,
               msg ? msg : "?");
    http_response_reset (&resp);
    return -1;
  }
  if (rhv_parse_extents (resp.body, out, &why) == -1) {
    log_error ("GET %s/extents?context=%s: %s", path, context, why ? why : "out of memory");
    http_response_reset (&resp);
    return -1;
  }
  http_response_reset (&resp);
  return 0;
}
