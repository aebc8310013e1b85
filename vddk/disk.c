/* SPDX-License-Identifier: Apache-2.0 */
/* ferry: VixDiskLib disks — Open/Close, GetInfo, the transport mode.
 *
 * Open("[ds] dir/name.vmdk") opens a provider source, in the connection's vCenter
 * session, for the connection's VM at its point in time (the snapshot given to ConnectEx,
 * else the VM must be off), finds the disk by its file name, and reads the disk's
 * descriptor to make sure ferry's raw read of name-flat.vmdk is the disk's content;
 * anything else is refused here, never served.
 *
 * THREAD MODEL: Open and Close from any thread, one at a time (nbdkit holds a global lock
 * around them, as VMware requires); GetInfo and GetTransportMode from the handle's user.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/cleanup.h"
#include "common/http.h"
#include "nbdkit-plugin/readahead.h"
#include "providers/vsphere/soap.h"
#include "vddk.h"

#define DESCRIPTOR_MAX (1024 * 1024)

/* The disks of SRC as "\"[ds] a.vmdk\", ..." for messages; malloc'd. */
static char *
disk_names (struct source *src)
{
  char *buf = NULL;
  size_t len = 0;
  FILE *fp = open_memstream (&buf, &len);

  if (fp == NULL)
    return NULL;
  for (size_t i = 0; i < source_disk_count (src); i++)
    fprintf (fp, "%s\"%s\"", i ? ", " : "", source_disk (src, i)->file_name);
  fclose (fp);
  return buf;
}

/* GET the descriptor of DISK and check it (descriptor.c). */
static VixError
check_descriptor (struct vddk_handle *h, const struct provider_disk *disk)
{
  struct vddk_conn *c = h->conn;
  CLEANUP_FREE char *ds = NULL, *path = NULL, *qpath = NULL, *qdc = NULL, *qds = NULL;
  CLEANUP_FREE char *url = NULL, *text = NULL, *why = NULL;
  uint64_t size;

  if (vs_parse_file_name (disk->file_name, &ds, &path) == -1)
    return vddk_fail (VIX_E_NOT_SUPPORTED, "Open %s: not a \"[datastore] path\" file name",
                      disk->file_name);
  qpath = http_quote (path, true);
  qdc = http_quote (c->vm.dc_path ? c->vm.dc_path : "ha-datacenter", false);
  qds = http_quote (ds, false);
  if (!qpath || !qdc || !qds ||
      asprintf (&url, "/folder/%s?dcPath=%s&dsName=%s", qpath, qdc, qds) == -1)
    return vddk_fail (VIX_E_OUT_OF_MEMORY, "Open %s: out of memory", disk->file_name);
  if (http_head_size (c->session->pool, url, &size) == -1)
    return vddk_fail (VIX_E_FAIL, "Open %s: reading its descriptor", disk->file_name);
  if (size == 0 || size > DESCRIPTOR_MAX)
    return vddk_fail (VIX_E_NOT_SUPPORTED,
                      "Open %s: the file is %" PRIu64 " bytes, not a text descriptor (a "
                      "monolithic sparse VMDK?); ferry reads only flat VMFS/NFS disks",
                      disk->file_name, size);
  text = malloc (size + 1);
  if (text == NULL)
    return vddk_fail (VIX_E_OUT_OF_MEMORY, "Open %s: out of memory", disk->file_name);
  if (http_get_range (c->session->pool, url, text, size, 0) == -1)
    return vddk_fail (VIX_E_FAIL, "Open %s: reading its descriptor", disk->file_name);
  text[size] = '\0';
  if (memchr (text, '\0', size))
    return vddk_fail (
        VIX_E_NOT_SUPPORTED,
        "Open %s: the descriptor is binary (a monolithic sparse VMDK?); ferry "
        "reads only flat VMFS/NFS disks",
        disk->file_name);
  if (vddk_check_descriptor (text, path, disk->capacity, &why, &h->uuid, &h->adapter) == -1)
    return vddk_fail (VIX_E_NOT_SUPPORTED, "Open %s: refused: %s", disk->file_name, why);
  return VIX_OK;
}

