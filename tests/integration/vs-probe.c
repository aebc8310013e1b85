/* SPDX-License-Identifier: Apache-2.0 */
/* ferry: a test driver for the vSphere provider without nbdkit, so that `make check-asan`
 * (where nbdkit cannot load an ASan-built plugin) still runs the SOAP, inventory, task,
 * CBT and datastore code under the sanitizers.
 *
 *   vs-probe SERVER USER PASSWORD-FILE CACERT VM OUT
 *
 * Logs in, finds VM, enables CBT if it is off (ReconfigVM_Task), prints its disks, creates
 * a snapshot, prints each disk's changeId at the snapshot and its allocated areas, copies
 * the first disk as of the snapshot into OUT (allocated areas only, in 1 MiB reads from 4
 * threads), removes the snapshot and logs out.  Exit 0 on success.
 */
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/util.h"
#include "providers/vsphere/vsphere.h"

#define CHUNK (1024 * 1024)

struct copy {
  struct vs_session *s;
  const char *path;
  const extent_vector *areas;
  int fd;
  pthread_mutex_t lock;
  size_t next_area;
  uint64_t next_offset;
  int failed;
};

/* Take the next chunk of an allocated area; false when all are taken. */
static bool
next_chunk (struct copy *c, uint64_t *offset, size_t *len)
{
  bool ok = false;

  pthread_mutex_lock (&c->lock);
  while (c->next_area < c->areas->len) {
    const struct extent *e = &c->areas->ptr[c->next_area];
    if (c->next_offset < e->offset)
      c->next_offset = e->offset;
    if (c->next_offset < e->offset + e->length) {
      *offset = c->next_offset;
      *len =
          e->offset + e->length - *offset < CHUNK ? e->offset + e->length - *offset : CHUNK;
      c->next_offset += *len;
      ok = true;
      break;
    }
    c->next_area++;
  }
  pthread_mutex_unlock (&c->lock);
  return ok;
}

static void *
copy_worker (void *arg)
{
  struct copy *c = arg;
  char *buf = malloc (CHUNK);
  uint64_t offset;
  size_t len;

  while (buf && next_chunk (c, &offset, &len)) {
    if (vs_read (c->s, c->path, buf, len, offset) == -1 ||
        pwrite_full (c->fd, buf, len, offset) == -1) {
      __atomic_store_n (&c->failed, 1, __ATOMIC_RELAXED);
      break;
    }
  }
  free (buf);
  return NULL;
}

int
main (int argc, char *argv[])
{
  struct vs_config config = { .sslverify = true, .connections = 4 };
  struct vs_session *s;
  struct vs_vm vm;
  disk_vector disks = empty_vector;
  extent_vector areas = empty_vector;
  char *snap = NULL, password[256] = "";
  int rc = 1;
  FILE *fp;

  if (argc != 7) {
    fprintf (stderr, "usage: vs-probe SERVER USER PASSWORD-FILE CACERT VM OUT\n");
    return 2;
  }
  if ((fp = fopen (argv[3], "r")) == NULL ||
      fgets (password, sizeof password, fp) == NULL) {
    perror (argv[3]);
    return 1;
  }
  fclose (fp);
  password[strcspn (password, "\n")] = '\0';
  config.server = argv[1];
  config.user = argv[2];
  config.password = password;
  config.cacert = argv[4];

  if ((s = vs_open (&config)) == NULL)
    return 1;
  if (vs_find_vm (s, argv[5], false, NULL, &vm) == -1)
    goto out_session;
  printf ("vm %s name %s uuid %s power %s cbt %d snapshots %zu\n", vm.moref, vm.name,
          vm.uuid, vm.power_state, vm.cbt_enabled, vm.snapshots.len);
  if (!vm.cbt_enabled) {
    if (vs_enable_cbt (s, &vm) == -1)
      goto out_vm;
    vs_vm_free (&vm);
    if (vs_find_vm (s, argv[5], false, NULL, &vm) == -1)
      goto out_session;
    printf ("enabled cbt: %d\n", vm.cbt_enabled);
  }
  for (size_t i = 0; i < vm.disks.len; i++)
    printf ("disk %s capacity %" PRIu64 " file %s\n", vm.disks.ptr[i].key,
            vm.disks.ptr[i].capacity, vm.disks.ptr[i].file_name);

  if (vs_create_snapshot (s, &vm, "vs-probe", "vs-probe test snapshot", &snap) == -1)
    goto out_vm;
  if (vs_snapshot_disks (s, &vm, snap, &disks) == -1)
    goto out_snap;
  for (size_t i = 0; i < disks.len; i++) {
    if (vs_query_changed (s, &vm, snap, &disks.ptr[i], "*", &areas, NULL) == -1)
      goto out_snap;
    uint64_t sum = 0;
    for (size_t e = 0; e < areas.len; e++)
      sum += areas.ptr[e].length;
    printf ("snapshot disk %s changeId %s areas %zu allocated %" PRIu64 "\n",
            disks.ptr[i].key, disks.ptr[i].change_id ? disks.ptr[i].change_id : "-",
            areas.len, sum);
    if (i > 0)
      continue;

    /* Copy disk 0 as of the snapshot. */
    struct copy c = { .s = s, .areas = &areas, .lock = PTHREAD_MUTEX_INITIALIZER };
    pthread_t threads[4];
    c.path = vs_flat_path (&vm, &disks.ptr[0]);
    c.fd = open (argv[6], O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (c.path == NULL || c.fd == -1 || ftruncate (c.fd, disks.ptr[0].capacity) == -1) {
      perror (argv[6]);
      goto out_snap;
    }
    for (int t = 0; t < 4; t++)
      pthread_create (&threads[t], NULL, copy_worker, &c);
    for (int t = 0; t < 4; t++)
      pthread_join (threads[t], NULL);
    close (c.fd);
    free ((char *)c.path);
    if (c.failed)
      goto out_snap;
  }
  rc = 0;

out_snap:
  if (vs_remove_snapshot (s, &vm, snap) == -1)
    rc = 1;
  free (snap);
out_vm:
  extent_vector_reset (&areas);
  disk_vector_free (&disks);
  vs_vm_free (&vm);
out_session:
  vs_close (s);
  return rc;
}
