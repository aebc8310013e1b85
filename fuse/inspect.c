/* SPDX-License-Identifier: Apache-2.0 */
/* ferryfs: inspection.json, produced by libguestfs inspection of the mounted disks.
 *
 * The disks are added read-only with format=raw, by their paths in this mount, so the
 * appliance reads them through ferryfs itself (see the thread model in fs.c).
 *
 * The inspection runs in a child process (ferryfs itself, re-executed with a hidden
 * option) whose output is the JSON document.  The thread that waits for it also watches
 * the shutdown pipe: when ferryfs stops, the child is killed (libguestfs's recovery process
 * then kills qemu), because the appliance's reads of this mount would never be answered
 * once the FUSE loop has stopped.
 *
 * Where KVM is unusable (nested KVM that cannot run standard guests, no /dev/kvm), the
 * default launch fails at once; then, unless the user chose LIBGUESTFS_BACKEND_SETTINGS,
 * the launch is retried with the direct backend and TCG (force_tcg), which is slow but
 * works everywhere.
 *
 * THREAD MODEL: inspect_in_child is called by fs.c's inspection thread, one at a time;
 * inspect_disks runs in the child process and owns its libguestfs handle.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <guestfs.h>
#include <jansson.h>

#include "common/cleanup.h"
#include "common/log.h"

#include "ferryfs.h"

#define ESP_GUID "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"

static void
free_strings (char **strs)
{
  size_t i;

  if (strs == NULL)
    return;
  for (i = 0; strs[i] != NULL; i++)
    free (strs[i]);
  free (strs);
}

/* Takes ownership of S (a string from libguestfs, may be NULL). */
static json_t *
json_string_take (char *s)
{
  json_t *j = s ? json_string (s) : json_null ();

  free (s);
  return j ? j : json_null ();
}

static json_t *
error_json (const char *stage, const char *message)
{
  return json_pack ("{s:{s:s, s:s}}", "error", "stage", stage, "message",
                    message ? message : "unknown error");
}

/* Creates a handle with the disks and launches it; NULL with *ERR set on failure. */
static guestfs_h *
launch (char *const *paths, size_t n, bool force_tcg, char **err)
{
  char *settings[] = { (char *)"force_tcg", NULL };
  guestfs_h *g;
  size_t i;

  *err = NULL;
  g = guestfs_create ();
  if (g == NULL) {
    *err = strdup ("guestfs_create failed");
    return NULL;
  }
  guestfs_set_error_handler (g, NULL, NULL);
  if (force_tcg && (guestfs_set_backend (g, "direct") == -1 ||
                    guestfs_set_backend_settings (g, settings) == -1))
    goto err;
  for (i = 0; i < n; i++) {
    if (guestfs_add_drive_opts (g, paths[i], GUESTFS_ADD_DRIVE_OPTS_FORMAT, "raw",
                                GUESTFS_ADD_DRIVE_OPTS_READONLY, 1, -1) == -1)
      goto err;
  }
  if (guestfs_launch (g) == -1)
    goto err;
  return g;

err:
  *err = strdup (guestfs_last_error (g) ? guestfs_last_error (g) : "unknown error");
  guestfs_close (g);
  return NULL;
}

/* "uefi" when a disk has an EFI system partition, else "bios". */
static const char *
detect_firmware (guestfs_h *g)
{
  char **devices = guestfs_list_devices (g);
  const char *firmware = "bios";
  size_t i, j;

  for (i = 0; devices && devices[i] && strcmp (firmware, "bios") == 0; i++) {
    CLEANUP_FREE char *type = guestfs_part_get_parttype (g, devices[i]);
    struct guestfs_partition_list *parts;

    if (type == NULL || strcmp (type, "gpt") != 0)
      continue;
    parts = guestfs_part_list (g, devices[i]);
    for (j = 0; parts && j < parts->len; j++) {
      CLEANUP_FREE char *guid =
          guestfs_part_get_gpt_type (g, devices[i], parts->val[j].part_num);

      if (guid && strcasecmp (guid, ESP_GUID) == 0)
        firmware = "uefi";
    }
    if (parts)
      guestfs_free_partition_list (parts);
  }
  free_strings (devices);
  return firmware;
}

/* Mounts ROOT's filesystems read-only, shortest mountpoint first. */
static json_t *
mount_root (guestfs_h *g, const char *root)
{
  char **mps = guestfs_inspect_get_mountpoints (g, root);
  json_t *obj = json_object ();
  size_t i, len, pass;

  if (mps == NULL)
    return obj;
  for (len = 0; mps[len] != NULL; len += 2)
    json_object_set_new (obj, mps[len], json_string (mps[len + 1]));
  /* Parents before children: mount in order of mountpoint length. */
  for (pass = 1; pass <= 4096; pass++) {
    bool more = false;

    for (i = 0; i < len; i += 2) {
      size_t l = strlen (mps[i]);

      if (l == pass)
        guestfs_mount_ro (g, mps[i + 1], mps[i]); /* best effort */
      else if (l > pass)
        more = true;
    }
    if (!more)
      break;
  }
  free_strings (mps);
  return obj;
}

