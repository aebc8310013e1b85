/* SPDX-License-Identifier: Apache-2.0 */
/* ferry: the oVirt engine session — SSO token, REST calls, XML bodies.
 *
 * State: OPEN (pool made) -> LOGGED IN (token held) -> CLOSED (token revoked and wiped).
 * The engine answers 401 when the token expired; the first call that sees it logs in again
 * (there is no refresh token) and repeats once.  The token and the password never reach a
 * message or a debug line.
 *
 * THREAD MODEL: the token is guarded by the engine's lock; login_lock serialises logins,
 * and a generation number makes concurrent callers that saw the same expired token cause
 * a single login.
 */
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <libxml/tree.h>

#include "common/cleanup.h"
#include "common/http.h"
#include "common/log.h"
#include "common/util.h"
#include "rhv.h"

struct rhv_engine {
  char *url; /* as given, for messages */
  char *base, *api, *sso, *logout;
  char *user;
  char *password;
  struct http_pool *pool;

  pthread_mutex_t lock; /* token, generation */
  char *token;
  unsigned generation;
  pthread_mutex_t login_lock;
  uint64_t calls, logins; /* atomics */
};

static void
wipe (char *s)
{
  if (s) {
    explicit_bzero (s, strlen (s));
    free (s);
  }
}

/* Log in (again) with the password grant. */
static int
login (struct rhv_engine *e)
{
  CLEANUP_FREE char *user = http_quote (e->user, false);
  char *password = http_quote (e->password, false), *body = NULL, *token;
  static const char *const headers[] = { "Content-Type: application/x-www-form-urlencoded",
                                         "Accept: application/json", NULL };
  struct http_response resp;
  json_t *j;
  int r;

  if (user == NULL || password == NULL ||
      asprintf (&body, "grant_type=password&scope=ovirt-app-api&username=%s&password=%s",
                user, password) == -1) {
    wipe (password);
    log_error ("%s: login: out of memory", e->url);
    return -1;
  }
  wipe (password);
  r = http_post (e->pool, e->sso, headers, body, strlen (body), true, &resp);
  wipe (body);
  if (r == -1)
    return -1;
  __atomic_add_fetch (&e->logins, 1, __ATOMIC_RELAXED);
  if (resp.status != 200) {
    CLEANUP_FREE char *why = rhv_fault_message (resp.body);
    log_error ("%s: login as %s: HTTP %ld: %s", e->url, e->user, resp.status,
               why ? why : "?");
    explicit_bzero (resp.body, resp.len);
    http_response_reset (&resp);
    return -1;
  }
  j = json_loads (resp.body, 0, NULL);
  explicit_bzero (resp.body, resp.len);
  http_response_reset (&resp);
  token =
      rhv_json_str (j, "access_token") ? strdup (rhv_json_str (j, "access_token")) : NULL;
  json_decref (j); /* jansson wipes its copy of the token (common/http.c) */
  if (token == NULL) {
    log_error ("%s: login as %s: the answer has no access_token", e->url, e->user);
    return -1;
  }
  {
    ACQUIRE_LOCK_FOR_CURRENT_SCOPE (&e->lock);
    wipe (e->token);
    e->token = token;
    e->generation++;
  }
  return 0;
}

static int
relogin (struct rhv_engine *e, unsigned generation)
{
  ACQUIRE_LOCK_FOR_CURRENT_SCOPE (&e->login_lock);
  {
    ACQUIRE_LOCK_FOR_CURRENT_SCOPE (&e->lock);
    if (e->generation != generation)
      return 0; /* another thread logged in meanwhile */
  }
  log_debug ("%s: the token expired (HTTP 401), logging in again", e->url);
  return login (e);
}

struct rhv_engine *
rhv_engine_open (const struct rhv_config *config)
{
  struct rhv_engine *e = calloc (1, sizeof *e);
  struct http_config hc = {
    .cacert = config->cacert,
    .thumbprint = config->thumbprint,
    .sslverify = config->sslverify,
    .connections = 2,
    .connect_timeout = 30,
    /* A retry budget the user gave decides alone how long retries go on. */
    .max_retries = config->timeouts.retry_budget ? 0 : 4,
    .backoff_ms = 200,
  };

  if (e == NULL)
    return NULL;
  source_http_timeouts (&config->timeouts, &hc);
  pthread_mutex_init (&e->lock, NULL);
  pthread_mutex_init (&e->login_lock, NULL);
  e->url = strdup (config->url);
  e->user = strdup (config->user);
  e->password = strdup (config->password);
  if (e->url == NULL || e->user == NULL || e->password == NULL) {
    log_error ("%s: out of memory", config->url);
    goto err;
  }
  if (rhv_parse_url (config->url, &e->base, &e->api, &e->sso, &e->logout) == -1) {
    log_error ("url=%s: expected https://ENGINE/ovirt-engine/api", config->url);
    goto err;
  }
  hc.base_url = e->base;
  e->pool = http_pool_new (&hc);
  if (e->pool == NULL || login (e) == -1)
    goto err;
  return e;

err:
  rhv_engine_close (e);
  return NULL;
}

