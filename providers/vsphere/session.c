/* SPDX-License-Identifier: Apache-2.0 */
/* ferry: the vSphere session — service content, Login/Logout, re-login.
 *
 * State: OPEN (pool made, ServiceContent read) -> LOGGED IN (cookie set) -> CLOSED.  A
 * logged-in session may silently expire on the server; the first call that notices (SOAP
 * NotAuthenticated or /folder 401) logs in again through vs_relogin.
 *
 * THREAD MODEL: vs_relogin holds login_lock and compares the pool's session generation, so
 * concurrent callers that saw the same expired session cause a single Login.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/cleanup.h"
#include "common/log.h"
#include "soap.h"

/* Called by the HTTP pool when /folder answers 401. */
static int
reauth_cb (void *opaque, unsigned generation)
{
  return vs_relogin (opaque, generation);
}

static int
read_service_content (struct vs_session *s)
{
  xmlDoc *doc;
  xmlNode *ret, *about;
  CLEANUP_FREE char *version = NULL;

  if (soap_call (s, s->server, "RetrieveServiceContent", "ServiceInstance",
                 "ServiceInstance", NULL, true, &doc, &ret, NULL) == -1)
    return -1;
  s->session_manager = xml_child_text (ret, "sessionManager");
  s->property_collector = xml_child_text (ret, "propertyCollector");
  s->search_index = xml_child_text (ret, "searchIndex");
  s->root_folder = xml_child_text (ret, "rootFolder");
  s->view_manager = xml_child_text (ret, "viewManager");
  about = xml_child (ret, "about");
  s->api_type = xml_child_text (about, "apiType");
  version = xml_child_text (about, "apiVersion");
  xmlFreeDoc (doc);
  if (!s->session_manager || !s->property_collector || !s->search_index ||
      !s->root_folder || !version) {
    log_error ("%s: RetrieveServiceContent: the answer lacks the session manager, property "
               "collector, search index, root folder or API version; is this vSphere?",
               s->server);
    return -1;
  }
  snprintf (s->soap_action, sizeof s->soap_action, "urn:vim25/%s", version);
  return 0;
}

int
vs_login (struct vs_session *s)
{
  CLEANUP_FREE char *user = xml_escape (s->user);
  CLEANUP_FREE char *password = xml_escape (s->password);
  CLEANUP_FREE char *args = NULL;
  struct vs_fault fault = { 0 };
  xmlDoc *doc;
  xmlNode *ret;
  int r;

  if (user == NULL || password == NULL ||
      asprintf (&args, "<userName>%s</userName><password>%s</password>", user, password) ==
          -1) {
    log_error ("%s: Login: out of memory", s->server);
    return -1;
  }
  explicit_bzero (password, strlen (password));
  /* Forget the old cookie so the server starts a fresh session. */
  http_pool_set_cookie (s->pool, NULL);
  s->logged_in = false;
  r = soap_call (s, s->server, "Login", "SessionManager", s->session_manager, args, true,
                 &doc, &ret, &fault);
  explicit_bzero (args, strlen (args));
  if (r == -1) {
    if (fault.type)
      log_error ("%s: Login as %s: %s%s%s", s->server, s->user, fault.type,
                 fault.message ? ": " : "", fault.message ? fault.message : "");
    vs_fault_reset (&fault);
    return -1;
  }
  xmlFreeDoc (doc);
  if (!s->logged_in) {
    log_error ("%s: Login as %s: the server set no vmware_soap_session cookie", s->server,
               s->user);
    return -1;
  }
  return 0;
}

int
vs_relogin (struct vs_session *s, unsigned generation)
{
  ACQUIRE_LOCK_FOR_CURRENT_SCOPE (&s->login_lock);

  if (http_pool_generation (s->pool) != generation)
    return 0; /* another thread has already logged in again */
  if (s->user == NULL || s->password == NULL) {
    log_error ("%s: the session cookie given is not (or no longer) a logged-in session "
               "(NotAuthenticated), and there is no user name and password to log in "
               "again",
               s->server);
    return -1;
  }
  __atomic_add_fetch (&s->relogins, 1, __ATOMIC_RELAXED);
  if (ferry_debug_soap)
    log_debug ("soap: %s: session expired, logging in again", s->server);
  return vs_login (s);
}

static void
free_secret (char *s)
{
  if (s) {
    explicit_bzero (s, strlen (s));
    free (s);
  }
}

void
vs_set_cookie (struct vs_session *s, const char *cookie)
{
  free_secret (s->cookie);
  s->cookie = cookie ? strdup (cookie) : NULL;
}

char *
vs_session_cookie (struct vs_session *s)
{
  ACQUIRE_LOCK_FOR_CURRENT_SCOPE (&s->login_lock);
  return s->cookie ? strdup (s->cookie) : NULL;
}

/* Reuse the caller's session: send its cookie and check that it is logged in (the
 * SessionManager's currentSession is set only for a live session).  The password is not
 * known yet, so a cookie that is not valid fails here rather than being replaced by a
 * login of our own.
 */