static bool
has_module (guestfs_h *g, const char *kver, const char *dir, const char *mod)
{
  CLEANUP_FREE char *pattern = NULL, *builtin = NULL;
  char **found;
  bool r;

  if (asprintf (&pattern, "/lib/modules/%s/kernel/drivers/%s/%s.ko*", kver, dir, mod) == -1)
    return false;
  found = guestfs_glob_expand (g, pattern);
  r = found && found[0];
  free_strings (found);
  if (r)
    return true;
  if (asprintf (&builtin, "/lib/modules/%s/modules.builtin", kver) == -1)
    return false;
  if (guestfs_is_file (g, builtin) == 1) {
    CLEANUP_FREE char *re = NULL;

    if (asprintf (&re, "/%s.ko$", mod) == -1)
      return false;
    found = guestfs_grep_opts (g, re, builtin, GUESTFS_GREP_OPTS_EXTENDED, 1, -1);
    r = found && found[0];
    free_strings (found);
  }
  return r;
}

/* Installed kernels (Linux: /lib/modules/VERSION) and their virtio drivers. */
static json_t *
kernels_json (guestfs_h *g, const char *type, bool *virtio)
{
  json_t *arr = json_array ();
  char **vers;
  size_t i;

  *virtio = false;
  if (strcmp (type, "windows") == 0) {
    CLEANUP_FREE char *p =
        guestfs_case_sensitive_path (g, "/windows/system32/drivers/viostor.sys");

    *virtio = p && guestfs_is_file (g, p) == 1;
    return arr;
  }
  if (guestfs_is_dir (g, "/lib/modules") != 1)
    return arr;
  vers = guestfs_ls (g, "/lib/modules");
  for (i = 0; vers && vers[i]; i++) {
    bool blk = has_module (g, vers[i], "block", "virtio_blk");
    bool scsi = has_module (g, vers[i], "scsi", "virtio_scsi");
    bool net = has_module (g, vers[i], "net", "virtio_net");

    json_array_append_new (arr, json_pack ("{s:s, s:b, s:b, s:b}", "version", vers[i],
                                           "virtio_blk", blk, "virtio_scsi", scsi,
                                           "virtio_net", net));
    if (blk || scsi)
      *virtio = true;
  }
  free_strings (vers);
  return arr;
}

static json_t *
inspect_root (guestfs_h *g, const char *root, const char *firmware)
{
  CLEANUP_FREE char *type = guestfs_inspect_get_type (g, root);
  json_t *os = json_object ();
  json_t *kernels;
  bool virtio;

  json_object_set_new (os, "root", json_string (root));
  json_object_set_new (os, "type", json_string (type ? type : "unknown"));
  json_object_set_new (os, "distro",
                       json_string_take (guestfs_inspect_get_distro (g, root)));
  json_object_set_new (os, "major_version",
                       json_integer (guestfs_inspect_get_major_version (g, root)));
  json_object_set_new (os, "minor_version",
                       json_integer (guestfs_inspect_get_minor_version (g, root)));
  json_object_set_new (os, "product_name",
                       json_string_take (guestfs_inspect_get_product_name (g, root)));
  json_object_set_new (os, "hostname",
                       json_string_take (guestfs_inspect_get_hostname (g, root)));
  json_object_set_new (os, "arch", json_string_take (guestfs_inspect_get_arch (g, root)));
  json_object_set_new (os, "osinfo",
                       json_string_take (guestfs_inspect_get_osinfo (g, root)));
  json_object_set_new (os, "package_format",
                       json_string_take (guestfs_inspect_get_package_format (g, root)));
  json_object_set_new (os, "mountpoints", mount_root (g, root));
  kernels = kernels_json (g, type ? type : "", &virtio);
  json_object_set_new (os, "kernels", kernels);
  json_object_set_new (os, "virtio_drivers", json_boolean (virtio));
  json_object_set_new (os, "firmware", json_string (firmware));
  guestfs_umount_all (g);
  return os;
}

static json_t *
inspect_launched (guestfs_h *g, char *const *paths, size_t n)
{
  json_t *doc = json_object ();
  json_t *oses = json_array ();
  json_t *disks = json_array ();
  json_t *fss = json_object ();
  char **devices = guestfs_list_devices (g);
  char **list, **roots;
  const char *firmware;
  size_t i;

  for (i = 0; i < n; i++)
    json_array_append_new (disks, json_pack ("{s:s, s:s?}", "path", paths[i], "device",
                                             devices ? devices[i] : NULL));
  free_strings (devices);
  list = guestfs_list_filesystems (g);
  for (i = 0; list && list[i]; i += 2)
    json_object_set_new (fss, list[i], json_string (list[i + 1]));
  free_strings (list);

  roots = guestfs_inspect_os (g);
  if (roots == NULL) {
    json_decref (oses);
    json_decref (disks);
    json_decref (fss);
    json_decref (doc);
    return error_json ("inspect", guestfs_last_error (g));
  }
  firmware = detect_firmware (g);
  for (i = 0; roots[i]; i++)
    json_array_append_new (oses, inspect_root (g, roots[i], firmware));
  free_strings (roots);

  json_object_set_new (doc, "disks", disks);
  json_object_set_new (doc, "filesystems", fss);
  json_object_set_new (doc, "operating_systems", oses);
  return doc;
}

