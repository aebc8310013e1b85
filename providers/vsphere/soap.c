/* SPDX-License-Identifier: Apache-2.0 */
/* ferry: vSphere SOAP calls over POST /sdk.
 *
 * soap_call builds the envelope, posts it through the session's HTTP pool, parses the
 * answer with libxml2 and turns SOAP faults into (type, message) pairs.  When the server
 * says NotAuthenticated (idle expiry, server restart) the session logs in again once and
 * the call is repeated, so callers never see an expired session.
 *
 * Secrets: the Login envelope carries the password, so every envelope is wiped before it is
 * freed (they are small; it costs nothing to wipe them all), curl is given the buffer
 * itself (CURLOPT_POSTFIELDS, no copy of ours), and the answer to Login is wiped too and
 * never shown: a server or proxy that echoes the request in a fault or an error page
 * would otherwise print the password in our error message.  libcurl copies a small body
 * into its own request buffer: common/http.c makes libcurl wipe every block it frees.
 *
 * THREAD MODEL: soap_call may run on many threads at once; only re-login is serialised
 * (login_lock) and it uses the pool's session generation so that N threads failing at once
 * cause one Login, not N.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <libxml/parser.h>
#include <libxml/tree.h>

#include "common/cleanup.h"
#include "common/log.h"
#include "common/util.h"
#include "soap.h"

char *
soap_envelope (const char *method, const char *this_type, const char *this_ref,
               const char *args)
{
  CLEANUP_FREE char *ref = xml_escape (this_ref);
  char *buf = NULL;

  if (ref == NULL)
    return NULL;
  if (asprintf (&buf,
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?>"
                "<soapenv:Envelope xmlns:soapenv=\"" SOAPENV_NS "\""
                " xmlns:xsi=\"" XSI_NS "\">"
                "<soapenv:Body><%s xmlns=\"" VIM25_NS "\">"
                "<_this type=\"%s\">%s</_this>%s</%s></soapenv:Body></soapenv:Envelope>",
                method, this_type, ref, args ? args : "", method) == -1)
    return NULL;
  return buf;
}

void
vs_fault_reset (struct vs_fault *fault)
{
  free (fault->type);
  free (fault->message);
  fault->type = fault->message = NULL;
}

/* The fault's type: the xsi:type of the first element in <detail>, else its element name
 * without the "Fault" suffix, else the faultcode.
 */
static char *
fault_type (xmlNode *fault)
{
  xmlNode *detail = xml_child (fault, "detail");
  xmlNode *first = xml_child (detail, NULL);
  char *type;

  if (first) {
    type = xml_type (first);
    if (type)
      return type;
    type = strdup ((const char *)first->name);
    if (type) {
      size_t n = strlen (type);
      if (n > 5 && strcmp (type + n - 5, "Fault") == 0)
        type[n - 5] = '\0';
    }
    return type;
  }
  return xml_child_text (fault, "faultcode");
}

/* SAX hook for <!DOCTYPE ...>: libxml2 calls it as soon as the declaration's name and
 * external id are read, before any of its internal subset (entity declarations) is parsed.
 */
static void
refuse_doctype (void *opaque, const xmlChar *name, const xmlChar *external_id,
                const xmlChar *system_id)
{
  xmlParserCtxt *ctxt = opaque;

  (void)name;
  (void)external_id;
  (void)system_id;
  *(bool *)ctxt->_private = true;
  xmlStopParser (ctxt);
}

/* Parse BODY as XML without any DTD processing.  SOAP forbids a DOCTYPE (SOAP 1.1 s. 3),
 * and none of vCenter's answers has one; one in an answer can only be an attack on the
 * parser (entity expansion, "billion laughs", external entities reading local files), so
 * the parse stops at the declaration: no entity is ever declared, expanded or loaded
 * (XML_PARSE_NONET, and neither XML_PARSE_NOENT nor XML_PARSE_DTDLOAD).
 */
static xmlDoc *
parse_xml (const char *body, size_t len, bool *doctype)
{
  xmlParserCtxt *ctxt = xmlNewParserCtxt ();
  xmlDoc *doc;

  *doctype = false;
  if (ctxt == NULL)
    return NULL;
  ctxt->_private = doctype;
  ctxt->sax->internalSubset = refuse_doctype;
  doc = xmlCtxtReadMemory (ctxt, body, len, "soap.xml", NULL,
                           XML_PARSE_NONET | XML_PARSE_NOBLANKS | XML_PARSE_NOERROR |
                               XML_PARSE_NOWARNING);
  xmlFreeParserCtxt (ctxt);
  if (doc && (*doctype || doc->intSubset || doc->extSubset)) {
    *doctype = true;
    xmlFreeDoc (doc);
    doc = NULL;
  }
  return doc;
}

