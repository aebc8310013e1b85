/* SPDX-License-Identifier: Apache-2.0 */
/* ferry: VixDiskLib start-up and connections — InitEx/Exit, the connect parameters,
 * ConnectEx/Disconnect.
 *
 * InitEx only records the callbacks and reads the config file: no thread is started
 * before the first ReadAsync, and nothing here runs at load time, so nbdkit may load the
 * library before it forks and call InitEx after (its .after_fork).
 *
 * ConnectEx logs in to the server at once (so a wrong password, host or thumbprint fails
 * here, with the server's words), or checks the session cookie the caller gave, and finds
 * the VM named by vmxSpec; each Open then opens a provider source of its own for the
 * reads, in that same vCenter session (one login per connection, none with a cookie).
 *
 * THREAD MODEL: InitEx and Exit from one thread with nothing else running (VMware's rule
 * too); ConnectEx/Disconnect from any thread (nbdkit serialises them with Open/Close).
 */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "common/cleanup.h"
#include "common/http.h"
#include "common/log.h"
#include "vddk.h"

#define FERRY_VDDK_VERSION "0.1"

struct vddk_settings vddk_settings = { .connections = 4, .workers = 8, .sslverify = true };
static bool initialised;

static void
settings_reset (void)
{
  free (vddk_settings.cacert);
  vddk_settings =
      (struct vddk_settings){ .connections = 4, .workers = 8, .sslverify = true };
}

/* One "key = value" line of the config file; unknown keys (VDDK's own, such as
 * vixDiskLib.nfcAio.*) are ignored.
 */
static int
setting (const char *file, unsigned lineno, const char *key, const char *value)
{
  char *end;
  unsigned long n;

  if (strcmp (key, "ferry.connections") == 0 || strcmp (key, "ferry.workers") == 0) {
    n = strtoul (value, &end, 10);
    if (*end || n < 1 || n > 64) {
      log_error ("%s:%u: %s = \"%s\": want a number from 1 to 64", file, lineno, key,
                 value);
      return -1;
    }
    if (key[6] == 'c')
      vddk_settings.connections = n;
    else
      vddk_settings.workers = n;
  } else if (strcmp (key, "ferry.cacert") == 0) {
    free (vddk_settings.cacert);
    vddk_settings.cacert = strdup (value);
  } else if (strcmp (key, "ferry.sslverify") == 0)
    vddk_settings.sslverify = strcasecmp (value, "false") != 0 && strcmp (value, "0") != 0;
  else
    vddk_debug ("%s:%u: ignoring %s", file, lineno, key);
  return 0;
}

static int
read_config (const char *file)
{
  CLEANUP_FCLOSE FILE *fp = fopen (file, "r");
  char line[4096];
  unsigned lineno = 0;

  if (fp == NULL) {
    log_error ("config file %s: %m", file);
    return -1;
  }
  while (fgets (line, sizeof line, fp)) {
    char *p = line, *key, *eq, *value, *end;
    lineno++;
    p += strspn (p, " \t");
    if (*p == '#' || *p == '\n' || *p == '\0')
      continue;
    eq = strchr (p, '=');
    if (eq == NULL)
      continue;
    key = p;
    for (end = eq; end > key && isspace ((unsigned char)end[-1]); end--)
      ;
    *end = '\0';
    value = eq + 1;
    value += strspn (value, " \t");
    value[strcspn (value, "\r\n")] = '\0';
    for (end = value + strlen (value); end > value && isspace ((unsigned char)end[-1]);
         end--)
      *(end - 1) = '\0';
    if (*value == '"') {
      value++;
      if ((end = strrchr (value, '"')))
        *end = '\0';
    }
    if (setting (file, lineno, key, value) == -1)
      return -1;
  }
  return 0;
}

VixError
VixDiskLib_InitEx (uint32_t major, uint32_t minor, VixDiskLibGenericLogFunc *log,
                   VixDiskLibGenericLogFunc *warn, VixDiskLibGenericLogFunc *panic,
                   const char *lib_dir, const char *config_file)
{
  vddk_log_setup (log, warn);
  vddk_clear_pending ();
  vddk_io_init ();
  vddk_debug ("ferry libvixDiskLib " FERRY_VDDK_VERSION
              " (VDDK C interface 8, read-only, vSphere /folder over HTTPS); asked for "
              "%u.%u, libdir %s",
              major, minor, lib_dir ? lib_dir : "(none)");
  settings_reset ();
  if (config_file && read_config (config_file) == -1)
    return vddk_fail (VIX_E_INVALID_ARG, "InitEx");
  initialised = true;
  return VIX_OK;
}

