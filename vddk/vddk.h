/* SPDX-License-Identifier: Apache-2.0 */
/* ferry: internals of libvixDiskLib.so.8, the VDDK drop-in (not exported).
 *
 * A connection (ConnectEx) holds what the consumer gave, a vSphere session and the VM it
 * named; a handle (Open) holds a provider source for the VM at the requested point in
 * time and the index of the disk named by the path.
 */
#ifndef FERRY_VDDK_H
#define FERRY_VDDK_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "providers/source.h"
#include "providers/vsphere/vsphere.h"
#include "vixdisklib.h"

#define VDDK_HIDDEN __attribute__ ((visibility ("hidden")))

/* Settings from InitEx's config file ("key = value" lines, VMware's syntax). */
struct vddk_settings {
  unsigned connections; /* ferry.connections: range reads in flight per disk [4] */
  unsigned workers;     /* ferry.workers: threads serving ReadAsync [8] */
  char *cacert;         /* ferry.cacert: trust these CAs when no thumbprint is given */
  bool sslverify;       /* ferry.sslverify = "false": labs only [true] */
};
VDDK_HIDDEN extern struct vddk_settings vddk_settings;

struct vddk_conn {
  char *server; /* HOST[:PORT] */
  char *user;
  char *password;
  char *moref;
  char *snapshot; /* snapshot_ref, or NULL */
  char *thumbprint;
  bool read_only;
  struct vs_session *session; /* the one login; its cookie serves every Open */
  struct vs_vm vm;            /* its dc_path locates the descriptors */
};

struct vddk_handle {
  struct vddk_conn *conn;
  struct source *src;
  size_t disk;
  struct readahead *ra; /* coalesces sequential ReadAsync into 1 MiB range reads */
  char *path;           /* "[ds] dir/name.vmdk" as opened */
  uint64_t capacity;    /* bytes */
  char *uuid;           /* ddb.uuid from the descriptor, or the backing's */
  int adapter;          /* enum VixDiskLibAdapterType */
  pthread_mutex_t lock;
  pthread_cond_t idle;
  unsigned outstanding; /* ReadAsync requests whose callback has not returned */
};

/* errors.c: log callbacks and error texts.  vddk_fail records MESSAGE (or, when FMT is
 * NULL, the last error ferry's libraries reported on this thread) and returns CODE with
 * the message's id in its high bits; GetErrorText finds it again from any thread.
 */
VDDK_HIDDEN void vddk_log_setup (VixDiskLibGenericLogFunc *log,
                                 VixDiskLibGenericLogFunc *warn);
VDDK_HIDDEN void vddk_log_reset (void);
VDDK_HIDDEN VixError vddk_fail (VixError code, const char *fmt, ...)
    __attribute__ ((format (printf, 2, 3)));
VDDK_HIDDEN void vddk_debug (const char *fmt, ...) __attribute__ ((format (printf, 1, 2)));
/* Forget what an earlier failure on this thread left behind. */
VDDK_HIDDEN void vddk_clear_pending (void);
/* The pending message of this thread contains S. */
VDDK_HIDDEN bool vddk_pending_has (const char *s);

/* descriptor.c: may ferry read the disk behind DESCRIPTOR (its text) as one raw file
 * "<name>-flat.vmdk" of CAPACITY bytes?  0 yes (with *UUID and *ADAPTER filled when the
 * descriptor gives them), -1 no with a malloc'd *WHY saying what the disk is.  Pure.
 */
VDDK_HIDDEN int vddk_check_descriptor (const char *descriptor, const char *vmdk_path,
                                       uint64_t capacity, char **why, char **uuid,
                                       int *adapter);

/* io.c: forget the ReadAsync workers in a forked child (once, from InitEx); stop them
 * (Exit).
 */
VDDK_HIDDEN void vddk_io_init (void);
VDDK_HIDDEN void vddk_io_stop (void);

#endif /* FERRY_VDDK_H */
