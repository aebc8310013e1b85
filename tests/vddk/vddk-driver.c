/* SPDX-License-Identifier: Apache-2.0 */
/* ferry: a conformance driver for libvixDiskLib.so.8 that replays what nbdkit's vddk
 * plugin does (shared/reference/vddk.md §A.1), without nbdkit's vddk plugin.
 *
 *   vddk-driver LIBDIR dump
 *   vddk-driver LIBDIR open
 *   vddk-driver LIBDIR conform OUTDIR
 *   vddk-driver LIBDIR map OUTDIR
 *
 * The library is found as nbdkit finds it (lib64/libvixDiskLib.so.9, libvixDiskLib.so.9,
 * then .so.8, .so.7, .so.6 in both places, dlopen RTLD_NOW), and every VixDiskLib_* name
 * is resolved into a global pointer variable of the same name, exported from this program
 * (-rdynamic) exactly like nbdkit's own: a library that called one of its functions through
 * the PLT would jump into this variable and crash.
 *
 * The connection comes from the environment: VDDK_SERVER, VDDK_USER, VDDK_PASSWORD_FILE,
 * VDDK_THUMBPRINT, VDDK_VM (vmxSpec, "moref=vm-NN"), VDDK_FILE ("[ds] dir/name.vmdk"),
 * optional VDDK_FILE2 (the second handle; default VDDK_FILE), VDDK_SNAPSHOT, VDDK_CONFIG,
 * VDDK_COOKIE (connect with credType SESSIONID, the password as its key), VDDK_PORT (the
 * port field).
 *
 * dump: nbdkit --dump-plugin: InitEx with NULL log functions, ListTransportModes, Exit.
 * open: fork, InitEx, ConnectEx, Open; prints the error text and exits 1 on failure.
 * conform: dump, then fork; the child runs InitEx(6, 5), connection parameters filled by
 * their offsets, ConnectEx(read-only, snapshot, "file:nbdssl:nbd"), Open(READ_ONLY),
 * GetTransportMode, GetInfo (checked), the allocated-blocks probe (0, 128, 128), the map of
 * the whole disk in 32 GiB windows plus the window past the end (OUTDIR/map: allocated
 * "offset length" in bytes, clipped to the disk), argument checks (expected error codes),
 * the whole disk read with 64 ReadAsync in flight and every callback counted
 * (OUTDIR/disk.raw), then the same again on two more handles (Open flags READ_ONLY|FASTLZ)
 * read from two threads at once (OUTDIR/disk-a.raw, OUTDIR/disk-b.raw), Close,
 * Disconnect, Exit.  Exit 0 when everything held.  map: only the map (large disks).
 */
#include <dlfcn.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define FERRY_VIX_TYPES_ONLY
#include "vddk/vixdisklib.h"

#define IN_FLIGHT 64