void
VixDiskLib_Exit (void)
{
  vddk_io_stop ();
  settings_reset ();
  vddk_log_reset ();
  initialised = false;
}

/* The only transport: HTTPS range reads of the datastore, which is what VDDK calls nbdssl
 * for a network copy over TLS.
 */
const char *
VixDiskLib_ListTransportModes (void)
{
  return "nbdssl";
}

VixDiskLibConnectParams *
VixDiskLib_AllocateConnectParams (void)
{
  return calloc (1, sizeof (VixDiskLibConnectParams));
}

void
VixDiskLib_FreeConnectParams (VixDiskLibConnectParams *params)
{
  free (params);
}

static void
conn_free (struct vddk_conn *c)
{
  if (c == NULL)
    return;
  vs_vm_free (&c->vm);
  vs_close (c->session);
  if (c->password) {
    explicit_bzero (c->password, strlen (c->password));
    free (c->password);
  }
  free (c->server);
  free (c->user);
  free (c->moref);
  free (c->snapshot);
  free (c->thumbprint);
  free (c);
}

/* "moref=vm-16" (or moRef=, any case; more "&key=value" may follow). */
static char *
parse_vmx_spec (const char *spec)
{
  if (strncasecmp (spec, "moref=", 6) != 0 || spec[6] == '\0' || spec[6] == '&')
    return NULL;
  return strndup (spec + 6, strcspn (spec + 6, "&"));
}

/* serverName may carry its port ("vcenter.cdi:8989", "[fd00::1]:443"), CDI passes it so;
 * a bare IPv6 address gets brackets; PORT applies when the name has none.
 */
static char *
server_with_port (const char *name, uint32_t port)
{
  char *s = NULL;
  const char *colon = strchr (name, ':');
  bool v6 = colon && strchr (colon + 1, ':') && name[0] != '[';
  bool has_port = name[0] == '[' ? strstr (name, "]:") != NULL : colon != NULL && !v6;

  if (has_port || port == 0 || port == 443) {
    if (asprintf (&s, v6 ? "[%s]" : "%s", name) == -1)
      return NULL;
  } else if (asprintf (&s, v6 ? "[%s]:%u" : "%s:%u", name, port) == -1)
    return NULL;
  return s;
}

