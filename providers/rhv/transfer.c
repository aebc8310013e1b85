/* SPDX-License-Identifier: Apache-2.0 */
/* ferry: RHV image transfers (downloads) and incremental backups.
 *
 * A transfer goes POST /imagetransfers (format raw: the host serves the whole chain with
 * qemu-nbd, virtual size, extents) -> initializing -> transferring, when its ticket is
 * on an imageio server.  We try the host's transfer_url first and fall back to the
 * engine's proxy_url (host names are often unknown where ferry runs).  A transfer is
 * always ended: finalize when the reads are done, cancel on errors; while one is open the
 * disk is locked in the engine.
 *
 * A backup goes POST /vms/ID/backups -> initializing -> starting -> ready, when its disks
 * can be transferred (with <backup id>), and is finalized -> succeeded.  A full backup
 * (no from_checkpoint_id) starts a checkpoint; an incremental one reports what changed
 * since its from_checkpoint_id as the transfer's dirty extents.
 */
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <jansson.h>
#include <libxml/tree.h>

#include "common/cleanup.h"
#include "common/http.h"
#include "common/log.h"
#include "common/util.h"
#include "rhv.h"

#define INACTIVITY_TIMEOUT "120" /* s; the keep-alive touches the ticket well within */
#define PHASE_TIMEOUT 300        /* s to reach transferring or ready */
#define FINISH_TIMEOUT 120       /* s for finalize or cancel to complete */
#define LOCKED_TIMEOUT 60        /* s to wait for a disk locked by an ending transfer */

static void
poll_sleep (unsigned *delay_ms)
{
  sleep_ms (*delay_ms);
  if (*delay_ms < 1000)
    *delay_ms *= 2;
}

/* "https://HOST:PORT/images/T" -> base "https://HOST:PORT", path "/images/T". */
static int
split_url (const char *url, char **base, char **path)
{
  const char *host = strstr (url, "://"), *p;

  *base = *path = NULL;
  if (host == NULL || (p = strchr (host + 3, '/')) == NULL)
    return -1;
  *base = strndup (url, p - url);
  *path = strdup (p);
  return *base && *path ? 0 : -1;
}

/* Can the host name in BASE be resolved here? */
static bool
resolvable (const char *base)
{
  const char *h = strstr (base, "://") + 3;
  char host[256];
  struct addrinfo hints = { .ai_socktype = SOCK_STREAM }, *res;
  size_t n;

  if (*h == '[') /* an IPv6 literal */
    return true;
  n = strcspn (h, ":/");
  if (n >= sizeof host)
    return false;
  memcpy (host, h, n);
  host[n] = '\0';
  if (getaddrinfo (host, NULL, &hints, &res) != 0)
    return false;
  freeaddrinfo (res);
  return true;
}

static struct http_pool *
imageio_pool (const struct rhv_config *config, const char *base, unsigned connections,
              unsigned retries)
{
  struct http_config hc = {
    .base_url = base,
    .cacert = config->cacert,
    .thumbprint = config->thumbprint,
    .sslverify = config->sslverify,
    .connections = connections,
    .connect_timeout = 30,
    /* A retry budget the user gave decides alone how long retries go on (a probe, with
     * its one retry, still falls back soon).
     */
    .max_retries = retries > 1 && config->timeouts.retry_budget ? 0 : retries,
    .backoff_ms = 200,
  };
  source_http_timeouts (&config->timeouts, &hc);
  return http_pool_new (&hc);
}

/* OPTIONS on URL; on success T's pool, url, path and max_readers are set. */
static int
try_imageio (const struct rhv_config *config, const char *url, struct rhv_transfer *t)
{
  CLEANUP_FREE char *base = NULL, *path = NULL;
  struct http_pool *probe;
  unsigned readers = 1, n;
  bool extents;

  if (split_url (url, &base, &path) == -1) {
    log_error ("transfer %s: cannot use the imageio URL %s", t->id, url);
    return -1;
  }
  probe = imageio_pool (config, base, 1, 1);
  if (probe == NULL)
    return -1;
  if (rhv_imageio_options (probe, path, &readers, &extents) == -1) {
    http_pool_free (probe);
    return -1;
  }
  http_pool_free (probe);
  n = config->connections < readers ? config->connections : readers;
  t->pool = imageio_pool (config, base, n ? n : 1, 4);
  if (t->pool == NULL)
    return -1;
  t->max_readers = n ? n : 1;
  t->url = base;
  t->path = path;
  base = path = NULL;
  return 0;
}