static int
use_cookie (struct vs_session *s, const char *cookie)
{
  static const char *const paths[] = { "currentSession", NULL };
  const char *name = "vmware_soap_session=";
  CLEANUP_FREE char *full = NULL;
  xmlDoc *doc = NULL;
  xmlNode *obj;
  bool live;

  if (strncmp (cookie, name, strlen (name)) == 0)
    full = strdup (cookie);
  else if (asprintf (&full, "%s%s", name, cookie) == -1)
    full = NULL;
  if (full == NULL) {
    log_error ("%s: out of memory", s->server);
    return -1;
  }
  http_pool_set_cookie (s->pool, full);
  vs_set_cookie (s, full);
  explicit_bzero (full, strlen (full));
  s->logged_in = s->borrowed = true;
  if (s->cookie == NULL ||
      vs_retrieve (s, "SessionManager", s->session_manager, paths, &doc, &obj, NULL) == -1)
    return -1;
  live = vs_prop (obj, "currentSession") != NULL;
  xmlFreeDoc (doc);
  if (!live) {
    log_error ("%s: the session cookie given is not a logged-in session (no "
               "currentSession)",
               s->server);
    return -1;
  }
  return 0;
}

/* FERRY_HTTP_BACKOFF_MS: the first retry delay when the caller did not choose one, so that
 * tests of many injected faults run in seconds without a parameter of their own.
 */
static unsigned
backoff_from_env (void)
{
  const char *env = getenv ("FERRY_HTTP_BACKOFF_MS");
  char *end;
  unsigned long ms;

  if (env == NULL || *env == '\0')
    return 0;
  errno = 0;
  ms = strtoul (env, &end, 10);
  if (errno || *end || ms == 0 || ms > 60000) {
    log_error ("FERRY_HTTP_BACKOFF_MS=%s: want milliseconds, 1 to 60000; ignored", env);
    return 0;
  }
  return ms;
}

struct vs_session *
vs_open (const struct vs_config *config)
{
  struct vs_session *s = calloc (1, sizeof *s);
  CLEANUP_FREE char *base = NULL;

  if (s == NULL) {
    log_error ("%s: out of memory", config->server);
    return NULL;
  }
  pthread_mutex_init (&s->login_lock, NULL);
  s->server = strdup (config->server);
  s->user = config->user ? strdup (config->user) : NULL;
  if (!s->server || (config->user && !s->user) ||
      asprintf (&base, "https://%s", config->server) == -1) {
    log_error ("%s: out of memory", config->server);
    goto err;
  }
  strcpy (s->soap_action, "urn:vim25");

  struct http_config hc = {
    .base_url = base,
    .cacert = config->cacert,
    .thumbprint = config->thumbprint,
    .sslverify = config->sslverify,
    .connections = config->connections ? config->connections : 4,
    .backoff_ms = config->backoff_ms ? config->backoff_ms : backoff_from_env (),
    .reauth = reauth_cb,
    .reauth_opaque = s,
  };
  source_http_timeouts (&config->timeouts, &hc);
  s->pool = http_pool_new (&hc);
  if (s->pool == NULL)
    goto err;
  if (read_service_content (s) == -1 ||
      (config->cookie && use_cookie (s, config->cookie) == -1))
    goto err;
  /* Known only now, so that a cookie that is not valid is never replaced by a login. */
  if (config->password && (s->password = strdup (config->password)) == NULL) {
    log_error ("%s: out of memory", config->server);
    goto err;
  }
  if (!config->cookie && vs_login (s) == -1)
    goto err;
  return s;

err:
  vs_close (s);
  return NULL;
}

void
vs_close (struct vs_session *s)
{
  if (s == NULL)
    return;
  if (s->pool && s->logged_in && !s->borrowed) {
    xmlDoc *doc = NULL;
    xmlNode *ret;
    struct vs_fault fault = { 0 };
    /* Best effort: an expired session needs no Logout. */
    if (soap_call (s, s->server, "Logout", "SessionManager", s->session_manager, NULL, true,
                   &doc, &ret, &fault) == 0)
      xmlFreeDoc (doc);
    vs_fault_reset (&fault);
  }
  http_pool_free (s->pool);
  free_secret (s->password);
  free_secret (s->cookie);
  free (s->server);
  free (s->user);
  free (s->session_manager);
  free (s->property_collector);
  free (s->search_index);
  free (s->root_folder);
  free (s->view_manager);
  free (s->api_type);
  pthread_mutex_destroy (&s->login_lock);
  free (s);
}

void
vs_stats (struct vs_session *s, char *buf, size_t len)
{
  struct http_stats hs;

  http_pool_stats (s->pool, &hs);
  snprintf (buf, len,
            "disk bytes fetched %" PRIu64 " in %" PRIu64 " range reads, soap calls %" PRIu64
            ", re-logins %" PRIu64 ", http requests %" PRIu64 ", retries %" PRIu64
            ", http body bytes %" PRIu64,
            __atomic_load_n (&s->disk_bytes, __ATOMIC_RELAXED),
            __atomic_load_n (&s->disk_reads, __ATOMIC_RELAXED),
            __atomic_load_n (&s->soap_calls, __ATOMIC_RELAXED),
            __atomic_load_n (&s->relogins, __ATOMIC_RELAXED), hs.requests, hs.retries,
            hs.bytes);
}