VixError
VixDiskLib_ConnectEx (const VixDiskLibConnectParams *params, char read_only,
                      const char *snapshot_ref, const char *transport_modes,
                      VixDiskLibConnection *connection)
{
  struct vddk_conn *c;
  const char *user, *password, *cookie = NULL;
  char tp[128];
  VixError err;

  vddk_clear_pending ();
  if (!initialised)
    return vddk_fail (VIX_E_FAIL, "ConnectEx: VixDiskLib_InitEx was not called");
  if (params == NULL || connection == NULL)
    return vddk_fail (VIX_E_INVALID_ARG, "ConnectEx: no parameters");
  if (params->specType == VIXDISKLIB_SPEC_VSTORAGE_OBJECT)
    return vddk_fail (VIX_E_NOT_SUPPORTED,
                      "ConnectEx: first class disks (vStorageObject) are not supported; "
                      "give a VM with vmxSpec \"moref=...\"");
  if (params->serverName == NULL || *params->serverName == '\0')
    return vddk_fail (VIX_E_NOT_SUPPORTED,
                      "ConnectEx: local files are not supported; give serverName");
  if (params->vmxSpec == NULL)
    return vddk_fail (VIX_E_INVALID_ARG, "ConnectEx %s: no vmxSpec; give \"moref=vm-NN\"",
                      params->serverName);
  switch (params->credType) {
    case VIXDISKLIB_CRED_UID:
      user = params->creds.uid.userName;
      password = params->creds.uid.password;
      if (user == NULL || password == NULL)
        return vddk_fail (VIX_E_AUTHENTICATION_FAIL,
                          "ConnectEx %s: no user name or password", params->serverName);
      break;
    case VIXDISKLIB_CRED_SESSIONID:
      /* The caller's session is used as it is, never logged out; the user name and key
       * (nbdkit passes password= there), when given, log in again if it expires.
       */
      cookie = params->creds.sessionId.cookie;
      user = params->creds.sessionId.userName;
      password = params->creds.sessionId.key;
      if (cookie == NULL || *cookie == '\0')
        return vddk_fail (VIX_E_AUTHENTICATION_FAIL, "ConnectEx %s: no session cookie",
                          params->serverName);
      break;
    default:
      return vddk_fail (VIX_E_NOT_SUPPORTED,
                        "ConnectEx %s: credential type %d is not supported; give user and "
                        "password, or a session cookie",
                        params->serverName, (int)params->credType);
  }
  if (params->thumbPrint && *params->thumbPrint &&
      http_normalise_thumbprint (params->thumbPrint, tp, sizeof tp) == -1)
    return vddk_fail (VIX_E_INVALID_ARG,
                      "ConnectEx %s: thumbprint \"%s\" is not a SHA-1 or SHA-256 "
                      "fingerprint (AA:BB:...)",
                      params->serverName, params->thumbPrint);

  c = calloc (1, sizeof *c);
  if (c == NULL)
    return vddk_fail (VIX_E_OUT_OF_MEMORY, "ConnectEx: out of memory");
  c->read_only = read_only;
  c->moref = parse_vmx_spec (params->vmxSpec);
  if (c->moref == NULL) {
    err = vddk_fail (VIX_E_NOT_SUPPORTED,
                     "ConnectEx %s: vmxSpec \"%s\": only \"moref=<vm moref>\" is supported "
                     "(vm=moref=vm-NN)",
                     params->serverName, params->vmxSpec);
    goto err;
  }
  c->server = server_with_port (params->serverName, params->port);
  c->user = user ? strdup (user) : NULL;
  c->password = password ? strdup (password) : NULL;
  c->snapshot = snapshot_ref && *snapshot_ref ? strdup (snapshot_ref) : NULL;
  c->thumbprint = params->thumbPrint && *params->thumbPrint ? strdup (tp) : NULL;
  if (!c->server || (user && !c->user) || (password && !c->password) ||
      (snapshot_ref && *snapshot_ref && !c->snapshot) ||
      (params->thumbPrint && *params->thumbPrint && !c->thumbprint)) {
    err = vddk_fail (VIX_E_OUT_OF_MEMORY, "ConnectEx: out of memory");
    goto err;
  }

  struct vs_config vc = {
    .server = c->server,
    .user = c->user,
    .password = c->password,
    .cookie = cookie,
    .thumbprint = c->thumbprint,
    .cacert = c->thumbprint ? NULL : vddk_settings.cacert,
    .sslverify = c->thumbprint ? true : vddk_settings.sslverify,
    .connections = 1,
  };
  c->session = vs_open (&vc);
  if (c->session == NULL) {
    err =
        vddk_fail (vddk_pending_has ("InvalidLogin") || vddk_pending_has ("session cookie")
                       ? VIX_E_AUTHENTICATION_FAIL
                       : VIX_E_CANNOT_CONNECT_TO_HOST,
                   "ConnectEx %s", c->server);
    goto err;
  }
  if (vs_find_vm (c->session, c->moref, false, NULL, &c->vm) == -1) {
    err = vddk_fail (VIX_E_FILE_NOT_FOUND, "ConnectEx %s: VM %s", c->server, c->moref);
    goto err;
  }
  vddk_debug ("ConnectEx %s: VM %s (%s)%s%s, transports requested %s", c->server, c->moref,
              c->vm.name ? c->vm.name : "", c->snapshot ? ", snapshot " : "",
              c->snapshot ? c->snapshot : "", transport_modes ? transport_modes : "(any)");
  *connection = c;
  return VIX_OK;

err:
  conn_free (c);
  return err;
}

VixError
VixDiskLib_Disconnect (VixDiskLibConnection connection)
{
  conn_free (connection);
  return VIX_OK;
}

VixError
VixDiskLib_Create (const VixDiskLibConnection connection, const char *path,
                   const VixDiskLibCreateParams *create_params, void *progress_unused,
                   void *progress_data_unused)
{
  return vddk_fail (VIX_E_NOT_SUPPORTED,
                    "Create %s: ferry's VixDiskLib is read-only and cannot create disks",
                    path ? path : "");
}