static void
free_secret (char **s)
{
  if (*s) {
    explicit_bzero (*s, strlen (*s));
    free (*s);
  }
}

/* The handle's reads, for read-ahead. */
static int
read_source (void *opaque, void *buf, uint32_t count, uint64_t offset)
{
  struct vddk_handle *h = opaque;
  return source_pread (h->src, h->disk, buf, count, offset);
}

static uint64_t
data_bytes (void *opaque, uint64_t offset, uint64_t count)
{
  struct vddk_handle *h = opaque;
  return source_data_bytes (h->src, h->disk, offset, count);
}

static const struct readahead_source readahead_source = {
  .read = read_source,
  .data_bytes = data_bytes,
};

static void
handle_free (struct vddk_handle *h)
{
  readahead_free (h->ra);
  source_close (h->src);
  pthread_mutex_destroy (&h->lock);
  pthread_cond_destroy (&h->idle);
  free (h->path);
  free (h->uuid);
  free (h);
}

VixError
VixDiskLib_Open (const VixDiskLibConnection connection, const char *path, uint32_t flags,
                 VixDiskLibHandle *handle)
{
  struct vddk_conn *c = connection;
  struct vddk_handle *h;
  CLEANUP_FREE char *names = NULL;
  __attribute__ ((cleanup (free_secret))) char *session = NULL;
  VixError err;
  int i;

  vddk_clear_pending ();
  if (c == NULL || path == NULL || handle == NULL)
    return vddk_fail (VIX_E_INVALID_ARG, "Open: no connection, path or handle");
  /* The connection's session (ferry's login or the caller's cookie), not a new login. */
  session = vs_session_cookie (c->session);
  if (session == NULL)
    return vddk_fail (VIX_E_OUT_OF_MEMORY, "Open %s: out of memory", path);
  struct source_config sc = {
    .provider = "vsphere",
    .server = c->server,
    .user = c->user,
    .password = c->password,
    .session = session,
    .vm = c->moref,
    .snapshot = c->snapshot,
    .thumbprint = c->thumbprint,
    .cacert = c->thumbprint ? NULL : vddk_settings.cacert,
    .sslverify = c->thumbprint ? true : vddk_settings.sslverify,
    .connections = vddk_settings.connections,
    .purpose = "vddk",
  };
  if (source_config_check (&sc) == -1)
    return vddk_fail (VIX_E_INVALID_ARG, "Open %s", path);

  h = calloc (1, sizeof *h);
  if (h == NULL)
    return vddk_fail (VIX_E_OUT_OF_MEMORY, "Open %s: out of memory", path);
  pthread_mutex_init (&h->lock, NULL);
  pthread_cond_init (&h->idle, NULL);
  h->conn = c;
  h->adapter = VIXDISKLIB_ADAPTER_SCSI_LSILOGIC;
  h->path = strdup (path);
  if (h->path == NULL) {
    err = vddk_fail (VIX_E_OUT_OF_MEMORY, "Open %s: out of memory", path);
    goto err;
  }
  h->src = source_open (&sc);
  if (h->src == NULL) {
    err = vddk_fail (VIX_E_FAIL, "Open %s on %s (%s%s)", path, c->moref,
                     c->snapshot ? "snapshot " : "the VM's disks",
                     c->snapshot ? c->snapshot : "");
    goto err;
  }
  i = source_find_disk (h->src, path);
  if (i == -1) {
    names = disk_names (h->src);
    err = vddk_fail (VIX_E_FILE_NOT_FOUND,
                     "Open %s: %s has no such disk%s; its disks are %s", path, c->moref,
                     c->snapshot ? " at that snapshot" : "", names ? names : "?");
    goto err;
  }
  h->disk = i;
  h->capacity = source_disk (h->src, i)->capacity;
  err = check_descriptor (h, source_disk (h->src, i));
  if (err != VIX_OK)
    goto err;
  /* Read-ahead is correct only because the bytes cannot change while the handle is open:
   * the source serves a snapshot's frozen base or a VM that is off.
   */
  h->ra = readahead_new (&readahead_source, h, h->capacity);
  if (h->ra == NULL) {
    err = vddk_fail (VIX_E_OUT_OF_MEMORY, "Open %s: out of memory", path);
    goto err;
  }
  if (h->uuid == NULL && source_disk (h->src, i)->uuid &&
      (h->uuid = strdup (source_disk (h->src, i)->uuid)) == NULL) {
    err = vddk_fail (VIX_E_OUT_OF_MEMORY, "Open %s: out of memory", path);
    goto err;
  }
  vddk_debug ("Open %s: disk %s of %s, %" PRIu64 " bytes%s", path,
              source_disk (h->src, i)->key, c->moref, h->capacity,
              flags & VIXDISKLIB_FLAG_OPEN_READ_ONLY ? "" : " (served read-only)");
  *handle = h;
  return VIX_OK;

err:
  handle_free (h);
  return err;
}

