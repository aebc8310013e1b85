/* SPDX-License-Identifier: Apache-2.0 */
/* ferryfs: shared declarations of the FUSE layer (fs.c), the NBD pool (nbd.c), the
 * libguestfs inspection (inspect.c) and main (ferryfs.c).
 */
#ifndef FERRY_FERRYFS_H
#define FERRY_FERRYFS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* nbd.c: a pool of libnbd handles for one export.  See nbd.c for the thread model. */
struct nbd_pool;

struct nbd_pool *pool_open (const char *uri, unsigned max_conns, int timeout);
void pool_close (struct nbd_pool *pool);
int64_t pool_size (const struct nbd_pool *pool);
unsigned pool_conns (const struct nbd_pool *pool);
const char *pool_description (const struct nbd_pool *pool);
const char *pool_export_name (const struct nbd_pool *pool);

/* Returns 0 or -EIO, whatever went wrong (an error answer, no answer within the timeout,
 * a lost connection).
 */
int pool_pread (struct nbd_pool *pool, void *buf, size_t count, uint64_t offset);

/* SEEK_DATA / SEEK_HOLE from base:allocation; returns the offset, -ENXIO past the end, or
 * -EIO.
 */
off_t pool_seek (struct nbd_pool *pool, off_t offset, int whence);

/* One export as listed by the server: name and description (either may be "").  */
struct export_info {
  char *name;
  char *description;
};

/* Lists the exports of the server at URI (whose export name is ignored); returns the
 * number of exports, or 0 when the server cannot list (it answered the option with an
 * error, or does not negotiate options): use the default export.  Returns -1 after an
 * error was reported: the connection broke or timed out, or the server cannot list and
 * REQUIRED (a server known to list its exports, such as ferry's plugin).
 */
int ferryfs_list_exports (const char *uri, int timeout, bool required,
                          struct export_info **exports);
void free_exports (struct export_info *exports, size_t n);

/* nbd+unix:///EXPORT?socket=SOCKET, percent-encoded; NULL when out of memory. */
char *ferryfs_unix_uri (const char *socket, const char *export_name);

/* The mounted VM: one disk per export plus the two JSON files. */
struct disk {
  char *file;        /* safe file name under disks/ */
  char *uri;         /* the NBD URI of the export */
  char *export_name; /* as the server names it ("" = default export) */
  struct nbd_pool *pool;
};

struct vm {
  struct disk *disks;
  size_t nr_disks;
  char *vm_json; /* the contents of vm.json */
  size_t vm_json_len;
  char *mountpoint; /* absolute, for inspection to read disks/ through the mount */
  int timeout;
};

/* fs.c */
struct fuse_operations;
extern const struct fuse_operations ferryfs_operations;
extern struct vm *ferryfs_vm;

/* Waits for an inspection that runs (after ferryfs_shutdown_fd was made readable, which
 * cancels it); called once the FUSE loop has ended.
 */
void fs_wait_inspection (void);

/* inspect.c: inspects the disk images at PATHS (raw, read-only) with libguestfs and returns
 * a malloc'd JSON document; failures are reported inside it as {"error": {...}}.  Never
 * returns NULL except when out of memory.
 */
char *inspect_disks (char *const *paths, size_t n);

/* The same in a child process ("ferryfs " INSPECT_OPTION " PATH..."), killed when
 * CANCEL_FD becomes readable (shutdown); the result is then an error document.
 */
#define INSPECT_OPTION "--internal-inspect"
char *inspect_in_child (char *const *paths, size_t n, int cancel_fd);

/* vmjson.c: names the disk files and builds vm->vm_json, from the plugin's vm.json
 * (PLUGIN_JSON, a path) when there is one, else from NBD (URIS are shown as the source).
 */
int vm_describe (struct vm *vm, const char *plugin_json, char *const *uris, size_t nr_uris);

/* ferryfs.c */
extern int ferryfs_verbose;
extern int ferryfs_shutdown_fd; /* readable once ferryfs is stopping */

#endif /* FERRY_FERRYFS_H */
