/* SPDX-License-Identifier: Apache-2.0 */
/* ferry: small libxml2 helpers for vSphere's SOAP documents.
 *
 * vCenter writes xsi:type, vcsim writes XMLSchema-instance:type: the type attribute is
 * therefore always looked up by namespace URI, never by prefix.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libxml/tree.h>

#include "soap.h"

static bool
is_element (xmlNode *node, const char *name)
{
  return node->type == XML_ELEMENT_NODE &&
         (name == NULL || strcmp ((const char *)node->name, name) == 0);
}

xmlNode *
xml_child (xmlNode *node, const char *name)
{
  if (node == NULL)
    return NULL;
  for (xmlNode *c = node->children; c; c = c->next)
    if (is_element (c, name))
      return c;
  return NULL;
}

xmlNode *
xml_next (xmlNode *node, const char *name)
{
  if (node == NULL)
    return NULL;
  for (xmlNode *c = node->next; c; c = c->next)
    if (is_element (c, name))
      return c;
  return NULL;
}

char *
xml_text (xmlNode *node)
{
  xmlChar *content;
  char *ret;

  if (node == NULL)
    return NULL;
  content = xmlNodeGetContent (node);
  if (content == NULL)
    return NULL;
  ret = strdup ((const char *)content);
  xmlFree (content);
  return ret;
}

char *
xml_child_text (xmlNode *node, const char *name)
{
  return xml_text (xml_child (node, name));
}

bool
xml_child_u64 (xmlNode *node, const char *name, uint64_t *value)
{
  char *text = xml_child_text (node, name), *end;
  bool ok = false;

  if (text) {
    errno = 0;
    unsigned long long v = strtoull (text, &end, 10);
    if (errno == 0 && end != text && *end == '\0' && text[0] != '-') {
      *value = v;
      ok = true;
    }
    free (text);
  }
  return ok;
}

char *
xml_type (xmlNode *node)
{
  xmlChar *type;
  const char *colon;
  char *ret;

  if (node == NULL)
    return NULL;
  type = xmlGetNsProp (node, BAD_CAST "type", BAD_CAST XSI_NS);
  if (type == NULL)
    return NULL;
  /* The value may itself carry a prefix ("vim25:VirtualDisk"). */
  colon = strchr ((const char *)type, ':');
  ret = strdup (colon ? colon + 1 : (const char *)type);
  xmlFree (type);
  return ret;
}
