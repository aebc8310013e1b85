/* SPDX-License-Identifier: Apache-2.0 */
/* ferry: converting a VM's targets in place through copy-on-write overlays (convert.h).
 *
 * The steps, each undone on failure in reverse order:
 *   1. per target: WORK/diskI.overlay.qcow2 backed by the target (raw), served writable
 *      by qemu-nbd on a free 127.0.0.1 port (qemu-nbd opens the backing file read-only);
 *   2. WORK/guest.xml names those ports; virt-v2v-in-place converts through them, its
 *      output going to WORK/virt-v2v.log and its progress to the caller;
 *   3. the servers stop; on success the blocks each overlay holds are counted, the
 *      overlays are synced and the commit is decided durably (WORK/commit.json, below);
 *      then each overlay is committed into its target (qemu-img commit), the target
 *      synced and the overlay removed.  On failure the targets were never opened for
 *      writing and the overlays stay for diagnosis.
 *
 * WORK/commit.json ({"disks": [{"overlay", "target", "changedBlocks"}, ...]}) exists from
 * the moment virt-v2v's work is complete and synced until the caller has recorded the
 * result (convert_forget).  A ferry that dies between two disks' commits leaves it behind:
 * the next convert_run then finishes the commits of the overlays still there (committing
 * an overlay twice writes the same bytes) instead of converting a half-committed guest
 * again.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <jansson.h>

#include "common/cleanup.h"
#include "common/log.h"
#include "common/util.h"
#include "children.h"
#include "convert.h"

/* How much of virt-v2v's error output a result keeps. */
#define ERROR_MAX 2048

struct served {
  char overlay[PATH_MAX];
  char pidfile[PATH_MAX];
  int port;
  pid_t pid; /* qemu-nbd (a daemon once forked), 0 when not running */
};

int64_t
convert_count_overlay_blocks (const char *map_json)
{
  json_error_t err;
  json_t *map = json_loads (map_json, 0, &err), *e;
  uint64_t blocks = 0, last = UINT64_MAX;
  size_t i;

  if (!json_is_array (map)) {
    json_decref (map);
    return -1;
  }
  json_array_foreach (map, i, e)
  {
    uint64_t start = json_integer_value (json_object_get (e, "start"));
    uint64_t length = json_integer_value (json_object_get (e, "length"));
    if (json_integer_value (json_object_get (e, "depth")) != 0 || length == 0)
      continue;
    uint64_t first = start / CONVERT_BLOCK_SIZE;
    uint64_t end = (start + length - 1) / CONVERT_BLOCK_SIZE;
    if (last != UINT64_MAX && first <= last) /* a block shared with the last extent */
      first = last + 1;
    if (first <= end)
      blocks += end - first + 1;
    last = end > last || last == UINT64_MAX ? end : last;
  }
  json_decref (map);
  return blocks;
}

static pid_t
read_pidfile (const char *path)
{
  FILE *fp = fopen (path, "re");
  long pid = 0;

  if (fp) {
    if (fscanf (fp, "%ld", &pid) != 1)
      pid = 0;
    fclose (fp);
  }
  return pid;
}

/* A process of an earlier conversion whose ferry died (SIGKILL, a node crash) may still
 * run: the pid in PIDFILE is stopped (with GROUP, its whole process group) when its
 * command line still names MARK, so that a reused pid is never hit.
 */
static void
stop_leftover (const char *pidfile, const char *mark, bool group)
{
  pid_t pid = read_pidfile (pidfile);
  char path[64], cmd[4096];
  ssize_t n = -1;
  int fd;

  if (pid <= 0)
    return;
  snprintf (path, sizeof path, "/proc/%ld/cmdline", (long)pid);
  fd = open (path, O_RDONLY | O_CLOEXEC);
  if (fd >= 0) {
    n = read (fd, cmd, sizeof cmd - 1);
    close (fd);
  }
  if (n > 0) {
    for (ssize_t i = 0; i < n; i++)
      if (cmd[i] == '\0')
        cmd[i] = ' ';
    cmd[n] = '\0';
    if (strstr (cmd, mark)) {
      double deadline = time_monotonic () + 60;
      log_info ("stopping pid %ld left by an earlier conversion: %s", (long)pid, cmd);
      kill (group ? -pid : pid, SIGTERM);
      while (kill (pid, 0) == 0 && time_monotonic () < deadline)
        sleep_ms (20);
      kill (group ? -pid : pid, SIGKILL);
    }
  }
  unlink (pidfile);
}

/* Serve S->overlay with qemu-nbd on a free port (retrying when another process takes
 * the port first).
 */