static int
connect_imageio (const struct rhv_config *config, json_t *j, struct rhv_transfer *t,
                 const char *what)
{
  const char *turl = rhv_json_str (j, "transfer_url"),
             *purl = rhv_json_str (j, "proxy_url");

  /* A thumbprint pins the engine's certificate, which its imageio proxy presents too;
   * each host has its own.
   */
  if (turl && config->thumbprint && purl)
    log_debug ("%s: transfer %s: thumbprint= pins the engine's certificate: reading "
               "through its proxy",
               what, t->id);
  else if (turl) {
    CLEANUP_FREE char *base = NULL, *path = NULL;
    if (split_url (turl, &base, &path) == 0 && resolvable (base)) {
      /* With a proxy to fall back to, the host's failure is not an error (yet): it goes
       * to the debug log, and into the line that says we fall back.
       */
      bool was = purl ? log_errors_as_debug (true) : false;
      int r = try_imageio (config, turl, t);
      if (purl)
        log_errors_as_debug (was);
      if (r == 0)
        return 0;
      if (purl)
        log_info ("%s: transfer %s: the host's imageio at %s cannot be used (%s); trying "
                  "the engine's proxy %s",
                  what, t->id, base, log_last_demoted (), purl);
    } else
      log_debug ("%s: transfer %s: the host in %s cannot be resolved here; using the "
                 "proxy",
                 what, t->id, base ? base : turl);
  }
  if (purl)
    return try_imageio (config, purl, t);
  log_error ("%s: transfer %s has neither a usable transfer_url nor a proxy_url", what,
             t->id);
  return -1;
}

int
rhv_transfer_start (struct rhv_engine *e, const struct rhv_config *config,
                    const char *disk_id, const char *backup_id, const char *snapshot_id,
                    const char *what, struct rhv_transfer *t)
{
  CLEANUP_FREE char *body = NULL, *path = NULL;
  json_t *j = NULL;
  double deadline = time_monotonic () + LOCKED_TIMEOUT;
  unsigned delay = 100;
  const char *phase;

  memset (t, 0, sizeof *t);
  t->disk_id = strdup (disk_id);
  t->backup_id = backup_id ? strdup (backup_id) : NULL;
  t->snapshot_id = snapshot_id ? strdup (snapshot_id) : NULL;
  /* A disk snapshot: format raw serves it with the layers below it, at virtual size. */
  if (snapshot_id)
    body = rhv_xml ("image_transfer", "snapshot@id", snapshot_id, "direction", "download",
                    "format", "raw", "inactivity_timeout", INACTIVITY_TIMEOUT,
                    "timeout_policy", "cancel", (const char *)NULL);
  else if (backup_id)
    body = rhv_xml ("image_transfer", "disk@id", disk_id, "backup@id", backup_id,
                    "direction", "download", "format", "raw", "inactivity_timeout",
                    INACTIVITY_TIMEOUT, "timeout_policy", "cancel", (const char *)NULL);
  else
    body = rhv_xml ("image_transfer", "disk@id", disk_id, "direction", "download", "format",
                    "raw", "inactivity_timeout", INACTIVITY_TIMEOUT, "timeout_policy",
                    "cancel", (const char *)NULL);
  if (body == NULL || t->disk_id == NULL)
    return -1;

  for (;;) {
    CLEANUP_FREE char *fault = NULL;
    long status = rhv_call (e, "POST", "/imagetransfers", body, &j, &fault);
    if (status == -1)
      return -1;
    if (status >= 200 && status < 300)
      break;
    /* The lock of a transfer that is still ending goes away by itself. */
    if (status == 409 && fault && strstr (fault, "locked") &&
        time_monotonic () < deadline) {
      log_debug ("%s: %s; waiting", what, fault);
      sleep_ms (2000);
      continue;
    }
    log_error ("%s: POST /imagetransfers (download): HTTP %ld: %s", what, status,
               fault ? fault : "?");
    return -1;
  }
  t->id = rhv_json_str (j, "id") ? strdup (rhv_json_str (j, "id")) : NULL;
  if (t->id == NULL) {
    log_error ("%s: POST /imagetransfers: the answer has no id", what);
    json_decref (j);
    return -1;
  }
  t->open = true;
  if (asprintf (&path, "/imagetransfers/%s", t->id) == -1)
    goto err;

  deadline = time_monotonic () + PHASE_TIMEOUT;
  for (;;) {
    phase = rhv_json_str (j, "phase");
    if (phase && strcmp (phase, "transferring") == 0)
      break;
    if (phase && strcmp (phase, "initializing") != 0 && strcmp (phase, "resuming") != 0) {
      log_error ("%s: transfer %s: phase %s instead of transferring", what, t->id, phase);
      goto err;
    }
    if (time_monotonic () >= deadline) {
      log_error ("%s: transfer %s: still %s after %d s", what, t->id,
                 phase ? phase : "without a phase", PHASE_TIMEOUT);
      goto err;
    }
    poll_sleep (&delay);
    json_decref (j);
    j = NULL;
    if (rhv_call_ok (e, what, "GET", path, NULL, &j) == -1)
      goto err;
  }
  {
    uint64_t secs;
    t->inactivity_timeout =
        rhv_json_u64 (j, "inactivity_timeout", &secs) == 0 && secs < 86400
            ? secs
            : (uint64_t)atoi (INACTIVITY_TIMEOUT);
  }
  if (connect_imageio (config, j, t, what) == -1)
    goto err;
  json_decref (j);
  log_debug ("%s: transfer %s on %s, %u readers", what, t->id, t->url, t->max_readers);
  return 0;

err:
  json_decref (j);
  rhv_transfer_finish (e, t, false, what);
  return -1;
}

