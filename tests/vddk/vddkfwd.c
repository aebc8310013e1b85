/* SPDX-License-Identifier: Apache-2.0 */
/* ferry: TEST ONLY — a small nbdkit plugin that forwards to a libvixDiskLib the way
 * nbdkit's vddk plugin does (which Debian does not package), so that the library can be
 * read end to end by nbdcopy, qemu-img and nbdinfo.  It is glue, not a vddk plugin: the
 * conformance claims rest on tests/vddk/vddk-driver.c.
 *
 *   nbdkit tests/vddk/nbdkit-vddkfwd-plugin.so libdir=DIR server=HOST user=NAME
 *     password=+FILE thumbprint=FP vm=moref=vm-NN file="[ds] dir/name.vmdk"
 *     [snapshot=MOREF] [config=FILE] [cookie=COOKIE]
 *
 * With cookie= the connection is made as nbdkit's vddk plugin makes it: credType
 * SESSIONID with the cookie, the user name and the password (if any) as the key.
 *
 * Call order as in nbdkit's vddk plugin: dlopen (RTLD_NOW) in .get_ready, before the fork;
 * InitEx(6, 5) in .after_fork; per connection AllocateConnectParams, ConnectEx and Open
 * under a global lock, GetInfo for the size, the extents probe QueryAllocatedBlocks
 * (0, 128, 128); reads with ReadAsync, many in flight; extents per request in whole chunks,
 * never past the last whole chunk, the partial tail reported as data (nbdkit >= 1.42);
 * Wait, Close, Disconnect at close; Exit at unload.
 */
#include <dlfcn.h>
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NBDKIT_API_VERSION 2
#include <nbdkit-plugin.h>

#define FERRY_VIX_TYPES_ONLY
#include "vddk/vixdisklib.h"

static const char *libdir, *server, *user, *thumbprint, *vm, *file, *snapshot, *config;
static const char *cookie;
static char *password;
static void *dl;
static pthread_mutex_t open_lock = PTHREAD_MUTEX_INITIALIZER;

static VixError (*init_ex) (uint32_t, uint32_t, VixDiskLibGenericLogFunc *,
                            VixDiskLibGenericLogFunc *, VixDiskLibGenericLogFunc *,
                            const char *, const char *);
static void (*lib_exit) (void);
static char *(*error_text) (VixError, const char *);
static void (*free_error_text) (char *);
static VixDiskLibConnectParams *(*alloc_params) (void);
static void (*free_params) (VixDiskLibConnectParams *);
static VixError (*connect_ex) (const VixDiskLibConnectParams *, char, const char *,
                               const char *, VixDiskLibConnection *);
static VixError (*disconnect) (VixDiskLibConnection);
static VixError (*open_disk) (VixDiskLibConnection, const char *, uint32_t,
                              VixDiskLibHandle *);
static VixError (*close_disk) (VixDiskLibHandle);
static VixError (*get_info) (VixDiskLibHandle, VixDiskLibInfo **);
static void (*free_info) (VixDiskLibInfo *);
static VixError (*read_async) (VixDiskLibHandle, uint64_t, uint64_t, unsigned char *,
                               VixDiskLibCompletionCB, void *);
static VixError (*wait_disk) (VixDiskLibHandle);
static VixError (*query_blocks) (VixDiskLibHandle, uint64_t, uint64_t, uint64_t,
                                 VixDiskLibBlockList **);
static VixError (*free_blocks) (VixDiskLibBlockList *);

static void
vix_error (const char *call, VixError err)
{
  char *text = error_text (err, NULL);
  nbdkit_error ("%s: %s", call, text ? text : "?");
  free_error_text (text);
}

static void
debug_fn (const char *fmt, va_list args)
{
  char *s;
  if (vasprintf (&s, fmt, args) != -1) {
    s[strcspn (s, "\n")] = '\0';
    nbdkit_debug ("%s", s);
    free (s);
  }
}

static void
error_fn (const char *fmt, va_list args)
{
  char *s;
  if (vasprintf (&s, fmt, args) != -1) {
    s[strcspn (s, "\n")] = '\0';
    nbdkit_error ("%s", s);
    free (s);
  }
}

static void
fwd_unload (void)
{
  if (lib_exit)
    lib_exit ();
  if (dl)
    dlclose (dl);
  free (password);
}

static int
fwd_config (const char *key, const char *value)
{
  if (strcmp (key, "libdir") == 0)
    libdir = value;
  else if (strcmp (key, "server") == 0)
    server = value;
  else if (strcmp (key, "user") == 0)
    user = value;
  else if (strcmp (key, "password") == 0)
    return nbdkit_read_password (value, &password);
  else if (strcmp (key, "thumbprint") == 0)
    thumbprint = value;
  else if (strcmp (key, "vm") == 0)
    vm = value;
  else if (strcmp (key, "file") == 0)
    file = value;
  else if (strcmp (key, "snapshot") == 0)
    snapshot = value;
  else if (strcmp (key, "config") == 0)
    config = value;
  else if (strcmp (key, "cookie") == 0)
    cookie = value;
  else {
    nbdkit_error ("unknown parameter %s", key);
    return -1;
  }
  return 0;
}