/* name, return type, arguments: the 23 functions nbdkit >= 1.44 requires. */
#define FUNCS(X)                                                                           \
  X (InitEx, VixError,                                                                     \
     (uint32_t, uint32_t, VixDiskLibGenericLogFunc *, VixDiskLibGenericLogFunc *,          \
      VixDiskLibGenericLogFunc *, const char *, const char *))                             \
  X (Exit, void, (void))                                                                   \
  X (ListTransportModes, const char *, (void))                                             \
  X (GetErrorText, char *, (VixError, const char *))                                       \
  X (FreeErrorText, void, (char *))                                                        \
  X (AllocateConnectParams, VixDiskLibConnectParams *, (void))                             \
  X (FreeConnectParams, void, (VixDiskLibConnectParams *))                                 \
  X (ConnectEx, VixError,                                                                  \
     (const VixDiskLibConnectParams *, char, const char *, const char *,                   \
      VixDiskLibConnection *))                                                             \
  X (Disconnect, VixError, (VixDiskLibConnection))                                         \
  X (Open, VixError, (VixDiskLibConnection, const char *, uint32_t, VixDiskLibHandle *))   \
  X (Close, VixError, (VixDiskLibHandle))                                                  \
  X (GetTransportMode, const char *, (VixDiskLibHandle))                                   \
  X (GetInfo, VixError, (VixDiskLibHandle, VixDiskLibInfo **))                             \
  X (FreeInfo, void, (VixDiskLibInfo *))                                                   \
  X (Read, VixError, (VixDiskLibHandle, uint64_t, uint64_t, unsigned char *))              \
  X (Write, VixError, (VixDiskLibHandle, uint64_t, uint64_t, const unsigned char *))       \
  X (ReadAsync, VixError,                                                                  \
     (VixDiskLibHandle, uint64_t, uint64_t, unsigned char *, VixDiskLibCompletionCB,       \
      void *))                                                                             \
  X (WriteAsync, VixError,                                                                 \
     (VixDiskLibHandle, uint64_t, uint64_t, const unsigned char *, VixDiskLibCompletionCB, \
      void *))                                                                             \
  X (Wait, VixError, (VixDiskLibHandle))                                                   \
  X (Flush, VixError, (VixDiskLibHandle))                                                  \
  X (Create, VixError,                                                                     \
     (VixDiskLibConnection, const char *, const VixDiskLibCreateParams *, void *, void *)) \
  X (QueryAllocatedBlocks, VixError,                                                       \
     (VixDiskLibHandle, uint64_t, uint64_t, uint64_t, VixDiskLibBlockList **))             \
  X (FreeBlockList, VixError, (VixDiskLibBlockList *))

/* Global and exported, as in nbdkit: the interposition trap. */
#define DECLARE(name, ret, args) ret (*VixDiskLib_##name) args;
FUNCS (DECLARE)

static void *dl;
static int failures;