int
soap_parse (const char *body, size_t len, long status, xmlDoc **docp, xmlNode **ret,
            struct vs_fault *fault)
{
  xmlDoc *doc;
  xmlNode *root, *bodyn, *first;
  bool doctype;

  *docp = NULL;
  *ret = NULL;
  doc = body ? parse_xml (body, len, &doctype) : NULL;
  if (doc == NULL && body && doctype) {
    fault->type = strdup ("InvalidResponse");
    if (asprintf (&fault->message,
                  "HTTP %ld: the answer has a DOCTYPE, refused (no DTD is processed)",
                  status) == -1)
      fault->message = NULL;
    return -1;
  }
  if (doc == NULL) {
    fault->type = strdup ("InvalidResponse");
    if (asprintf (&fault->message, "HTTP %ld, not a SOAP answer: %.200s", status,
                  body ? body : "") == -1)
      fault->message = NULL;
    return -1;
  }
  root = xmlDocGetRootElement (doc);
  bodyn = xml_child (root, "Body");
  first = xml_child (bodyn, NULL);
  if (first == NULL) {
    xmlFreeDoc (doc);
    fault->type = strdup ("InvalidResponse");
    if (asprintf (&fault->message, "HTTP %ld, SOAP answer without a body", status) == -1)
      fault->message = NULL;
    return -1;
  }
  if (strcmp ((const char *)first->name, "Fault") == 0) {
    fault->type = fault_type (first);
    fault->message = xml_child_text (first, "faultstring");
    xmlFreeDoc (doc);
    return -1;
  }
  *docp = doc;
  *ret = xml_child (first, "returnval");
  return 0;
}

static bool
contains (const char *haystack, const char *needle)
{
  return haystack && needle && needle[0] && strstr (haystack, needle) != NULL;
}

/* The answer to Login may echo the request: keep the fault's type (unless it holds the
 * password), drop its message when it holds the password, the request (raw or escaped),
 * or an excerpt of a body that is not SOAP.
 */
static void
redact_login_fault (const struct vs_session *s, long status, struct vs_fault *fault)
{
  CLEANUP_FREE char *escaped = xml_escape (s->password);
  bool invalid = fault->type && strcmp (fault->type, "InvalidResponse") == 0;
  char *msg = NULL;

  if (contains (fault->type, s->password) || contains (fault->type, escaped) ||
      (fault->type && strchr (fault->type, '<'))) {
    free (fault->type);
    fault->type = strdup ("fault");
  }
  if (fault->message &&
      (invalid || escaped == NULL || contains (fault->message, s->password) ||
       contains (fault->message, escaped) || contains (fault->message, "password>") ||
       contains (fault->message, "password&gt;"))) {
    if (asprintf (&msg,
                  invalid
                      ? "HTTP %ld, not a SOAP answer (not shown: it may echo the password)"
                      : "the server's message is not shown: it echoes the password",
                  status) == -1)
      msg = NULL;
    explicit_bzero (fault->message, strlen (fault->message));
    free (fault->message);
    fault->message = msg;
  }
  if (escaped)
    explicit_bzero (escaped, strlen (escaped));
}

/* One POST and parse, no re-login.  Returns 0, -1 on a SOAP fault (in *FAULT), or -2 on a
 * transport error (already reported).
 */
static int
soap_call_once (struct vs_session *s, const char *ctx, const char *method,
                const char *envelope, bool idempotent, xmlDoc **doc, xmlNode **ret,
                struct vs_fault *fault)
{
  char action[96];
  const char *headers[] = { "Content-Type: text/xml; charset=\"utf-8\"", action, NULL };
  struct http_response resp = { 0 };
  double start = time_monotonic ();
  bool secret = strcmp (method, "Login") == 0;
  int r;