static int
fwd_config_complete (void)
{
  if (!libdir || !server || !user || (!password && !cookie) || !vm || !file) {
    nbdkit_error ("libdir, server, user, password (or cookie), vm and file are required");
    return -1;
  }
  return 0;
}

#define RESOLVE(var, name)                                                                 \
  if ((*(void **)&var = dlsym (dl, name)) == NULL) {                                       \
    nbdkit_error ("required VDDK symbol %s is missing", name);                             \
    return -1;                                                                             \
  }

static int
fwd_get_ready (void)
{
  char path[4096];

  snprintf (path, sizeof path, "%s/lib64/libvixDiskLib.so.8", libdir);
  dl = dlopen (path, RTLD_NOW);
  if (dl == NULL) {
    nbdkit_error ("%s", dlerror ());
    return -1;
  }
  RESOLVE (init_ex, "VixDiskLib_InitEx");
  RESOLVE (lib_exit, "VixDiskLib_Exit");
  RESOLVE (error_text, "VixDiskLib_GetErrorText");
  RESOLVE (free_error_text, "VixDiskLib_FreeErrorText");
  RESOLVE (alloc_params, "VixDiskLib_AllocateConnectParams");
  RESOLVE (free_params, "VixDiskLib_FreeConnectParams");
  RESOLVE (connect_ex, "VixDiskLib_ConnectEx");
  RESOLVE (disconnect, "VixDiskLib_Disconnect");
  RESOLVE (open_disk, "VixDiskLib_Open");
  RESOLVE (close_disk, "VixDiskLib_Close");
  RESOLVE (get_info, "VixDiskLib_GetInfo");
  RESOLVE (free_info, "VixDiskLib_FreeInfo");
  RESOLVE (read_async, "VixDiskLib_ReadAsync");
  RESOLVE (wait_disk, "VixDiskLib_Wait");
  RESOLVE (query_blocks, "VixDiskLib_QueryAllocatedBlocks");
  RESOLVE (free_blocks, "VixDiskLib_FreeBlockList");
  return 0;
}

static int
fwd_after_fork (void)
{
  VixError err = init_ex (6, 5, debug_fn, error_fn, error_fn, libdir, config);
  if (err != VIX_OK) {
    vix_error ("VixDiskLib_InitEx", err);
    return -1;
  }
  return 0;
}

struct handle {
  VixDiskLibConnectParams *params;
  VixDiskLibConnection conn;
  VixDiskLibHandle h;
  uint64_t sectors;
};

/* nbdkit-vddk queues a connection's requests to one worker thread, which submits ReadAsync
 * without waiting, so many reads per handle are in flight.  Here each nbdkit thread submits
 * its own ReadAsync and waits for its callback: as many reads in flight, from several
 * threads (the library allows that; the driver covers the one-thread pattern).
 */
#define THREAD_MODEL NBDKIT_THREAD_MODEL_PARALLEL

static void
fwd_close (void *handle)
{
  struct handle *h = handle;

  pthread_mutex_lock (&open_lock);
  if (h->h) {
    wait_disk (h->h);
    close_disk (h->h);
  }
  if (h->conn)
    disconnect (h->conn);
  pthread_mutex_unlock (&open_lock);
  free_params (h->params);
  free (h);
}

static void *
fwd_open (int readonly)
{
  struct handle *h = calloc (1, sizeof *h);
  VixDiskLibInfo *info;
  VixDiskLibBlockList *bl;
  VixError err;

  h->params = alloc_params ();
  h->params->vmxSpec = (char *)vm;
  h->params->serverName = (char *)server;
  h->params->thumbPrint = (char *)thumbprint;
  if (cookie) {
    h->params->credType = VIXDISKLIB_CRED_SESSIONID;
    h->params->creds.sessionId.cookie = (char *)cookie;
    h->params->creds.sessionId.userName = (char *)user;
    h->params->creds.sessionId.key = password;
  } else {
    h->params->credType = VIXDISKLIB_CRED_UID;
    h->params->creds.uid.userName = (char *)user;
    h->params->creds.uid.password = password;
  }
  pthread_mutex_lock (&open_lock);
  err = connect_ex (h->params, readonly, snapshot, "file:nbdssl:nbd", &h->conn);
  if (err != VIX_OK) {
    pthread_mutex_unlock (&open_lock);
    vix_error ("VixDiskLib_ConnectEx", err);
    goto err;
  }
  err = open_disk (h->conn, file, readonly ? VIXDISKLIB_FLAG_OPEN_READ_ONLY : 0, &h->h);
  pthread_mutex_unlock (&open_lock);
  if (err != VIX_OK) {
    vix_error ("VixDiskLib_Open", err);
    goto err;
  }
  err = get_info (h->h, &info);
  if (err != VIX_OK) {
    vix_error ("VixDiskLib_GetInfo", err);
    goto err;
  }
  h->sectors = info->capacity;
  free_info (info);
  err = query_blocks (h->h, 0, 128, 128, &bl);
  if (err != VIX_OK) {
    vix_error ("VixDiskLib_QueryAllocatedBlocks probe", err);
    goto err;
  }
  free_blocks (bl);
  return h;

err:
  fwd_close (h);
  return NULL;
}