VixError
VixDiskLib_Close (VixDiskLibHandle handle)
{
  struct vddk_handle *h = handle;

  if (h == NULL)
    return VIX_OK;
  VixDiskLib_Wait (h);
  {
    char buf[512];
    uint64_t chunks, hits, direct;
    source_stats (h->src, buf, sizeof buf);
    readahead_stats (h->ra, &chunks, &hits, &direct);
    vddk_debug ("Close %s: %s; read-ahead: %" PRIu64 " chunks fetched, %" PRIu64
                " pieces served from them, %" PRIu64 " read directly",
                h->path, buf, chunks, hits, direct);
  }
  handle_free (h);
  return VIX_OK;
}

const char *
VixDiskLib_GetTransportMode (VixDiskLibHandle handle)
{
  return "nbdssl";
}

VixError
VixDiskLib_GetInfo (VixDiskLibHandle handle, VixDiskLibInfo **info)
{
  struct vddk_handle *h = handle;
  VixDiskLibInfo *in;
  uint64_t sectors;

  if (h == NULL || info == NULL)
    return vddk_fail (VIX_E_INVALID_ARG, "GetInfo: no handle");
  in = calloc (1, sizeof *in);
  if (in == NULL)
    return vddk_fail (VIX_E_OUT_OF_MEMORY, "GetInfo %s: out of memory", h->path);
  sectors = h->capacity / VIXDISKLIB_SECTOR_SIZE;
  in->capacity = sectors;
  /* The geometries VMware reports for large disks: BIOS 255/63, physical 16/63. */
  in->biosGeo.heads = 255;
  in->biosGeo.sectors = 63;
  in->biosGeo.cylinders = sectors / (255 * 63) > 1024 ? 1024 : sectors / (255 * 63);
  in->physGeo.heads = 16;
  in->physGeo.sectors = 63;
  in->physGeo.cylinders = sectors / (16 * 63) > 16383 ? 16383 : sectors / (16 * 63);
  in->adapterType = h->adapter;
  in->numLinks = 1;
  in->parentFileNameHint = NULL;
  in->uuid = h->uuid ? strdup (h->uuid) : NULL;
  in->logicalSectorSize = VIXDISKLIB_SECTOR_SIZE;
  in->physicalSectorSize = VIXDISKLIB_SECTOR_SIZE;
  if (h->uuid && in->uuid == NULL) {
    free (in);
    return vddk_fail (VIX_E_OUT_OF_MEMORY, "GetInfo %s: out of memory", h->path);
  }
  *info = in;
  return VIX_OK;
}

void
VixDiskLib_FreeInfo (VixDiskLibInfo *info)
{
  if (info == NULL)
    return;
  free (info->parentFileNameHint);
  free (info->uuid);
  free (info);
}