static bool
phase_is_over (const char *phase)
{
  return phase == NULL || strncmp (phase, "finished_", 9) == 0 ||
         strncmp (phase, "cancelled", 9) == 0;
}

int
rhv_transfer_alive (struct rhv_engine *e, struct rhv_transfer *t, const char *what)
{
  CLEANUP_FREE char *path = NULL, *fault = NULL;
  json_t *j = NULL;
  long status;
  int r;

  if (!t->open)
    return 0;
  if (asprintf (&path, "/imagetransfers/%s", t->id) == -1)
    return -1;
  status = rhv_call (e, "GET", path, NULL, &j, &fault);
  if (status == -1)
    return -1;
  if (status == 404)
    return 0;
  if (status != 200) {
    log_error ("%s: GET %s: HTTP %ld: %s", what, path, status, fault ? fault : "?");
    return -1;
  }
  if (rhv_json_str (j, "phase") && strcmp (rhv_json_str (j, "phase"), "transferring") == 0)
    r = 1;
  else
    r = phase_is_over (rhv_json_str (j, "phase")) ? 0 : 2;
  json_decref (j);
  return r;
}

int
rhv_transfer_finish (struct rhv_engine *e, struct rhv_transfer *t, bool ok,
                     const char *what)
{
  CLEANUP_FREE char *path = NULL, *action = NULL, *fault = NULL;
  const char *verb = ok ? "finalize" : "cancel";
  double deadline = time_monotonic () + FINISH_TIMEOUT;
  unsigned delay = 100;
  long status;

  /* Close our imageio connections first: the ticket is removed under them anyway. */
  http_pool_free (t->pool);
  t->pool = NULL;
  if (!t->open)
    return 0;
  action = rhv_xml ("action", (const char *)NULL);
  if (action == NULL || asprintf (&path, "/imagetransfers/%s/%s", t->id, verb) == -1)
    return -1;
  status = rhv_call (e, "POST", path, action, NULL, &fault);
  if (status == -1)
    return -1;
  free (path);
  if (asprintf (&path, "/imagetransfers/%s", t->id) == -1)
    return -1;
  for (;;) {
    CLEANUP_FREE char *f2 = NULL;
    json_t *j = NULL;
    long s = rhv_call (e, "GET", path, NULL, &j, &f2);
    const char *phase = rhv_json_str (j, "phase");

    if (s == -1)
      return -1;
    if (s == 404 || (s == 200 && phase_is_over (phase))) {
      bool failed = ok && s == 200 && strcmp (phase, "finished_success") != 0;
      if (failed)
        log_error ("%s: transfer %s ended in phase %s after %s%s%s", what, t->id, phase,
                   verb, fault ? ": " : "", fault ? fault : "");
      json_decref (j);
      t->open = false;
      return failed ? -1 : 0;
    }
    json_decref (j);
    if (s != 200 || time_monotonic () >= deadline) {
      log_error ("%s: transfer %s: %s did not complete (HTTP %ld%s%s%s%s); the engine "
                 "ends it after its inactivity timeout",
                 what, t->id, verb, status, fault ? ": " : "", fault ? fault : "",
                 f2 ? "; " : "", f2 ? f2 : "");
      t->open = false;
      return -1;
    }
    poll_sleep (&delay);
  }
}