static int64_t
fwd_get_size (void *handle)
{
  return ((struct handle *)handle)->sectors * 512;
}

static int
fwd_can_extents (void *handle)
{
  return 1;
}

/* One request's completion, as nbdkit-vddk keeps one per command: the callback wakes only
 * the thread that waits for it.
 */
struct done {
  pthread_mutex_t lock;
  pthread_cond_t cond;
  bool finished;
  VixError err;
};

static void
read_done (void *data, VixError result)
{
  struct done *d = data;

  pthread_mutex_lock (&d->lock);
  d->finished = true;
  d->err = result;
  pthread_cond_signal (&d->cond);
  pthread_mutex_unlock (&d->lock);
}

static int
fwd_pread (void *handle, void *buf, uint32_t count, uint64_t offset, uint32_t flags)
{
  struct handle *h = handle;
  struct done d = { .lock = PTHREAD_MUTEX_INITIALIZER, .cond = PTHREAD_COND_INITIALIZER };
  VixError err;

  if (offset % 512 || count % 512) {
    nbdkit_error ("unaligned read %" PRIu32 "@%" PRIu64, count, offset);
    errno = EINVAL;
    return -1;
  }
  err = read_async (h->h, offset / 512, count / 512, buf, read_done, &d);
  if (err != VIX_ASYNC) {
    vix_error ("VixDiskLib_ReadAsync", err);
    return -1;
  }
  pthread_mutex_lock (&d.lock);
  while (!d.finished)
    pthread_cond_wait (&d.cond, &d.lock);
  pthread_mutex_unlock (&d.lock);
  if (d.err != VIX_OK) {
    vix_error ("VixDiskLib_ReadAsync", d.err);
    return -1;
  }
  return 0;
}

static int
fwd_extents (void *handle, uint32_t count, uint64_t offset, uint32_t flags,
             struct nbdkit_extents *extents)
{
  struct handle *h = handle;
  const uint64_t chunk = 128;
  uint64_t whole = h->sectors / chunk * chunk;
  uint64_t start = offset / 512 / chunk * chunk;
  uint64_t end = ((offset + count) / 512 + chunk - 1) / chunk * chunk;
  uint64_t pos = start;
  VixDiskLibBlockList *bl;
  VixError err;

  if (end > whole)
    end = whole;
  if (start < end) {
    err = query_blocks (h->h, start, end - start, chunk, &bl);
    if (err != VIX_OK) {
      vix_error ("VixDiskLib_QueryAllocatedBlocks", err);
      return -1;
    }
    for (uint32_t i = 0; i < bl->numBlocks; i++) {
      uint64_t o = bl->blocks[i].offset, l = bl->blocks[i].length;
      if (o > pos && nbdkit_add_extent (extents, pos * 512, (o - pos) * 512,
                                        NBDKIT_EXTENT_HOLE | NBDKIT_EXTENT_ZERO) == -1)
        goto err;
      if (nbdkit_add_extent (extents, o * 512, l * 512, 0) == -1)
        goto err;
      pos = o + l;
    }
    free_blocks (bl);
    if (pos < end && nbdkit_add_extent (extents, pos * 512, (end - pos) * 512,
                                        NBDKIT_EXTENT_HOLE | NBDKIT_EXTENT_ZERO) == -1)
      return -1;
    pos = end;
  }
  /* The partial last chunk is data. */
  if (pos < h->sectors)
    return nbdkit_add_extent (extents, pos * 512, (h->sectors - pos) * 512, 0);
  return 0;

err:
  free_blocks (bl);
  return -1;
}

static struct nbdkit_plugin plugin = {
  .name = "vddkfwd",
  .version = "0",
  .unload = fwd_unload,
  .config = fwd_config,
  .config_complete = fwd_config_complete,
  .magic_config_key = "file",
  .get_ready = fwd_get_ready,
  .after_fork = fwd_after_fork,
  .open = fwd_open,
  .close = fwd_close,
  .get_size = fwd_get_size,
  .can_extents = fwd_can_extents,
  .pread = fwd_pread,
  .extents = fwd_extents,
};

NBDKIT_REGISTER_PLUGIN (plugin)