char *
inspect_disks (char *const *paths, size_t n)
{
  CLEANUP_FREE char *err = NULL;
  const char *backend = "default";
  struct timespec t0, t1;
  guestfs_h *g;
  json_t *doc;
  char *out;

  clock_gettime (CLOCK_MONOTONIC, &t0);
  g = launch (paths, n, false, &err);
  if (g == NULL && getenv ("LIBGUESTFS_BACKEND_SETTINGS") == NULL) {
    if (ferryfs_verbose)
      log_debug ("inspection: launch failed (%s); retrying with TCG", err);
    free (err);
    backend = "direct (force_tcg)";
    g = launch (paths, n, true, &err);
  }
  if (g == NULL)
    doc = error_json ("launch", err);
  else {
    doc = inspect_launched (g, paths, n);
    if (guestfs_shutdown (g) == -1 && ferryfs_verbose)
      log_debug ("inspection: shutdown: %s", guestfs_last_error (g));
    guestfs_close (g);
  }
  if (doc == NULL)
    return NULL;
  clock_gettime (CLOCK_MONOTONIC, &t1);
  if (json_object_get (doc, "error") != NULL) {
    json_object_set_new (json_object_get (doc, "error"), "backend", json_string (backend));
    json_object_set_new (doc, "status", json_string ("error"));
  } else {
    json_object_set_new (doc, "backend", json_string (backend));
    json_object_set_new (doc, "status", json_string ("done"));
  }
  json_object_set_new (
      doc, "seconds",
      json_real ((double)(t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) / 1e9));
  out = json_dumps (doc, JSON_INDENT (2) | JSON_SORT_KEYS | JSON_REAL_PRECISION (4));
  json_decref (doc);
  if (out != NULL) {
    size_t len = strlen (out);
    char *nl = realloc (out, len + 2);

    if (nl == NULL) {
      free (out);
      return NULL;
    }
    nl[len] = '\n';
    nl[len + 1] = '\0';
    out = nl;
  }
  return out;
}

/* The parent side: runs "ferryfs --internal-inspect PATH..." and collects its output. */
char *
inspect_in_child (char *const *paths, size_t n, int cancel_fd)
{
  CLEANUP_FREE char *why = NULL;
  char *out = NULL, *p;
  size_t len = 0, i;
  int fds[2], status;
  pid_t pid;

  if (pipe2 (fds, O_CLOEXEC) == -1)
    goto fail;
  pid = fork ();
  if (pid == -1) {
    close (fds[0]);
    close (fds[1]);
    goto fail;
  }
  if (pid == 0) {
    char **argv = calloc (n + 3, sizeof *argv);

    prctl (PR_SET_PDEATHSIG, SIGKILL);
    if (argv == NULL || dup2 (fds[1], 1) == -1)
      _exit (1);
    argv[0] = (char *)"ferryfs";
    argv[1] = (char *)INSPECT_OPTION;
    for (i = 0; i < n; i++)
      argv[i + 2] = paths[i];
    execv ("/proc/self/exe", argv);
    _exit (1);
  }
  close (fds[1]);

  for (;;) {
    struct pollfd pfd[2] = { { .fd = fds[0], .events = POLLIN },
                             { .fd = cancel_fd, .events = POLLIN } };
    ssize_t r;

    if (poll (pfd, cancel_fd >= 0 ? 2 : 1, -1) == -1) {
      if (errno == EINTR)
        continue;
      break;
    }
    if (cancel_fd >= 0 && (pfd[1].revents & POLLIN)) {
      kill (pid, SIGKILL);
      why = strdup ("ferryfs is shutting down");
      break;
    }
    p = realloc (out, len + 65536 + 1);
    if (p == NULL)
      break;
    out = p;
    r = read (fds[0], out + len, 65536);
    if (r == -1 && errno == EINTR)
      continue;
    if (r <= 0)
      break;
    len += r;
  }
  close (fds[0]);
  while (waitpid (pid, &status, 0) == -1 && errno == EINTR)
    ;
  if (why == NULL && (!WIFEXITED (status) || WEXITSTATUS (status) != 0 || len == 0) &&
      asprintf (&why, "the inspection process failed (%s %d)",
                WIFEXITED (status) ? "status" : "signal",
                WIFEXITED (status) ? WEXITSTATUS (status) : WTERMSIG (status)) == -1)
    why = NULL;
  if (why == NULL && out != NULL) {
    out[len] = '\0';
    return out;
  }
  free (out);
  {
    json_t *doc = error_json ("inspect", why ? why : "out of memory");
    char *s;

    if (doc != NULL)
      json_object_set_new (doc, "status", json_string ("error"));
    s = doc ? json_dumps (doc, JSON_INDENT (2) | JSON_SORT_KEYS) : NULL;

    json_decref (doc);
    if (s && (p = realloc (s, strlen (s) + 2)) != NULL) {
      strcat (p, "\n");
      return p;
    }
    return s;
  }

fail:
  log_error ("inspection: %m");
  return NULL;
}