void
rhv_transfer_free (struct rhv_transfer *t)
{
  http_pool_free (t->pool);
  free (t->id);
  free (t->disk_id);
  free (t->backup_id);
  free (t->snapshot_id);
  free (t->url);
  free (t->path);
  memset (t, 0, sizeof *t);
}

/* <backup><from_checkpoint_id>..</from_checkpoint_id><disks><disk id=".."/>..</disks> */
static char *
backup_xml (const char *from, const char *const *disk_ids, size_t n)
{
  xmlDoc *doc = xmlNewDoc (BAD_CAST "1.0");
  xmlNode *root = xmlNewNode (NULL, BAD_CAST "backup"), *disks;
  xmlChar *mem = NULL;
  int len = 0;
  char *out = NULL;

  xmlDocSetRootElement (doc, root);
  if (from)
    xmlNewTextChild (root, NULL, BAD_CAST "from_checkpoint_id", BAD_CAST from);
  disks = xmlNewChild (root, NULL, BAD_CAST "disks", NULL);
  for (size_t i = 0; i < n; i++)
    xmlNewProp (xmlNewChild (disks, NULL, BAD_CAST "disk", NULL), BAD_CAST "id",
                BAD_CAST disk_ids[i]);
  xmlDocDumpMemoryEnc (doc, &mem, &len, "UTF-8");
  if (mem)
    out = strndup ((const char *)mem, len);
  xmlFree (mem);
  xmlFreeDoc (doc);
  return out;
}

int
rhv_backup_start (struct rhv_engine *e, const struct rhv_vm *vm, const char *from,
                  const char *const *disk_ids, size_t n, char **backup_id,
                  char **to_checkpoint, char **modes)
{
  CLEANUP_FREE char *body = backup_xml (from, disk_ids, n), *path = NULL, *bpath = NULL;
  json_t *j = NULL, *list;
  char what[256];
  double deadline = time_monotonic () + PHASE_TIMEOUT;
  unsigned delay = 100;
  size_t k;
  json_t *d;

  *backup_id = *to_checkpoint = NULL;
  snprintf (what, sizeof what, "vm %s (%s): %s backup", vm->id, vm->name ? vm->name : "?",
            from ? "incremental" : "full");
  if (body == NULL || asprintf (&path, "/vms/%s/backups", vm->id) == -1)
    return -1;
  if (rhv_call_ok (e, what, "POST", path, body, &j) == -1)
    return -1;
  if (rhv_json_str (j, "id") == NULL) {
    log_error ("%s: the answer has no id", what);
    json_decref (j);
    return -1;
  }
  *backup_id = strdup (rhv_json_str (j, "id"));
  if (*backup_id == NULL || asprintf (&bpath, "%s/%s", path, *backup_id) == -1)
    goto err;
  for (;;) {
    const char *phase = rhv_json_str (j, "phase");
    if (phase && strcmp (phase, "ready") == 0)
      break;
    if (phase && strcmp (phase, "initializing") != 0 && strcmp (phase, "starting") != 0) {
      log_error ("%s %s: phase %s instead of ready", what, *backup_id, phase);
      goto err;
    }
    if (time_monotonic () >= deadline) {
      log_error ("%s %s: not ready after %d s", what, *backup_id, PHASE_TIMEOUT);
      goto err;
    }
    poll_sleep (&delay);
    json_decref (j);
    j = NULL;
    if (rhv_call_ok (e, what, "GET", bpath, NULL, &j) == -1)
      goto err;
  }
  if (rhv_json_str (j, "to_checkpoint_id") == NULL) {
    log_error ("%s %s: ready without a to_checkpoint_id", what, *backup_id);
    goto err;
  }
  *to_checkpoint = strdup (rhv_json_str (j, "to_checkpoint_id"));
  json_decref (j);
  j = NULL;

  /* Which disks the engine could back up incrementally. */
  free (path);
  if (asprintf (&path, "%s/disks", bpath) == -1 ||
      rhv_call_ok (e, what, "GET", path, NULL, &j) == -1)
    goto err;
  list = rhv_json_list (j, "disk", NULL);
  for (size_t i = 0; i < n; i++) {
    modes[i] = NULL;
    json_array_foreach (list, k, d)
    {
      const char *id = rhv_json_str (d, "id"), *mode = rhv_json_str (d, "backup_mode");
      if (id && strcmp (id, disk_ids[i]) == 0 && modes[i] == NULL)
        modes[i] = strdup (mode ? mode : "full");
    }
    if (modes[i] == NULL)
      modes[i] = strdup ("full");
  }
  json_decref (j);
  return 0;

err:
  json_decref (j);
  if (*backup_id)
    rhv_backup_finalize (e, vm, *backup_id);
  free (*backup_id);
  free (*to_checkpoint);
  *backup_id = *to_checkpoint = NULL;
  return -1;
}