void
rhv_engine_close (struct rhv_engine *e)
{
  if (e == NULL)
    return;
  if (e->pool && e->token) {
    /* Revoke the token: it would otherwise stay valid for its lifetime. */
    CLEANUP_FREE char *tok = http_quote (e->token, false);
    char *body = NULL;
    static const char *const headers[] = {
      "Content-Type: application/x-www-form-urlencoded", "Accept: application/json", NULL
    };
    struct http_response resp;

    if (tok && asprintf (&body, "scope=ovirt-app-api&token=%s", tok) != -1) {
      if (http_post (e->pool, e->logout, headers, body, strlen (body), true, &resp) == 0)
        http_response_reset (&resp);
      wipe (body);
    }
    if (tok)
      explicit_bzero (tok, strlen (tok));
  }
  http_pool_free (e->pool);
  wipe (e->token);
  wipe (e->password);
  free (e->user);
  free (e->url);
  free (e->base);
  free (e->api);
  free (e->sso);
  free (e->logout);
  pthread_mutex_destroy (&e->lock);
  pthread_mutex_destroy (&e->login_lock);
  free (e);
}

const char *
rhv_engine_url (const struct rhv_engine *e)
{
  return e->url;
}

long
rhv_call (struct rhv_engine *e, const char *verb, const char *path, const char *body,
          json_t **out, char **fault)
{
  CLEANUP_FREE char *full = NULL;
  bool retried = false;

  if (out)
    *out = NULL;
  if (fault)
    *fault = NULL;
  if (asprintf (&full, "%s%s", e->api, path) == -1) {
    log_error ("%s: out of memory", path);
    return -1;
  }
  for (;;) {
    char *auth = NULL;
    unsigned generation;
    struct http_response resp;
    const char *headers[5] = { "Accept: application/json", "Version: 4", NULL, NULL, NULL };
    int r;

    {
      ACQUIRE_LOCK_FOR_CURRENT_SCOPE (&e->lock);
      generation = e->generation;
      if (asprintf (&auth, "Authorization: Bearer %s", e->token ? e->token : "") == -1)
        auth = NULL;
    }
    if (auth == NULL) {
      log_error ("%s: out of memory", path);
      return -1;
    }
    headers[2] = auth;
    if (body)
      headers[3] = "Content-Type: application/xml";
    __atomic_add_fetch (&e->calls, 1, __ATOMIC_RELAXED);
    r = http_request (e->pool, verb, full, headers, body, body ? strlen (body) : 0,
                      strcmp (verb, "POST") != 0, &resp);
    wipe (auth);
    if (r == -1)
      return -1;
    if (resp.status == 401 && !retried) {
      http_response_reset (&resp);
      retried = true;
      if (relogin (e, generation) == -1)
        return -1;
      continue;
    }
    if (resp.status >= 200 && resp.status < 300) {
      if (out && resp.len > 0) {
        json_error_t err;
        *out = json_loads (resp.body, 0, &err);
        if (*out == NULL) {
          log_error ("%s: %s %s: the answer is not JSON: %s", e->url, verb, path, err.text);
          http_response_reset (&resp);
          return -1;
        }
      }
    } else if (fault)
      *fault = rhv_fault_message (resp.body);
    long status = resp.status;
    http_response_reset (&resp);
    return status;
  }
}

int
rhv_call_ok (struct rhv_engine *e, const char *what, const char *verb, const char *path,
             const char *body, json_t **out)
{
  CLEANUP_FREE char *fault = NULL;
  long status = rhv_call (e, verb, path, body, out, &fault);

  if (status == -1)
    return -1;
  if (status < 200 || status >= 300) {
    log_error ("%s: %s %s%s: HTTP %ld: %s", what, verb, e->api, path, status,
               fault ? fault : "?");
    return -1;
  }
  return 0;
}

char *
rhv_xml (const char *root, ...)
{
  xmlDoc *doc = xmlNewDoc (BAD_CAST "1.0");
  xmlNode *r = xmlNewNode (NULL, BAD_CAST root);
  xmlChar *mem = NULL;
  int len = 0;
  char *out = NULL;
  va_list ap;
  const char *name;

  if (doc == NULL || r == NULL) {
    xmlFreeDoc (doc);
    xmlFreeNode (r);
    return NULL;
  }
  xmlDocSetRootElement (doc, r);
  va_start (ap, root);
  while ((name = va_arg (ap, const char *)) != NULL) {
    const char *value = va_arg (ap, const char *);
    if (strcmp (name, "@id") == 0)
      xmlNewProp (r, BAD_CAST "id", BAD_CAST value);
    else if (strchr (name, '@')) {
      /* "disk@id": an empty child with an id attribute, <disk id="VALUE"/> */
      CLEANUP_FREE char *child = strndup (name, strchr (name, '@') - name);
      xmlNode *c = child ? xmlNewChild (r, NULL, BAD_CAST child, NULL) : NULL;
      if (c)
        xmlNewProp (c, BAD_CAST strchr (name, '@') + 1, BAD_CAST value);
    } else
      xmlNewTextChild (r, NULL, BAD_CAST name, BAD_CAST value);
  }
  va_end (ap);
  xmlDocDumpMemoryEnc (doc, &mem, &len, "UTF-8");
  if (mem)
    out = strndup ((const char *)mem, len);
  xmlFree (mem);
  xmlFreeDoc (doc);
  if (out == NULL)
    log_error ("<%s>: out of memory", root);
  return out;
}

void
rhv_engine_stats (struct rhv_engine *e, char *buf, size_t len)
{
  struct http_stats hs;

  http_pool_stats (e->pool, &hs);
  snprintf (buf, len,
            "engine calls %" PRIu64 ", logins %" PRIu64 ", HTTP requests %" PRIu64,
            __atomic_load_n (&e->calls, __ATOMIC_RELAXED),
            __atomic_load_n (&e->logins, __ATOMIC_RELAXED), hs.requests);
}