static int
serve (struct served *s, const char *what)
{
  for (int attempt = 0; attempt < 5; attempt++) {
    char port[16], pidarg[PATH_MAX + 16];
    int p = free_local_port ();
    if (p == -1)
      return -1;
    snprintf (port, sizeof port, "%d", p);
    snprintf (pidarg, sizeof pidarg, "--pid-file=%s", s->pidfile);
    const char *const argv[] = { "qemu-nbd",     "-f",         "qcow2",
                                 "--persistent", "--shared=8", "--bind=127.0.0.1",
                                 "--port",       port,         "--fork",
                                 pidarg,         s->overlay,   NULL };
    CLEANUP_FREE char *err = NULL;
    int status;
    unlink (s->pidfile);
    if (child_run (argv, convert_child_env (), NULL, &err, &status) == -1)
      return -1;
    if (status == 0) {
      s->port = p;
      s->pid = read_pidfile (s->pidfile);
      if (s->pid > 0)
        return 0;
      log_error ("%s: qemu-nbd started but wrote no pid to %s", what, s->pidfile);
      return -1;
    }
    if (err == NULL || strstr (err, "in use") == NULL) {
      log_error ("%s: qemu-nbd %s failed (exit %d): %s", what, s->overlay, status,
                 err ? err : "no message");
      return -1;
    }
  }
  log_error ("%s: qemu-nbd: no free localhost port after 5 attempts", what);
  return -1;
}

/* Stop a served overlay and wait until qemu-nbd has closed it. */
static void
unserve (struct served *s)
{
  if (s->pid <= 0)
    return;
  if (kill (s->pid, SIGTERM) == 0) {
    double deadline = time_monotonic () + 60;
    while (kill (s->pid, 0) == 0 && time_monotonic () < deadline)
      sleep_ms (20);
    if (kill (s->pid, 0) == 0)
      kill (s->pid, SIGKILL);
  }
  s->pid = 0;
  unlink (s->pidfile);
}

/* Keep the last lines of virt-v2v's stderr and turn them into the result's error. */
struct err_tail {
  char *buf;
  size_t len;
};

static void
tail_add (struct err_tail *t, const char *line)
{
  size_t n = strlen (line);
  char *nb;

  if (n == 0)
    return;
  nb = realloc (t->buf, t->len + n + 2);
  if (nb == NULL)
    return;
  t->buf = nb;
  memcpy (t->buf + t->len, line, n);
  t->len += n;
  t->buf[t->len++] = '\n';
  t->buf[t->len] = '\0';
  /* Keep about the last ERROR_MAX bytes, from a line start. */
  if (t->len > 2 * ERROR_MAX) {
    char *cut = strchr (t->buf + t->len - ERROR_MAX, '\n');
    size_t keep = cut ? t->len - (cut + 1 - t->buf) : 0;
    memmove (t->buf, t->buf + t->len - keep, keep + 1);
    t->len = keep;
  }
}

/* virt-v2v's words: from its first "error:" line on, up to the boilerplate about
 * reporting bugs, on one line; else the last lines it printed.
 */
static char *
v2v_error (struct err_tail *t, int status)
{
  const char *from = t->buf ? strstr (t->buf, "error:") : NULL;
  char *msg = NULL, *p, *q;
  size_t len = 0;
  FILE *fp = open_memstream (&msg, &len);

  if (fp == NULL)
    return NULL;
  if (from) {
    while (from > t->buf && from[-1] != '\n')
      from--;
  } else if (t->buf) {
    from = t->buf;
  }
  fprintf (fp, "virt-v2v-in-place failed (exit %d)", status);
  if (from) {
    CLEANUP_FREE char *copy = strdup (from);
    char *cut = copy ? strstr (copy, "If reporting bugs") : NULL;
    if (cut)
      *cut = '\0';
    fputs (": ", fp);
    /* Lines joined by one space. */
    bool space = false;
    for (p = copy; p && *p; p++) {
      if (*p == '\n' || *p == ' ' || *p == '\t')
        space = true;
      else {
        if (space && ftell (fp) > 0)
          fputc (' ', fp);
        space = false;
        fputc (*p, fp);
      }
    }
  }
  fclose (fp);
  /* Trim ": " left by an empty tail and bound the length. */
  q = msg + strlen (msg);
  while (q > msg && (q[-1] == ' ' || q[-1] == ':'))
    *--q = '\0';
  if (strlen (msg) > ERROR_MAX)
    strcpy (msg + ERROR_MAX - 4, "...");
  return msg;
}

/* One line of virt-v2v's stdout (--machine-readable): "N/M" progress, a JSON message
 * object, or a "[ 12.3] Stage" line (the same message for humans).
 */