#define CHECK(cond, ...)                                                                   \
  do {                                                                                     \
    if (!(cond)) {                                                                         \
      fprintf (stderr, "vddk-driver: FAILED: %s: ", #cond);                                \
      fprintf (stderr, __VA_ARGS__);                                                       \
      fputc ('\n', stderr);                                                                \
      failures++;                                                                          \
    }                                                                                      \
  } while (0)

static void
logger (const char *fmt, va_list args)
{
  fprintf (stderr, "vddk-driver: debug: ");
  vfprintf (stderr, fmt, args);
}

static void
warner (const char *fmt, va_list args)
{
  fprintf (stderr, "vddk-driver: warn: ");
  vfprintf (stderr, fmt, args);
}

static void
panicker (const char *fmt, va_list args)
{
  fprintf (stderr, "vddk-driver: panic: ");
  vfprintf (stderr, fmt, args);
  abort ();
}

/* nbdkit's load_library: the first name that loads gives library_version. */
static int
load_library (const char *libdir)
{
  static const struct {
    const char *name;
    int version;
  } names[] = {
    { "lib64/libvixDiskLib.so.9", 9 }, { "libvixDiskLib.so.9", 9 },
    { "lib64/libvixDiskLib.so.8", 8 }, { "libvixDiskLib.so.8", 8 },
    { "lib64/libvixDiskLib.so.7", 7 }, { "libvixDiskLib.so.7", 7 },
    { "lib64/libvixDiskLib.so.6", 6 }, { "libvixDiskLib.so.6", 6 },
  };
  char path[4096];
  int version = -1, resolved = 0;

  for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
    snprintf (path, sizeof path, "%s/%s", libdir, names[i].name);
    dl = dlopen (path, RTLD_NOW);
    if (dl) {
      version = names[i].version;
      break;
    }
  }
  if (dl == NULL) {
    fprintf (stderr, "vddk-driver: no libvixDiskLib in %s: %s\n", libdir, dlerror ());
    exit (1);
  }
#define RESOLVE(name, ret, args)                                                           \
  *(void **)&VixDiskLib_##name = dlsym (dl, "VixDiskLib_" #name);                          \
  if (VixDiskLib_##name == NULL)                                                           \
    fprintf (stderr,                                                                       \
             "vddk-driver: required VDDK symbol VixDiskLib_" #name " is missing\n");       \
  else                                                                                     \
    resolved++;
  FUNCS (RESOLVE)
  printf ("vddk_library_version=%d\nvddk_symbols=%d\n", version, resolved);
  if (resolved != 23)
    exit (1);
  return version;
}

static void
report (const char *call, VixError err)
{
  char *text = VixDiskLib_GetErrorText (err, NULL);
  fprintf (stderr, "vddk-driver: %s: %s\n", call, text ? text : "(no text)");
  VixDiskLib_FreeErrorText (text);
}

static char *
env (const char *name)
{
  char *v = getenv (name);
  return v && *v ? v : NULL;
}

static char *
read_password (void)
{
  const char *file = env ("VDDK_PASSWORD_FILE");
  char buf[1024] = "";
  FILE *fp;

  if (file == NULL)
    return NULL;
  fp = fopen (file, "r");
  if (fp == NULL || fgets (buf, sizeof buf, fp) == NULL) {
    perror (file);
    exit (1);
  }
  fclose (fp);
  buf[strcspn (buf, "\n")] = '\0';
  return strdup (buf);
}

/* Connection parameters filled by byte offset, as a consumer compiled against VMware's
 * header lays them out; proves the library reads the same offsets.
 */
static VixDiskLibConnectParams *
make_params (char *password)
{
  VixDiskLibConnectParams *p = VixDiskLib_AllocateConnectParams ();
  char *base = (char *)p;
  char *cookie = env ("VDDK_COOKIE");

#define AT(off, type) (*(type *)(base + (off)))
  AT (0, char *) = env ("VDDK_VM");
  AT (8, char *) = env ("VDDK_SERVER");
  AT (16, char *) = env ("VDDK_THUMBPRINT");
  if (cookie) {
    AT (32, int) = 2; /* SESSIONID */
    AT (40, char *) = cookie;
    AT (48, char *) = env ("VDDK_USER");
    AT (56, char *) = password;
  } else {
    AT (32, int) = 1; /* UID */
    AT (40, char *) = env ("VDDK_USER");
    AT (48, char *) = password;
  }
  AT (64, uint32_t) = env ("VDDK_PORT") ? atoi (env ("VDDK_PORT")) : 0; /* 0: 443 */
  AT (68, uint32_t) = 0;                                                /* nfcHostPort */
  AT (120, int) = 0;                                                    /* specType VMX */
  return p;
}

struct conn {
  VixDiskLibConnectParams *params;
  VixDiskLibConnection conn;
  VixDiskLibHandle h;
};

static int
connect_open (struct conn *c, char *password, const char *file, uint32_t flags)
{
  VixError err;

  c->params = make_params (password);
  err = VixDiskLib_ConnectEx (c->params, 1, env ("VDDK_SNAPSHOT"), "file:nbdssl:nbd",
                              &c->conn);
  if (err != VIX_OK) {
    report ("VixDiskLib_ConnectEx", err);
    return -1;
  }
  err = VixDiskLib_Open (c->conn, file, flags, &c->h);
  if (err != VIX_OK) {
    report ("VixDiskLib_Open", err);
    return -1;
  }
  return 0;
}

static void
close_disconnect (struct conn *c)
{
  if (c->h)
    CHECK (VixDiskLib_Close (c->h) == VIX_OK, "Close");
  if (c->conn)
    CHECK (VixDiskLib_Disconnect (c->conn) == VIX_OK, "Disconnect");
  VixDiskLib_FreeConnectParams (c->params);
}

/* --- the whole disk with IN_FLIGHT ReadAsync in flight --- */

struct reader {
  VixDiskLibHandle h;
  unsigned char *buf;
  uint64_t sectors;
  pthread_mutex_t lock;
  pthread_cond_t cond;
  unsigned *calls; /* callbacks per request: must end as exactly 1 each */
  size_t submitted, completed;
  VixError first_error;
};

struct tag {
  struct reader *r;
  size_t i;
};

static void
read_done (void *data, VixError result)
{
  struct tag *t = data;
  struct reader *r = t->r;

  pthread_mutex_lock (&r->lock);
  r->calls[t->i]++;
  r->completed++;
  if (result != VIX_OK && r->first_error == VIX_OK)
    r->first_error = result;
  pthread_cond_broadcast (&r->cond);
  pthread_mutex_unlock (&r->lock);
}

/* Request sizes in sectors, cycled: a chunk, one sector, 3 MiB (split inside), odd. */
static const uint64_t sizes[] = { 128, 1, 6144, 7, 4096 };

static int
read_disk (VixDiskLibHandle h, uint64_t sectors, const char *out)
{
  struct reader r = { .h = h, .sectors = sectors };
  size_t max = sectors + 1; /* more than enough tags */
  struct tag *tags = calloc (max, sizeof *tags);
  uint64_t pos = 0;
  unsigned batch = 0;
  FILE *fp;

  r.buf = malloc (sectors * 512 + 1);
  r.calls = calloc (max, sizeof *r.calls);
  pthread_mutex_init (&r.lock, NULL);
  pthread_cond_init (&r.cond, NULL);
  while (pos < sectors) {
    size_t first = r.submitted;
    /* IN_FLIGHT requests back to back, without waiting for any. */
    for (unsigned k = 0; k < IN_FLIGHT && pos < sectors; k++) {
      uint64_t n = sizes[(r.submitted) % (sizeof sizes / sizeof sizes[0])];
      VixError err;
      if (n > sectors - pos)
        n = sectors - pos;
      tags[r.submitted] = (struct tag){ .r = &r, .i = r.submitted };
      err = VixDiskLib_ReadAsync (h, pos, n, r.buf + pos * 512, read_done,
                                  &tags[r.submitted]);
      if (err != VIX_ASYNC) {
        report ("VixDiskLib_ReadAsync", err);
        return -1;
      }
      pthread_mutex_lock (&r.lock);
      r.submitted++;
      pthread_mutex_unlock (&r.lock);
      pos += n;
    }
    if (batch++ % 2 == 0) {
      /* Wait returns only when every callback has run. */
      CHECK (VixDiskLib_Wait (h) == VIX_OK, "Wait");
      pthread_mutex_lock (&r.lock);
      CHECK (r.completed == r.submitted, "after Wait %zu of %zu callbacks ran", r.completed,
             r.submitted);
      pthread_mutex_unlock (&r.lock);
    } else {
      pthread_mutex_lock (&r.lock);
      while (r.completed < r.submitted)
        pthread_cond_wait (&r.cond, &r.lock);
      pthread_mutex_unlock (&r.lock);
    }
    (void)first;
  }
  CHECK (VixDiskLib_Flush (h) == VIX_OK, "Flush");
  /* No callback runs twice, even late. */
  CHECK (VixDiskLib_Wait (h) == VIX_OK, "Wait");
  for (size_t i = 0; i < r.submitted; i++)
    CHECK (r.calls[i] == 1, "request %zu: %u callbacks", i, r.calls[i]);
  if (r.first_error != VIX_OK) {
    report ("ReadAsync callback", r.first_error);
    return -1;
  }
  printf ("%s: requests=%zu callbacks=%zu\n", out, r.submitted, r.completed);
  fp = fopen (out, "w");
  if (fp == NULL || fwrite (r.buf, 512, sectors, fp) != sectors || fclose (fp) != 0) {
    perror (out);
    return -1;
  }
  free (r.buf);
  free (r.calls);
  free (tags);
  return 0;
}

/* --- allocated blocks --- */

static int
write_map (VixDiskLibHandle h, uint64_t sectors, const char *out)
{
  const uint64_t chunk = VIXDISKLIB_MIN_CHUNK_SIZE, window = (uint64_t)32 << 21;
  uint64_t end = sectors / chunk * chunk, last_off = 0, last_len = 0;
  VixDiskLibBlockList *bl;
  VixError err;
  FILE *fp = fopen (out, "w");

  /* nbdkit's probe at worker start. */
  err = VixDiskLib_QueryAllocatedBlocks (h, 0, chunk, chunk, &bl);
  CHECK (err == VIX_OK, "the probe QueryAllocatedBlocks (0, 128, 128)");
  if (err == VIX_OK)
    VixDiskLib_FreeBlockList (bl);

  /* Whole 32 GiB windows up to the last whole chunk, then the partial chunk past EOF. */
  for (uint64_t pos = 0; pos < end || (pos == end && sectors % chunk);
       pos = pos + window < end ? pos + window : (pos < end ? end : end + chunk)) {
    uint64_t n = pos < end ? (end - pos < window ? end - pos : window) : chunk;
    err = VixDiskLib_QueryAllocatedBlocks (h, pos, n, chunk, &bl);
    if (err != VIX_OK) {
      report ("VixDiskLib_QueryAllocatedBlocks", err);
      return -1;
    }
    for (uint32_t i = 0; i < bl->numBlocks; i++) {
      uint64_t o = bl->blocks[i].offset, l = bl->blocks[i].length;
      CHECK (o % chunk == 0 && l % chunk == 0 && l > 0, "block %" PRIu64 "+%" PRIu64, o, l);
      CHECK (o >= pos && o + l <= pos + n, "block %" PRIu64 "+%" PRIu64 " outside window",
             o, l);
      CHECK (o >= last_off + last_len, "blocks not sorted");
      if (o > sectors)
        continue;
      if (o + l > sectors)
        l = sectors - o;
      if (last_len && last_off + last_len == o)
        last_len += l;
      else {
        if (last_len)
          fprintf (fp, "%" PRIu64 " %" PRIu64 "\n", last_off * 512, last_len * 512);
        last_off = o;
        last_len = l;
      }
    }
    VixDiskLib_FreeBlockList (bl);
  }
  if (last_len)
    fprintf (fp, "%" PRIu64 " %" PRIu64 "\n", last_off * 512, last_len * 512);
  fclose (fp);
  return 0;
}

/* --- what must be refused, with which code --- */

static int fired;
static void
must_not_run (void *data, VixError result)
{
  fired++;
}

static void
check_errors (VixDiskLibHandle h, VixDiskLibConnection conn, uint64_t sectors)
{
  unsigned char buf[512];
  VixDiskLibBlockList *bl;
  VixError err;
  char *text;

  err = VixDiskLib_ReadAsync (h, sectors, 1, buf, must_not_run, NULL);
  CHECK (VIX_ERROR_CODE (err) == VIX_E_DISK_OUTOFRANGE, "ReadAsync past the end: %" PRIu64,
         err);
  err = VixDiskLib_ReadAsync (h, sectors - 1, 2, buf, must_not_run, NULL);
  CHECK (VIX_ERROR_CODE (err) == VIX_E_DISK_OUTOFRANGE, "ReadAsync across the end");
  text = VixDiskLib_GetErrorText (err, NULL);
  CHECK (text && strstr (text, "beyond"), "error text \"%s\" says why", text ? text : "");
  VixDiskLib_FreeErrorText (text);
  err = VixDiskLib_Read (h, sectors - 1, 1, buf);
  CHECK (err == VIX_OK, "Read of the last sector");
  err = VixDiskLib_Write (h, 0, 1, buf);
  CHECK (VIX_ERROR_CODE (err) == VIX_E_FILE_READ_ONLY, "Write is refused");
  err = VixDiskLib_WriteAsync (h, 0, 1, buf, must_not_run, NULL);
  CHECK (VIX_ERROR_CODE (err) == VIX_E_FILE_READ_ONLY, "WriteAsync is refused");
  err = VixDiskLib_Create (conn, "[ds] x.vmdk", NULL, NULL, NULL);
  CHECK (VIX_ERROR_CODE (err) == VIX_E_NOT_SUPPORTED, "Create is refused");
  err = VixDiskLib_QueryAllocatedBlocks (h, 0, 64, 64, &bl);
  CHECK (VIX_ERROR_CODE (err) == VIX_E_INVALID_ARG, "QAB with a chunk below 128");
  err = VixDiskLib_QueryAllocatedBlocks (h, 128, 384, 256, &bl);
  CHECK (VIX_ERROR_CODE (err) == VIX_E_INVALID_ARG, "QAB with an unaligned start");
  err = VixDiskLib_QueryAllocatedBlocks (h, (sectors + 127) / 128 * 128, 128, 128, &bl);
  CHECK (VIX_ERROR_CODE (err) == VIX_E_DISK_OUTOFRANGE, "QAB wholly past the end");
  CHECK (VixDiskLib_Wait (h) == VIX_OK, "Wait");
  CHECK (fired == 0, "a refused request called back %d times", fired);
  text = VixDiskLib_GetErrorText (VIX_E_FAIL, NULL);
  CHECK (text != NULL, "a text for any code");
  VixDiskLib_FreeErrorText (text);
}

/* --- two handles in two threads --- */

struct job {
  char *password;
  const char *file;
  const char *out;
  int r;
};

static void *
handle_thread (void *arg)
{
  struct job *j = arg;
  struct conn c = { 0 };
  VixDiskLibInfo *info;

  j->r = -1;
  if (connect_open (&c, j->password, j->file,
                    VIXDISKLIB_FLAG_OPEN_READ_ONLY |
                        VIXDISKLIB_FLAG_OPEN_COMPRESSION_FASTLZ) == 0 &&
      VixDiskLib_GetInfo (c.h, &info) == VIX_OK) {
    j->r = read_disk (c.h, info->capacity, j->out);
    VixDiskLib_FreeInfo (info);
  }
  close_disconnect (&c);
  return NULL;
}

static int
dump (void)
{
  VixError err = VixDiskLib_InitEx (6, 5, NULL, NULL, NULL, NULL, NULL);
  if (err != VIX_OK) {
    report ("VixDiskLib_InitEx", err);
    return -1;
  }
  printf ("vddk_transport_modes=%s\n", VixDiskLib_ListTransportModes ());
  VixDiskLib_Exit ();
  return 0;
}

static int
conform (const char *libdir, const char *outdir, bool only_open, bool only_map)
{
  char *password = read_password ();
  const char *file = env ("VDDK_FILE"), *file2 = env ("VDDK_FILE2");
  struct conn c = { 0 };
  VixDiskLibInfo *info = NULL;
  VixError err;
  char path[4096], path2[4096];
  pthread_t t[2];
  struct job jobs[2];

  err = VixDiskLib_InitEx (6, 5, logger, warner, panicker, libdir, env ("VDDK_CONFIG"));
  if (err != VIX_OK) {
    report ("VixDiskLib_InitEx", err);
    return 1;
  }
  if (file == NULL) {
    fprintf (stderr, "vddk-driver: VDDK_FILE is not set\n");
    return 1;
  }
  if (connect_open (&c, password, file, VIXDISKLIB_FLAG_OPEN_READ_ONLY) == -1)
    goto out;
  if (only_open)
    goto out;
  printf ("transport=%s\n", VixDiskLib_GetTransportMode (c.h));
  err = VixDiskLib_GetInfo (c.h, &info);
  if (err != VIX_OK) {
    report ("VixDiskLib_GetInfo", err);
    goto out;
  }
  printf ("capacity=%" PRIu64 "\n", info->capacity);
  CHECK (info->logicalSectorSize &&
             !(info->logicalSectorSize & (info->logicalSectorSize - 1)),
         "logical sector size %u is a power of two", info->logicalSectorSize);
  CHECK (info->physicalSectorSize &&
             !(info->physicalSectorSize & (info->physicalSectorSize - 1)),
         "physical sector size %u is a power of two", info->physicalSectorSize);
  CHECK (info->numLinks == 1 && info->parentFileNameHint == NULL, "one link, no parent");

  snprintf (path, sizeof path, "%s/map", outdir);
  if (write_map (c.h, info->capacity, path) == -1 || only_map)
    goto out;
  check_errors (c.h, c.conn, info->capacity);
  snprintf (path, sizeof path, "%s/disk.raw", outdir);
  if (read_disk (c.h, info->capacity, path) == -1)
    goto out;

  /* A child forked while the library's workers run can still read (in 20 s). */
  {
    pid_t pid = fork ();
    int status;
    if (pid == 0) {
      unsigned char sector[512];
      struct tag tag = { 0 };
      struct reader r = { .calls = (unsigned[1]){ 0 } };
      alarm (20);
      pthread_mutex_init (&r.lock, NULL);
      pthread_cond_init (&r.cond, NULL);
      tag.r = &r;
      if (VixDiskLib_ReadAsync (c.h, 0, 1, sector, read_done, &tag) != VIX_ASYNC ||
          VixDiskLib_Wait (c.h) != VIX_OK || r.calls[0] != 1)
        _exit (1);
      _exit (0);
    }
    CHECK (pid > 0 && waitpid (pid, &status, 0) == pid && WIFEXITED (status) &&
               WEXITSTATUS (status) == 0,
           "a ReadAsync in a forked child (status %d)", status);
  }

  snprintf (path, sizeof path, "%s/disk-a.raw", outdir);
  snprintf (path2, sizeof path2, "%s/disk-b.raw", outdir);
  jobs[0] = (struct job){ .password = password, .file = file, .out = path };
  jobs[1] =
      (struct job){ .password = password, .file = file2 ? file2 : file, .out = path2 };
  for (int i = 0; i < 2; i++)
    pthread_create (&t[i], NULL, handle_thread, &jobs[i]);
  for (int i = 0; i < 2; i++) {
    pthread_join (t[i], NULL);
    CHECK (jobs[i].r == 0, "handle %d in its thread", i);
  }

out:
  VixDiskLib_FreeInfo (info);
  close_disconnect (&c);
  VixDiskLib_Exit ();
  free (password);
  if (failures)
    fprintf (stderr, "vddk-driver: %d check(s) failed\n", failures);
  return failures || (c.h == NULL) ? 1 : 0;
}

int
main (int argc, char *argv[])
{
  pid_t pid;
  int status;
  bool only_open;

  if (argc < 3 ||
      (strcmp (argv[2], "open") != 0 && strcmp (argv[2], "dump") != 0 && argc < 4)) {
    fprintf (stderr, "usage: vddk-driver LIBDIR dump|open|conform OUTDIR|map OUTDIR\n");
    return 2;
  }
  setvbuf (stdout, NULL, _IOLBF, 0);
  load_library (argv[1]);
  /* --dump-plugin runs first, in its own nbdkit; then the server forks and InitEx runs
   * in the child (.after_fork): the library must work after both.
   */
  if (dump () == -1)
    return 1;
  if (strcmp (argv[2], "dump") == 0)
    return 0;
  only_open = strcmp (argv[2], "open") == 0;
  fflush (stdout);
  pid = fork ();
  if (pid == -1) {
    perror ("fork");
    return 1;
  }
  if (pid == 0)
    exit (conform (argv[1], only_open ? "" : argv[3], only_open,
                   strcmp (argv[2], "map") == 0));
  if (waitpid (pid, &status, 0) == -1) {
    perror ("waitpid");
    return 1;
  }
  if (!WIFEXITED (status)) {
    fprintf (stderr, "vddk-driver: the child died (status %d)\n", status);
    return 1;
  }
  return WEXITSTATUS (status);
}