  snprintf (action, sizeof action, "SOAPAction: \"%s\"", s->soap_action);
  __atomic_add_fetch (&s->soap_calls, 1, __ATOMIC_RELAXED);
  if (http_post (s->pool, "/sdk", headers, envelope, strlen (envelope), idempotent,
                 &resp) == -1) {
    log_error ("%s: %s: no answer from %s", ctx, method, s->server);
    return -2;
  }
  r = soap_parse (resp.body, resp.len, resp.status, doc, ret, fault);
  if (secret && r == -1)
    redact_login_fault (s, resp.status, fault);
  /* The session cookie comes with the answer to Login. */
  if (r == 0 && resp.set_cookie && secret) {
    http_pool_set_cookie (s->pool, resp.set_cookie);
    vs_set_cookie (s, resp.set_cookie);
    s->logged_in = true;
    s->borrowed = false;
  }
  if (ferry_debug_soap)
    log_debug ("soap: %s %s: HTTP %ld %s%s in %.3fs", ctx, method, resp.status,
               r == 0 ? "ok" : "fault ", r == 0 ? "" : (fault->type ? fault->type : "?"),
               time_monotonic () - start);
  if (secret && resp.body)
    explicit_bzero (resp.body, resp.len);
  http_response_reset (&resp);
  return r;
}

/* The envelope may hold the password (Login): wiped before it is freed. */
static void
free_envelope (char **envelope)
{
  if (*envelope) {
    explicit_bzero (*envelope, strlen (*envelope));
    free (*envelope);
  }
}

int
soap_call (struct vs_session *s, const char *ctx, const char *method, const char *this_type,
           const char *this_ref, const char *args, bool idempotent, xmlDoc **doc,
           xmlNode **ret, struct vs_fault *fault)
{
  __attribute__ ((cleanup (free_envelope))) char *envelope =
      soap_envelope (method, this_type, this_ref, args);
  struct vs_fault local = { 0 };
  struct vs_fault *f = fault ? fault : &local;
  bool may_relogin =
      strcmp (method, "Login") != 0 && strcmp (method, "RetrieveServiceContent") != 0;
  int r;

  if (envelope == NULL) {
    log_error ("%s: %s: out of memory", ctx, method);
    return -1;
  }
  for (int attempt = 0;; attempt++) {
    unsigned generation = http_pool_generation (s->pool);
    r = soap_call_once (s, ctx, method, envelope, idempotent, doc, ret, f);
    if (r == -2)
      return -1;
    if (r == 0)
      return 0;
    if (attempt == 0 && may_relogin && f->type &&
        strcmp (f->type, "NotAuthenticated") == 0) {
      vs_fault_reset (f);
      if (vs_relogin (s, generation) == -1)
        return -1;
      continue;
    }
    break;
  }
  if (f == &local) {
    log_error ("%s: %s: %s%s%s", ctx, method, local.type ? local.type : "fault",
               local.message ? ": " : "", local.message ? local.message : "");
    vs_fault_reset (&local);
  }
  return -1;
}

/* RetrievePropertiesEx (with ContinueRetrievePropertiesEx never needed for one object). */
int
vs_retrieve (struct vs_session *s, const char *type, const char *ref,
             const char *const *paths, xmlDoc **doc, xmlNode **obj, struct vs_fault *fault)
{
  CLEANUP_FREE char *args = NULL;
  CLEANUP_FREE char *eref = xml_escape (ref);
  size_t len = 0;
  FILE *fp = open_memstream (&args, &len);
  xmlNode *ret;

  if (fp == NULL || eref == NULL) {
    if (fp)
      fclose (fp);
    log_error ("%s: RetrievePropertiesEx: out of memory", ref);
    return -1;
  }
  fprintf (fp, "<specSet><propSet><type>%s</type>", type);
  for (size_t i = 0; paths[i]; i++)
    fprintf (fp, "<pathSet>%s</pathSet>", paths[i]);
  fprintf (fp,
           "</propSet><objectSet><obj type=\"%s\">%s</obj><skip>false</skip>"
           "</objectSet></specSet><options></options>",
           type, eref);
  fclose (fp);

  if (soap_call (s, ref, "RetrievePropertiesEx", "PropertyCollector", s->property_collector,
                 args, true, doc, &ret, fault) == -1)
    return -1;
  *obj = xml_child (ret, "objects");
  if (*obj == NULL) {
    xmlFreeDoc (*doc);
    *doc = NULL;
    if (fault) {
      fault->type = strdup ("ManagedObjectNotFound");
      fault->message = strdup ("no such object");
    } else
      log_error ("%s %s: RetrievePropertiesEx: the object does not exist", type, ref);
    return -1;
  }
  return 0;
}

xmlNode *
vs_prop (xmlNode *obj, const char *name)
{
  for (xmlNode *p = xml_child (obj, "propSet"); p; p = xml_next (p, "propSet")) {
    CLEANUP_FREE char *n = xml_child_text (p, "name");
    if (n && strcmp (n, name) == 0)
      return xml_child (p, "val");
  }
  return NULL;
}