static void
v2v_stdout_line (struct convert_params *p, const char *line)
{
  unsigned long long done, total;
  int n = 0;

  if (p->progress == NULL)
    return;
  if (sscanf (line, "%llu/%llu%n", &done, &total, &n) == 2 && line[n] == '\0' &&
      total > 0) {
    p->progress (p->opaque, 100.0 * done / total, NULL);
    return;
  }
  if (line[0] == '{') {
    json_t *j = json_loads (line, 0, NULL);
    const char *type = json_string_value (json_object_get (j, "type"));
    const char *msg = json_string_value (json_object_get (j, "message"));
    if (type && msg && strcmp (type, "message") == 0)
      p->progress (p->opaque, -1, msg);
    else if (type && msg && strcmp (type, "warning") == 0) {
      char w[1024];
      snprintf (w, sizeof w, "warning: %s", msg);
      p->progress (p->opaque, -1, w);
    }
    json_decref (j);
  }
}

/* Split BUF[*LEN] into lines, handing each complete one to the stdout or stderr
 * handling; keeps the incomplete rest.
 */
static void
drain_lines (struct convert_params *p, char *buf, size_t *len, bool is_err,
             struct err_tail *tail)
{
  char *start = buf, *nl;

  while ((nl = memchr (start, '\n', *len - (start - buf))) != NULL) {
    *nl = '\0';
    if (nl > start && nl[-1] == '\r')
      nl[-1] = '\0';
    if (is_err)
      tail_add (tail, start);
    else
      v2v_stdout_line (p, start);
    start = nl + 1;
  }
  *len -= start - buf;
  memmove (buf, start, *len);
}

/* Run virt-v2v-in-place on XML, its output into LOG_FD; its exit status, 128+signal, or
 * -1 when it could not run.  *TAIL gets its stderr's last lines.
 */
static int
run_v2v (struct convert_params *p, const char *xml, const char *pidfile, int log_fd,
         struct err_tail *tail)
{
  const char *const argv[] = {
    "virt-v2v-in-place", "--machine-readable", "-i", "libvirtxml", xml, NULL
  };
  int ofd, efd, status = -1, ws;
  char obuf[8192] = "", ebuf[8192] = "";
  size_t olen = 0, elen = 0;
  bool killed = false;
  pid_t pid;

  pid = child_spawn_piped (argv, &ofd, &efd);
  if (pid == -1)
    return -1;
  /* For the next run, should this ferry die without stopping it. */
  char pidtext[32];
  snprintf (pidtext, sizeof pidtext, "%ld\n", (long)pid);
  if (write_file_atomic (pidfile, pidtext, strlen (pidtext)) == -1)
    log_debug ("%s: %m", pidfile);
  struct pollfd fds[2] = { { ofd, POLLIN, 0 }, { efd, POLLIN, 0 } };
  while (fds[0].fd >= 0 || fds[1].fd >= 0) {
    if (!killed && p->cancel && *p->cancel) {
      log_info ("stopping virt-v2v-in-place (pid %ld)", (long)pid);
      kill (-pid, SIGTERM);
      killed = true;
    }
    if (poll (fds, 2, 1000) == -1) {
      if (errno == EINTR)
        continue;
      break;
    }
    for (int i = 0; i < 2; i++) {
      char *buf = i ? ebuf : obuf;
      size_t *len = i ? &elen : &olen;
      ssize_t n;
      if (fds[i].fd < 0 || !(fds[i].revents & (POLLIN | POLLHUP | POLLERR)))
        continue;
      n = read (fds[i].fd, buf + *len, sizeof obuf - 1 - *len);
      if (n <= 0) {
        if (n == -1 && errno == EINTR)
          continue;
        if (*len) { /* a last line without newline */
          buf[(*len)++] = '\n';
          drain_lines (p, buf, len, i == 1, tail);
        }
        close (fds[i].fd);
        fds[i].fd = -1;
        continue;
      }
      if (write (log_fd, buf + *len, n) != n)
        log_debug ("virt-v2v.log: short write: %m");
      *len += n;
      drain_lines (p, buf, len, i == 1, tail);
      if (*len == sizeof obuf - 1) { /* a line longer than the buffer: pass it on */
        buf[(*len)++] = '\n';
        drain_lines (p, buf, len, i == 1, tail);
      }
    }
  }
  while (waitpid (pid, &ws, 0) == -1)
    if (errno != EINTR)
      return -1;
  status = WIFEXITED (ws) ? WEXITSTATUS (ws) : 128 + WTERMSIG (ws);
  /* Whatever virt-v2v left in its process group (its qemu appliance) goes too. */
  kill (-pid, SIGKILL);
  unlink (pidfile);
  return status;
}

