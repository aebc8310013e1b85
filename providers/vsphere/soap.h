/* SPDX-License-Identifier: Apache-2.0 */
/* ferry: vSphere SOAP internals shared by the provider's files (not a public header). */
#ifndef FERRY_VSPHERE_SOAP_H
#define FERRY_VSPHERE_SOAP_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include <libxml/tree.h>

#include "common/http.h"
#include "common/util.h"
#include "vsphere.h"

#define VIM25_NS "urn:vim25"
#define XSI_NS "http://www.w3.org/2001/XMLSchema-instance"
#define SOAPENV_NS "http://schemas.xmlsoap.org/soap/envelope/"

struct vs_session {
  struct http_pool *pool;
  char *server;
  char *user;
  char *password;
  char soap_action[64];  /* "urn:vim25/<apiVersion>" */
  char *session_manager; /* morefs from the ServiceContent */
  char *property_collector;
  char *search_index;
  char *root_folder;
  char *view_manager;
  char *api_type; /* HostAgent (ESXi) or VirtualCenter */
  pthread_mutex_t login_lock;
  bool logged_in;      /* Login answered with a session cookie */
  bool borrowed;       /* the session is the caller's (vs_config.cookie): no Logout */
  char *cookie;        /* the cookie sent, "name=value" (a secret); under login_lock */
  uint64_t soap_calls; /* updated atomically */
  uint64_t relogins;
  uint64_t disk_reads; /* /folder range reads and their bytes */
  uint64_t disk_bytes;
};

/* The envelope of METHOD on _this=(THIS_TYPE, THIS) with ARGS (already XML). Malloc'd. */
char *soap_envelope (const char *method, const char *this_type, const char *this_ref,
                     const char *args);

/* Call METHOD and parse the answer.  On success *DOC holds the answer and *RET its
 * <returnval> (NULL for void methods).  CTX names the object for messages ("vm-42").  A
 * SOAP fault goes into FAULT when given (no message), else is reported.  NotAuthenticated
 * triggers one re-login and a retry.  IDEMPOTENT: may the call be resent after a transport
 * failure?
 */
int soap_call (struct vs_session *s, const char *ctx, const char *method,
               const char *this_type, const char *this_ref, const char *args,
               bool idempotent, xmlDoc **doc, xmlNode **ret, struct vs_fault *fault);

/* Parse an HTTP answer to a SOAP call (pure, for tests). */
int soap_parse (const char *body, size_t len, long status, xmlDoc **doc, xmlNode **ret,
                struct vs_fault *fault);

int vs_login (struct vs_session *s);
int vs_relogin (struct vs_session *s, unsigned generation);
/* Remember COOKIE ("name=value") as the session's (vs_session_cookie). */
void vs_set_cookie (struct vs_session *s, const char *cookie);

/* RetrievePropertiesEx of PATHS on one object; *OBJ is its ObjectContent. */
int vs_retrieve (struct vs_session *s, const char *type, const char *ref,
                 const char *const *paths, xmlDoc **doc, xmlNode **obj,
                 struct vs_fault *fault);
xmlNode *vs_prop (xmlNode *obj, const char *name);

/* Parse an ArrayOfVirtualDevice into the disks it holds. */
int vs_parse_disks (xmlNode *devices, disk_vector *disks);

/* XML helpers: element children by local name, text, xsi:type by namespace URI. */
xmlNode *xml_child (xmlNode *node, const char *name);
xmlNode *xml_next (xmlNode *node, const char *name);
char *xml_text (xmlNode *node);
char *xml_child_text (xmlNode *node, const char *name);
bool xml_child_u64 (xmlNode *node, const char *name, uint64_t *value);
char *xml_type (xmlNode *node);

#endif /* FERRY_VSPHERE_SOAP_H */
