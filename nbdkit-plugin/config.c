/* ferry: validation of the plugin's parameters, kept apart so unit tests can call it. */
#include <stdlib.h>
#include <string.h>

#include "common/http.h"
#include "common/log.h"
#include "source.h"

int
source_config_check (const struct source_config *c)
{
  char tp[128];

  if (c->provider == NULL || strcmp (c->provider, "vsphere") != 0) {
    log_error ("provider=%s: only provider=vsphere is supported",
               c->provider ? c->provider : "(missing)");
    return -1;
  }
  if (c->server == NULL || *c->server == '\0' || c->user == NULL || c->password == NULL) {
    log_error ("server=, user= and password= are required (password=+FILE reads it from a "
               "file, password=- asks for it)");
    return -1;
  }
  if (strchr (c->server, '/') || strchr (c->server, '@')) {
    log_error ("server=%s: give a host name or address with an optional :PORT, not a URL",
               c->server);
    return -1;
  }
  if ((c->vm == NULL) == (c->vm_uuid == NULL)) {
    log_error ("give exactly one of vm=MOREF|NAME and vm-uuid=UUID");
    return -1;
  }
  if (c->thumbprint && c->cacert) {
    log_error (
        "thumbprint= and cacert= are exclusive: the thumbprint pins the certificate, "
        "the CA file verifies its chain");
    return -1;
  }
  if (!c->sslverify && (c->thumbprint || c->cacert)) {
    log_error ("sslverify=false cannot be combined with cacert= or thumbprint=");
    return -1;
  }
  if (c->thumbprint && http_normalise_thumbprint (c->thumbprint, tp, sizeof tp) == -1) {
    log_error ("thumbprint=%s: expected a SHA-1 (20 bytes) or SHA-256 (32 bytes) "
               "fingerprint in hex, like AA:BB:...",
               c->thumbprint);
    return -1;
  }
  if (c->connections < 1 || c->connections > 64) {
    log_error ("connections=%u: must be between 1 and 64", c->connections);
    return -1;
  }
  return 0;
}