/* fsync PATH (a file or a directory); -1 reported. */
static int
sync_path (const char *what, const char *path)
{
  int fd = open (path, O_RDONLY | O_CLOEXEC);

  if (fd == -1 || fsync (fd) == -1) {
    log_error ("%s: sync %s: %m", what, path);
    if (fd != -1)
      close (fd);
    return -1;
  }
  close (fd);
  return 0;
}

static char *
commit_path (const char *work_dir)
{
  char *path;

  if (asprintf (&path, "%s/commit.json", work_dir) == -1)
    return NULL;
  return path;
}

void
convert_forget (const char *work_dir)
{
  CLEANUP_FREE char *path = commit_path (work_dir);

  if (path && unlink (path) == 0)
    sync_path ("commit.json", work_dir);
}

/* Commit the overlays INTENT (commit.json) names into their targets, those that are
 * still there: each committed, its target synced, then the overlay removed (and the
 * directory synced), so that an overlay that is gone is one that is in its target.
 */
static int
commit_all (struct convert_params *p, const char *name, json_t *intent)
{
  json_t *disks = json_object_get (intent, "disks");

  if (json_array_size (disks) != p->nr_disks) {
    log_error ("%s: %s/commit.json names %zu disks, the VM has %zu", name, p->work_dir,
               json_array_size (disks), p->nr_disks);
    return -1;
  }
  for (size_t i = 0; i < p->nr_disks; i++) {
    json_t *d = json_array_get (disks, i);
    const char *overlay = json_string_value (json_object_get (d, "overlay"));
    const char *target = json_string_value (json_object_get (d, "target"));
    char what[128], real[PATH_MAX];
    snprintf (what, sizeof what, "%s disk %zu", name, i);
    if (overlay == NULL || target == NULL || realpath (p->disks[i].target, real) == NULL ||
        strcmp (real, target) != 0) {
      log_error ("%s: %s/commit.json is for the target %s, not %s", what, p->work_dir,
                 target ? target : "(none)", p->disks[i].target);
      return -1;
    }
    p->disks[i].changed_blocks = json_integer_value (json_object_get (d, "changedBlocks"));
    if (access (overlay, F_OK) == -1) /* committed before */
      continue;
    const char *const commit[] = { "qemu-img", "commit", "-q",    "-d",
                                   "-f",       "qcow2",  overlay, NULL };
    if (child_check (what, commit, NULL) == -1 || sync_path (what, target) == -1)
      return -1;
    if (unlink (overlay) == -1 || sync_path (what, p->work_dir) == -1) {
      log_error ("%s: %s: %m", what, overlay);
      return -1;
    }
    test_stop ("commit", i + 1);
  }
  return 0;
}