int
rhv_backup_finalize (struct rhv_engine *e, const struct rhv_vm *vm, const char *backup_id)
{
  CLEANUP_FREE char *path = NULL, *action = rhv_xml ("action", (const char *)NULL);
  char what[256];
  double deadline = time_monotonic () + FINISH_TIMEOUT;
  unsigned delay = 100;

  snprintf (what, sizeof what, "vm %s (%s): backup %s", vm->id, vm->name ? vm->name : "?",
            backup_id);
  if (action == NULL ||
      asprintf (&path, "/vms/%s/backups/%s/finalize", vm->id, backup_id) == -1)
    return -1;
  if (rhv_call_ok (e, what, "POST", path, action, NULL) == -1)
    return -1;
  path[strlen (path) - strlen ("/finalize")] = '\0';
  for (;;) {
    json_t *j = NULL;
    long s = rhv_call (e, "GET", path, NULL, &j, NULL);
    const char *phase = rhv_json_str (j, "phase");
    bool done =
        s == 404 ||
        (phase && (strcmp (phase, "succeeded") == 0 || strcmp (phase, "failed") == 0));
    bool failed = phase && strcmp (phase, "failed") == 0;

    json_decref (j);
    if (s == -1)
      return -1;
    if (done) {
      if (failed)
        log_error ("%s: finalize: the backup ended in phase failed", what);
      return failed ? -1 : 0;
    }
    if (time_monotonic () >= deadline) {
      log_error ("%s: finalize did not complete in %d s", what, FINISH_TIMEOUT);
      return -1;
    }
    poll_sleep (&delay);
  }
}

int
rhv_checkpoint_exists (struct rhv_engine *e, const struct rhv_vm *vm,
                       const char *checkpoint)
{
  CLEANUP_FREE char *path = NULL;
  json_t *j, *list, *c;
  char what[256];
  size_t i;
  int r = 0;

  snprintf (what, sizeof what, "vm %s (%s)", vm->id, vm->name ? vm->name : "?");
  if (asprintf (&path, "/vms/%s/checkpoints", vm->id) == -1)
    return -1;
  if (rhv_call_ok (e, what, "GET", path, NULL, &j) == -1)
    return -1;
  list = rhv_json_list (j, "checkpoint", NULL);
  json_array_foreach (list, i, c)
  {
    const char *id = rhv_json_str (c, "id"), *state = rhv_json_str (c, "state");
    if (id && strcmp (id, checkpoint) == 0 && (state == NULL || strcmp (state, "invalid")))
      r = 1;
  }
  json_decref (j);
  return r;
}