int
convert_run (struct convert_params *p, char **error)
{
  const char *name = json_string_value (json_object_get (p->description, "name"));
  struct served *sv = calloc (p->nr_disks, sizeof *sv);
  int *ports = calloc (p->nr_disks, sizeof *ports);
  CLEANUP_FREE char *xml = NULL, *xml_path = NULL, *log_path = NULL, *v2v_pid = NULL;
  CLEANUP_FREE char *commit_file = NULL, *text = NULL;
  json_t *intent = NULL;
  struct err_tail tail = { NULL, 0 };
  int r = -1, log_fd = -1, status;
  size_t i;

  *error = NULL;
  if (name == NULL)
    name = "VM";
  if (sv == NULL || ports == NULL ||
      asprintf (&xml_path, "%s/guest.xml", p->work_dir) == -1 ||
      asprintf (&log_path, "%s/virt-v2v.log", p->work_dir) == -1 ||
      asprintf (&v2v_pid, "%s/virt-v2v.pid", p->work_dir) == -1) {
    log_error ("%s: conversion: out of memory", name);
    goto out;
  }
  convert_child_env (); /* the KVM probe, before any server runs */
  stop_leftover (v2v_pid, xml_path, true);
  for (i = 0; i < p->nr_disks; i++) {
    snprintf (sv[i].overlay, sizeof sv[i].overlay, "%s/disk%zu.overlay.qcow2", p->work_dir,
              i);
    snprintf (sv[i].pidfile, sizeof sv[i].pidfile, "%s/disk%zu.qemu-nbd.pid", p->work_dir,
              i);
    stop_leftover (sv[i].pidfile, sv[i].overlay, false);
  }

  /* An earlier run decided the commit and died before it had finished. */
  commit_file = commit_path (p->work_dir);
  intent = commit_file ? json_load_file (commit_file, 0, NULL) : NULL;
  if (intent) {
    log_info ("%s: virt-v2v completed in an earlier run; committing what it left in %s",
              name, commit_file);
    r = commit_all (p, name, intent);
    goto out;
  }
  if (commit_file && access (commit_file, F_OK) == 0) {
    log_error ("%s: %s is unreadable: remove it only after checking the targets", name,
               commit_file);
    goto out;
  }

  /* 1. Overlays, served. */
  for (i = 0; i < p->nr_disks; i++) {
    struct served *s = &sv[i];
    char what[128], target[PATH_MAX];
    char size[32];
    snprintf (what, sizeof what, "%s disk %zu", name, i);
    if (realpath (p->disks[i].target, target) == NULL) {
      log_error ("%s: target %s: %m", what, p->disks[i].target);
      goto stop;
    }
    unlink (s->overlay); /* one kept from a failed conversion */
    /* The source disk's size: a block device may be larger. */
    snprintf (size, sizeof size, "%" PRIu64, p->disks[i].size);
    const char *const create[] = { "qemu-img", "create", "-q",  "-f",       "qcow2", "-b",
                                   target,     "-F",     "raw", s->overlay, size,    NULL };
    if (child_check (what, create, NULL) == -1 || serve (s, what) == -1)
      goto stop;
    ports[i] = s->port;
  }

  /* 2. virt-v2v-in-place. */
  xml = convert_libvirt_xml (p->description, ports, p->nr_disks);
  if (xml == NULL)
    goto stop;
  if (write_file_atomic (xml_path, xml, strlen (xml)) == -1) {
    log_error ("%s: %s: %m", name, xml_path);
    goto stop;
  }
  log_fd = open (log_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (log_fd == -1) {
    log_error ("%s: %s: %m", name, log_path);
    goto stop;
  }
  log_info ("%s: converting the guest with virt-v2v-in-place%s (log %s)", name,
            convert_uses_tcg () ? " under TCG" : "", log_path);
  status = run_v2v (p, xml_path, v2v_pid, log_fd, &tail);
  if (status != 0) {
    *error = status == -1 ? NULL : v2v_error (&tail, status);
    if (p->cancel && *p->cancel)
      free (*error), *error = strdup ("cancelled");
    log_error ("%s: %s; the targets are unchanged, the overlays kept in %s", name,
               *error ? *error : "virt-v2v-in-place could not run", p->work_dir);
    goto stop;
  }

  /* 3. Stop serving, count, commit. */
  for (i = 0; i < p->nr_disks; i++)
    unserve (&sv[i]);
  for (i = 0; i < p->nr_disks; i++) {
    char what[128];
    CLEANUP_FREE char *map = NULL;
    snprintf (what, sizeof what, "%s disk %zu", name, i);
    const char *const mapv[] = { "qemu-img",    "map", "--output=json", "-f", "qcow2",
                                 sv[i].overlay, NULL };
    if (child_check (what, mapv, &map) == -1)
      goto stop;
    int64_t blocks = convert_count_overlay_blocks (map);
    if (blocks < 0) {
      log_error ("%s: qemu-img map %s: unexpected output", what, sv[i].overlay);
      goto stop;
    }
    p->disks[i].changed_blocks = blocks;
  }
  /* The overlays are complete: synced, they decide the commit. */
  intent = json_pack ("{s:[]}", "disks");
  for (i = 0; i < p->nr_disks; i++) {
    char target[PATH_MAX];
    if (sync_path (name, sv[i].overlay) == -1 ||
        realpath (p->disks[i].target, target) == NULL)
      goto stop;
    json_array_append_new (json_object_get (intent, "disks"),
                           json_pack ("{s:s, s:s, s:I}", "overlay", sv[i].overlay, "target",
                                      target, "changedBlocks",
                                      (json_int_t)p->disks[i].changed_blocks));
  }
  text = json_dumps (intent, JSON_INDENT (2));
  if (text == NULL || commit_file == NULL ||
      write_file_atomic (commit_file, text, strlen (text)) == -1) {
    log_error ("%s: %s: %m", name, commit_file ? commit_file : p->work_dir);
    goto stop;
  }
  if (commit_all (p, name, intent) == -1) {
    log_error ("%s: the commit stopped halfway; ferry convert (or migrate) finishes it "
               "from %s",
               name, commit_file);
    goto stop;
  }
  r = 0;

stop:
  for (i = 0; sv && i < p->nr_disks; i++)
    unserve (&sv[i]);
out:
  json_decref (intent);
  if (log_fd >= 0)
    close (log_fd);
  free (tail.buf);
  free (sv);
  free (ports);
  return r;
}
