/* SPDX-License-Identifier: Apache-2.0 */
/* ferryfs: mount a VM's disks read-only (main, options, the nbdkit child, the mount loop).
 *
 *   ferryfs [OPTIONS] MOUNTPOINT -- nbdkit ferry provider=... vm=...
 *   ferryfs [OPTIONS] MOUNTPOINT NBD-URI...
 *
 * Start-up: check the mountpoint; in command mode start nbdkit on a private unix socket
 * (--exit-with-parent, so it never outlives us) and wait for its pidfile; list the exports;
 * open one NBD pool per export; build vm.json; mount; serve with the multi-threaded loop.
 * Unless -f, the process detaches once mounted and the parent exits 0 (or 1 when
 * anything before the mount failed, after the error was printed).
 *
 * nbdkit is never killed before it serves: its plugin creates a snapshot in get_ready,
 * before nbdkit installs its signal handlers, so a SIGTERM then would end it without its
 * cleanup and leave the snapshot.  ferryfs waits while nbdkit is starting (telling the
 * user every NOTE_INTERVAL seconds); past --start-timeout, or after SIGTERM/SIGINT/SIGHUP,
 * it gives up, which means waiting until nbdkit serves (then stopping it in order) or
 * exits by itself.
 *
 * The private directory (socket, pidfile, the plugin's vm.json) is removed at exit; a
 * janitor child (a fork of ferryfs that only waits) removes it when ferryfs itself was
 * killed: it sees its pipe from ferryfs close, waits for nbdkit to exit, and cleans up.
 *
 * Shut-down (SIGTERM, SIGINT, fusermount3 -u): leave the loop, stop the inspection,
 * unmount, close the NBD connections, then stop nbdkit with SIGTERM and wait for it, so
 * the plugin removes any snapshot it created.
 *
 * THREAD MODEL: the globals here are set by the main thread before the FUSE loop starts
 * and only read afterwards; the loop's worker threads run fs.c.  nbdkit is started from
 * the main thread, which lives until the end, because --exit-with-parent follows the
 * thread that forked it.
 */
#define FUSE_USE_VERSION 312

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <poll.h>
#include <sys/pidfd.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <fuse.h>
#include <fuse_lowlevel.h>

#include "common/cleanup.h"
#include "common/log.h"
#include "common/util.h"

#include "ferryfs.h"

#define PROGRAM "ferryfs"
#define NOTE_INTERVAL 30 /* seconds between "still waiting for nbdkit" notes */

int ferryfs_verbose;
int ferryfs_shutdown_fd = -1;
static int shutdown_pipe[2] = { -1, -1 };
static struct fuse_session *signal_session;
static volatile sig_atomic_t stop_requested;

static unsigned connections = 4;
static int timeout = 30;
static int start_timeout = 1800;
static bool foreground;
static const char *pidfile;
static char *fuse_opts; /* comma-separated -o options */

/* The nbdkit child in command mode, and the janitor of its private directory. */
static pid_t nbdkit_pid = -1;
static char *private_dir;
static pid_t janitor_pid = -1;
static int janitor_fd = -1; /* ferryfs's end of the janitor's pipe */
static const char *const private_files[] = { "nbd.sock", "nbdkit.pid", "vm.json" };

static void
print_error (const char *msg)
{
  fprintf (stderr, PROGRAM ": %s\n", msg);
}

static void
print_debug (const char *msg)
{
  fprintf (stderr, PROGRAM ": debug: %s\n", msg);
}

static void note (const char *fs, ...) __attribute__ ((format (printf, 1, 2)));

/* Progress the user should see (not an error). */
static void
note (const char *fs, ...)
{
  va_list args;

  va_start (args, fs);
  fprintf (stderr, PROGRAM ": ");
  vfprintf (stderr, fs, args);
  fprintf (stderr, "\n");
  va_end (args);
}

static void usage (int status) __attribute__ ((noreturn));
static void request_shutdown (void);

static void
usage (int status)
{
  if (status != EXIT_SUCCESS) {
    fprintf (stderr, "Try '" PROGRAM " --help' for more information.\n");
    exit (status);
  }
  printf (
      "Usage:\n"
      "  ferryfs [OPTIONS] MOUNTPOINT -- nbdkit [NBDKIT-ARGS] PLUGIN [KEY=VALUE...]\n"
      "  ferryfs [OPTIONS] MOUNTPOINT NBD-URI...\n"
      "\n"
      "Mount the disks of a VM read-only, as they are now, without copying them:\n"
      "MOUNTPOINT/disks/NAME (one file per disk), MOUNTPOINT/vm.json (the VM's\n"
      "metadata) and MOUNTPOINT/inspection.json (libguestfs inspection, on first read).\n"
      "\n"
      "Options:\n"
      "  -c, --connections=N    NBD connections per disk when the server allows\n"
      "                         multi-conn (default 4)\n"
      "  -t, --timeout=SECONDS  a read fails with EIO when the server has not\n"
      "                         answered within SECONDS (default 30)\n"
      "                         (the ferry plugin's own: retry-budget=,\n"
      "                         stall-timeout=, ... see nbdkit-ferry-plugin(1))\n"
      "  -s, --start-timeout=SECONDS\n"
      "                         give up when nbdkit does not serve within SECONDS\n"
      "                         (default 1800); nbdkit is then stopped once it\n"
      "                         serves, so that it removes its snapshot\n"
      "  -f, --foreground       do not detach; stay until unmounted\n"
      "  -P, --pidfile=FILE     write ferryfs's pid to FILE once mounted\n"
      "  -o, --option=OPT[,..]  extra FUSE mount options (e.g. allow_other)\n"
      "  -v, --verbose          debug messages\n"
      "  -h, --help             this help\n"
      "  -V, --version          print the version\n"
      "\n"
      "Examples:\n"
      "  # A vSphere VM (the plugin serves one export per disk):\n"
      "  ferryfs /mnt/web01 -- nbdkit ferry provider=vsphere server=vcenter.example \\\n"
      "        user=migrator@vsphere.local password=+/run/secrets/vc vm=web01 \\\n"
      "        snapshot=create\n"
      "  guestfish --ro -a /mnt/web01/disks/hard-disk-1 -i\n"
      "  jq .operating_systems /mnt/web01/inspection.json\n"
      "  fusermount3 -u /mnt/web01\n"
      "\n"
      "  # Any NBD server (qemu-nbd, nbdkit, nbdkit-vddk-plugin):\n"
      "  ferryfs /mnt/disk 'nbd+unix:///?socket=/tmp/sock' nbd://host:10809/disk2\n"
      "\n"
      "Exit status: 0 mounted (and, with -f, unmounted cleanly), 1 failure, 2 usage.\n");
  exit (EXIT_SUCCESS);
}

/* MOUNTPOINT must be an existing directory that nothing is mounted on. */
static char *
check_mountpoint (const char *arg)
{
  char *mp = realpath (arg, NULL);
  CLEANUP_FREE char *parent = NULL;
  struct stat st, pst;

  if (mp == NULL) {
    if (errno == ENOTCONN)
      log_error ("%s: a dead FUSE mount is in the way; unmount it with 'fusermount3 -u "
                 "%s'",
                 arg, arg);
    else
      log_error ("mountpoint %s: %m", arg);
    return NULL;
  }
  if (stat (mp, &st) == -1) {
    log_error ("mountpoint %s: %m", mp);
    goto err;
  }
  if (!S_ISDIR (st.st_mode)) {
    log_error ("mountpoint %s: not a directory", mp);
    goto err;
  }
  if (asprintf (&parent, "%s/..", mp) == -1 || stat (parent, &pst) == -1) {
    log_error ("mountpoint %s: %m", mp);
    goto err;
  }
  if (st.st_dev != pst.st_dev || st.st_ino == pst.st_ino) {
    log_error ("mountpoint %s is in use (something is mounted there); unmount it first",
               mp);
    goto err;
  }
  if (access (mp, W_OK) == -1 && getuid () != 0) {
    log_error ("mountpoint %s: %m", mp);
    goto err;
  }
  return mp;

err:
  free (mp);
  return NULL;
}

static bool
is_ferry_plugin (const char *arg)
{
  const char *base = strrchr (arg, '/');

  base = base ? base + 1 : arg;
  return strcmp (arg, "ferry") == 0 || strcmp (base, "nbdkit-ferry-plugin.so") == 0;
}

/* Removes the private directory and what nbdkit and ferryfs put in it. */
static void
remove_private_dir (const char *dir)
{
  size_t i;

  for (i = 0; i < sizeof private_files / sizeof private_files[0]; i++) {
    CLEANUP_FREE char *path = NULL;

    if (asprintf (&path, "%s/%s", dir, private_files[i]) != -1)
      unlink (path);
  }
  rmdir (dir);
}

/* The janitor: reads nbdkit's pid from FD, then waits for FD to close (ferryfs exited,
 * however it ended) and for nbdkit to exit, and removes the private directory.  It
 * ignores the signals a terminal sends, so that a ^C does not end it before nbdkit.
 */
static void __attribute__ ((noreturn)) janitor (int fd)
{
  int pidfd = -1;
  pid_t pid;
  ssize_t r;

  signal (SIGINT, SIG_IGN);
  signal (SIGHUP, SIG_IGN);
  signal (SIGTERM, SIG_IGN);
  prctl (PR_SET_NAME, "ferryfs-janitor");
  for (;;) {
    r = read (fd, &pid, sizeof pid);
    if (r == -1 && errno == EINTR)
      continue;
    if (r != sizeof pid)
      break;
    if (pidfd == -1)
      pidfd = pidfd_open (pid, 0); /* fails only when nbdkit is already gone */
  }
  if (pidfd >= 0) {
    struct pollfd pfd = { .fd = pidfd, .events = POLLIN };

    while (poll (&pfd, 1, -1) == -1 && errno == EINTR)
      ;
  }
  remove_private_dir (private_dir);
  _exit (EXIT_SUCCESS);
}

/* Forks the janitor of private_dir.  Returns 0, or -1 after reporting an error. */
static int
start_janitor (void)
{
  int fds[2], i;

  if (pipe2 (fds, O_CLOEXEC) == -1) {
    log_error ("pipe: %m");
    return -1;
  }
  janitor_pid = fork ();
  if (janitor_pid == -1) {
    log_error ("fork: %m");
    close (fds[0]);
    close (fds[1]);
    return -1;
  }
  if (janitor_pid == 0) {
    /* Hold nothing of ferryfs's: above all not the pipe the detaching parent reads. */
    close (fds[1]);
    if (fds[0] > 3)
      close_range (3, fds[0] - 1, 0);
    close_range (fds[0] + 1, ~0U, 0);
    i = open ("/dev/null", O_RDWR);
    if (i >= 0) {
      dup2 (i, 0);
      dup2 (i, 1);
      dup2 (i, 2);
      close (i);
    }
    setpgid (0, 0);
    janitor (fds[0]);
  }
  close (fds[0]);
  janitor_fd = fds[1];
  return 0;
}

/* Waits until nbdkit writes PID_PATH (it serves: its plugin is ready and its signal
 * handlers are installed) or exits.  Returns 0 when it serves, -1 when it exited or
 * ferryfs gave up (nbdkit then serves and stop_nbdkit stops it in order).
 */
static int
wait_for_nbdkit (const char *name, const char *pid_path)
{
  double start = time_monotonic (), next_note = start + NOTE_INTERVAL, now;
  bool giving_up = false;
  int status;

  for (;;) {
    struct stat st;

    if (stat (pid_path, &st) == 0 && st.st_size > 0)
      return giving_up ? -1 : 0;
    if (waitpid (nbdkit_pid, &status, WNOHANG) == nbdkit_pid) {
      nbdkit_pid = -1;
      if (!giving_up)
        log_error ("%s exited (%s %d) before serving; see its messages above", name,
                   WIFEXITED (status) ? "status" : "signal",
                   WIFEXITED (status) ? WEXITSTATUS (status) : WTERMSIG (status));
      return -1;
    }
    now = time_monotonic ();
    if (!giving_up && (stop_requested || now - start >= start_timeout)) {
      giving_up = true;
      if (stop_requested)
        log_error ("interrupted while %s was starting", name);
      else
        log_error ("%s did not start serving within %d s (--start-timeout)", name,
                   start_timeout);
      log_error ("waiting for %s (pid %d) to serve or to exit before stopping it, so "
                 "that it removes what it created (such as a snapshot); 'kill -9 %d' "
                 "abandons it and leaves that behind",
                 name, (int)nbdkit_pid, (int)nbdkit_pid);
      next_note = now + NOTE_INTERVAL;
    } else if (now >= next_note) {
      note ("%s %s (pid %d) for %.0f s; it may be waiting for a slow server (creating a "
            "snapshot)",
            giving_up ? "still waiting for" : "waiting for", name, (int)nbdkit_pid,
            now - start);
      next_note = now + NOTE_INTERVAL;
    }
    sleep_ms (20);
  }
}

/* Starts CMD (nbdkit ...) on a private socket and waits until it serves.  Returns the
 * socket path, and in *VM_JSON the plugin's vm.json path when the plugin is ferry's.
 */
static char *
start_nbdkit (char **cmd, int n, char **vm_json, bool *ferry)
{
  char tmpl[] = "/tmp/ferryfs.XXXXXX";
  const char *tmp = getenv ("TMPDIR");
  char *sock = NULL, *pid_path = NULL, *json_path = NULL;
  char **argv;
  int i, j = 0;

  *vm_json = NULL;
  *ferry = false;
  if (tmp && *tmp && asprintf (&private_dir, "%s/ferryfs.XXXXXX", tmp) != -1)
    private_dir = mkdtemp (private_dir);
  else
    private_dir = strdup (mkdtemp (tmpl) ? tmpl : "");
  if (private_dir == NULL || private_dir[0] == '\0') {
    log_error ("private directory: %m");
    return NULL;
  }
  if (start_janitor () == -1)
    return NULL;
  if (asprintf (&sock, "%s/%s", private_dir, private_files[0]) == -1 ||
      asprintf (&pid_path, "%s/%s", private_dir, private_files[1]) == -1 ||
      asprintf (&json_path, "%s/%s", private_dir, private_files[2]) == -1)
    goto oom;

  for (i = 1; i < n; i++)
    *ferry |= is_ferry_plugin (cmd[i]);
  argv = calloc (n + 10, sizeof *argv);
  if (argv == NULL)
    goto oom;
  argv[j++] = cmd[0];
  argv[j++] = (char *)"-U";
  argv[j++] = sock;
  argv[j++] = (char *)"-P";
  argv[j++] = pid_path;
  argv[j++] = (char *)"--exit-with-parent";
  argv[j++] = (char *)"-f";
  for (i = 1; i < n; i++)
    argv[j++] = cmd[i];
  CLEANUP_FREE char *vm_json_arg = NULL;
  if (*ferry) {
    if (asprintf (&vm_json_arg, "vm-json=%s", json_path) == -1)
      goto oom;
    argv[j++] = vm_json_arg;
  }
  argv[j] = NULL;

  nbdkit_pid = fork ();
  if (nbdkit_pid == -1) {
    log_error ("fork: %m");
    free (argv);
    goto err;
  }
  if (nbdkit_pid == 0) {
    setpgid (0, 0); /* a ^C at the terminal goes to ferryfs, which stops nbdkit in order */
    execvp (argv[0], argv);
    fprintf (stderr, PROGRAM ": %s: %m\n", argv[0]);
    _exit (127);
  }
  free (argv);
  if (write (janitor_fd, &nbdkit_pid, sizeof nbdkit_pid) != sizeof nbdkit_pid)
    log_error ("cannot tell the janitor nbdkit's pid: %m");

  if (wait_for_nbdkit (cmd[0], pid_path) == -1)
    goto err;
  if (*ferry && access (json_path, R_OK) == 0)
    *vm_json = json_path;
  else
    free (json_path);
  free (pid_path);
  return sock;

oom:
  log_error ("out of memory");
err:
  free (sock);
  free (pid_path);
  free (json_path);
  return NULL;
}

/* Stops nbdkit (SIGTERM, so the plugin cleans up), waits for it however long its cleanup
 * takes (removing a snapshot on a slow vCenter), and removes the private directory.
 */
static void
stop_nbdkit (void)
{
  int status;

  if (nbdkit_pid > 0) {
    double start = time_monotonic (), next_note = start + NOTE_INTERVAL;

    kill (nbdkit_pid, SIGTERM);
    while (waitpid (nbdkit_pid, &status, WNOHANG) == 0) {
      if (time_monotonic () >= next_note) {
        note ("waiting for nbdkit (pid %d) to exit (for %.0f s); it may be removing a "
              "snapshot",
              (int)nbdkit_pid, time_monotonic () - start);
        next_note += NOTE_INTERVAL;
      }
      sleep_ms (20);
    }
    nbdkit_pid = -1;
  }
  if (private_dir && private_dir[0])
    remove_private_dir (private_dir);
  free (private_dir);
  private_dir = NULL;
  if (janitor_fd >= 0) {
    close (janitor_fd); /* the janitor finds nothing left to do and exits */
    janitor_fd = -1;
    waitpid (janitor_pid, &status, 0);
  }
}

/* Opens one pool per URI into VM. */
static int
open_disks (struct vm *vm, char **uris, size_t n, char **export_names)
{
  size_t i;

  vm->disks = calloc (n, sizeof *vm->disks);
  if (vm->disks == NULL) {
    log_error ("out of memory");
    return -1;
  }
  for (i = 0; i < n; i++) {
    struct disk *d = &vm->disks[i];

    d->uri = strdup (uris[i]);
    d->pool = pool_open (uris[i], connections, timeout);
    if (d->uri == NULL || d->pool == NULL)
      return -1;
    vm->nr_disks++;
    d->export_name = strdup (export_names ? export_names[i] : pool_export_name (d->pool));
    if (d->export_name == NULL)
      return -1;
  }
  return 0;
}

static void
close_disks (struct vm *vm)
{
  size_t i;

  for (i = 0; i < vm->nr_disks; i++) {
    pool_close (vm->disks[i].pool);
    free (vm->disks[i].uri);
    free (vm->disks[i].export_name);
    free (vm->disks[i].file);
  }
  free (vm->disks);
  free (vm->vm_json);
  free (vm->mountpoint);
}

/* Command mode: start nbdkit, then list its exports as disks. */
static int
disks_from_nbdkit (struct vm *vm, char **cmd, int n)
{
  CLEANUP_FREE char *sock = NULL, *vm_json = NULL, *list_uri = NULL;
  struct export_info *exports = NULL;
  char **uris = NULL, **names = NULL;
  bool ferry;
  int nr, i, r = -1;

  sock = start_nbdkit (cmd, n, &vm_json, &ferry);
  if (sock == NULL)
    return -1;
  list_uri = ferryfs_unix_uri (sock, "");
  /* ferry's plugin serves one export per disk: without the list, no VM. */
  nr = list_uri ? ferryfs_list_exports (list_uri, timeout, ferry, &exports) : -1;
  if (nr == -1)
    return -1;
  uris = calloc (nr ? nr : 1, sizeof *uris);
  names = calloc (nr ? nr : 1, sizeof *names);
  if (uris == NULL || names == NULL)
    goto out;
  for (i = 0; i < (nr ? nr : 1); i++) {
    names[i] = nr ? exports[i].name : (char *)"";
    uris[i] = ferryfs_unix_uri (sock, names[i]);
    if (uris[i] == NULL)
      goto out;
  }
  if (open_disks (vm, uris, nr ? nr : 1, names) == -1)
    goto out;
  r = vm_describe (vm, vm_json, uris, nr ? nr : 1);

out:
  for (i = 0; uris && i < (nr ? nr : 1); i++)
    free (uris[i]);
  free (uris);
  free (names);
  free_exports (exports, nr);
  return r;
}

/* The parent of detach: a signal to it (^C while it waits) goes to the child, which then
 * gives up in order (see wait_for_nbdkit) and tells it so.
 */
static pid_t detached_child = -1;

static void
forward_signal (int sig)
{
  int saved_errno = errno;

  if (detached_child > 0)
    kill (detached_child, SIGTERM);
  errno = saved_errno;
}

/* Detaches: the parent waits for the child's word (one byte on a pipe) and exits 0 once
 * the child mounted, 1 when it failed.  Returns the child's end of the pipe.
 */
static int
detach (void)
{
  struct sigaction sa = { .sa_handler = forward_signal };
  int fds[2];
  pid_t pid;
  ssize_t r;
  char c;

  if (pipe2 (fds, O_CLOEXEC) == -1) {
    log_error ("pipe: %m");
    exit (EXIT_FAILURE);
  }
  pid = fork ();
  if (pid == -1) {
    log_error ("fork: %m");
    exit (EXIT_FAILURE);
  }
  if (pid > 0) {
    detached_child = pid;
    sigemptyset (&sa.sa_mask);
    sigaction (SIGINT, &sa, NULL);
    sigaction (SIGTERM, &sa, NULL);
    sigaction (SIGHUP, &sa, NULL);
    close (fds[1]);
    while ((r = read (fds[0], &c, 1)) == -1 && errno == EINTR)
      ;
    _exit (r == 1 && c == '0' ? EXIT_SUCCESS : EXIT_FAILURE);
  }
  close (fds[0]);
  setsid ();
  return fds[1];
}

/* SIGTERM, SIGINT, SIGHUP: leave the FUSE loop (as libfuse's own handler does), or give up
 * starting nbdkit (see wait_for_nbdkit), and cancel the inspection (inspect.c).
 */
static void
on_signal (int sig)
{
  int saved_errno = errno;

  stop_requested = 1;
  request_shutdown ();
  if (signal_session)
    fuse_session_exit (signal_session);
  errno = saved_errno;
}

/* Makes ferryfs_shutdown_fd readable: the inspection is cancelled. */
static void
request_shutdown (void)
{
  if (shutdown_pipe[1] >= 0 && write (shutdown_pipe[1], "x", 1) == -1) {
    /* full already: it is readable */
  }
}

static int
set_signal_handlers (void)
{
  struct sigaction sa = { .sa_handler = on_signal };
  const int sigs[] = { SIGTERM, SIGINT, SIGHUP };
  size_t i;

  if (pipe2 (shutdown_pipe, O_CLOEXEC | O_NONBLOCK) == -1)
    return -1;
  ferryfs_shutdown_fd = shutdown_pipe[0];
  sigemptyset (&sa.sa_mask);
  for (i = 0; i < sizeof sigs / sizeof sigs[0]; i++)
    if (sigaction (sigs[i], &sa, NULL) == -1)
      return -1;
  signal (SIGPIPE, SIG_IGN);
  return 0;
}

static int
serve (struct vm *vm, int ready_fd)
{
  struct fuse_args args = FUSE_ARGS_INIT (0, NULL);
  struct fuse_loop_config *loop;
  struct fuse *fuse;
  CLEANUP_FREE char *opts = NULL;
  int r = -1;

  if (asprintf (&opts, "ro,default_permissions,fsname=ferryfs,subtype=ferryfs%s%s",
                fuse_opts ? "," : "", fuse_opts ? fuse_opts : "") == -1 ||
      fuse_opt_add_arg (&args, PROGRAM) == -1 || fuse_opt_add_arg (&args, "-o") == -1 ||
      fuse_opt_add_arg (&args, opts) == -1) {
    log_error ("out of memory");
    return -1;
  }
  if (ferryfs_verbose >= 2)
    fuse_opt_add_arg (&args, "-d");
  ferryfs_vm = vm;
  fuse = fuse_new (&args, &ferryfs_operations, sizeof ferryfs_operations, NULL);
  if (fuse == NULL) {
    log_error ("fuse_new failed (bad -o option?)");
    goto out_args;
  }
  if (fuse_mount (fuse, vm->mountpoint) == -1) {
    log_error ("cannot mount on %s (see the message above)", vm->mountpoint);
    goto out_destroy;
  }
  signal_session = fuse_get_session (fuse);
  if (stop_requested) { /* a signal came before signal_session was set */
    log_error ("interrupted before serving");
    goto out_handlers;
  }
  if (pidfile) {
    FILE *fp = fopen (pidfile, "w");

    if (fp == NULL || fprintf (fp, "%d\n", (int)getpid ()) < 0 || fclose (fp) == EOF)
      log_error ("%s: %m", pidfile);
  }
  if (ready_fd >= 0) {
    int null = open ("/dev/null", O_RDWR);

    if (write (ready_fd, "0", 1) != 1)
      log_error ("cannot tell the parent: %m");
    close (ready_fd);
    if (null >= 0) {
      dup2 (null, 0);
      dup2 (null, 1);
      if (!ferryfs_verbose)
        dup2 (null, 2);
      close (null);
    }
    if (chdir ("/") == -1)
      log_error ("chdir /: %m");
  }

  loop = fuse_loop_cfg_create ();
  if (loop == NULL) {
    log_error ("out of memory");
    goto out_handlers;
  }
  /* Enough threads that inspection (which reads through the mount) and its reads run
   * side by side; each read holds at most one FUSE buffer.
   */
  fuse_loop_cfg_set_max_threads (loop, 16);
  fuse_loop_cfg_set_idle_threads (loop, 8);
  r = fuse_loop_mt (fuse, loop) >= 0 ? 0 : -1;
  fuse_loop_cfg_destroy (loop);
  if (r == -1)
    log_error ("the FUSE loop failed");

out_handlers:
  signal_session = NULL;
  /* An inspection still running reads through this mount, which nobody serves now. */
  request_shutdown ();
  fs_wait_inspection ();
  fuse_unmount (fuse);
out_destroy:
  fuse_destroy (fuse);
out_args:
  fuse_opt_free_args (&args);
  if (pidfile)
    unlink (pidfile);
  return r;
}

int
main (int argc, char *argv[])
{
  static const struct option long_options[] = {
    { "connections", required_argument, NULL, 'c' },
    { "timeout", required_argument, NULL, 't' },
    { "start-timeout", required_argument, NULL, 's' },
    { "foreground", no_argument, NULL, 'f' },
    { "pidfile", required_argument, NULL, 'P' },
    { "option", required_argument, NULL, 'o' },
    { "verbose", no_argument, NULL, 'v' },
    { "help", no_argument, NULL, 'h' },
    { "version", no_argument, NULL, 'V' },
    { NULL, 0, NULL, 0 },
  };
  struct vm vm = { 0 };
  char **cmd = NULL;
  int cmd_n = 0, opt_argc = argc, c, i, ready_fd = -1, r;
  char *end;
  long l;

  log_set_handlers (print_error, print_debug);

  /* The inspection child (see inspect.c): the JSON document on stdout. */
  if (argc >= 2 && strcmp (argv[1], INSPECT_OPTION) == 0) {
    char *json = inspect_disks (&argv[2], argc - 2);

    if (json == NULL || fputs (json, stdout) == EOF || fflush (stdout) == EOF)
      exit (EXIT_FAILURE);
    free (json);
    exit (EXIT_SUCCESS);
  }

  /* Everything after "--" is the nbdkit command, untouched by getopt. */
  for (i = 1; i < argc; i++) {
    if (strcmp (argv[i], "--") == 0) {
      opt_argc = i;
      cmd = &argv[i + 1];
      cmd_n = argc - i - 1;
      break;
    }
  }
  while ((c = getopt_long (opt_argc, argv, "c:t:s:fP:o:vhV", long_options, NULL)) != -1) {
    switch (c) {
      case 'c':
      case 't':
      case 's':
        errno = 0;
        l = strtol (optarg, &end, 10);
        if (errno || end == optarg || *end || l < 1 || l > (c == 'c' ? 64 : 86400)) {
          fprintf (stderr, PROGRAM ": --%s: expected a number from 1 to %d, not '%s'\n",
                   c == 'c'   ? "connections"
                   : c == 't' ? "timeout"
                              : "start-timeout",
                   c == 'c' ? 64 : 86400, optarg);
          usage (2);
        }
        if (c == 'c')
          connections = l;
        else if (c == 't')
          timeout = l;
        else
          start_timeout = l;
        break;
      case 'f':
        foreground = true;
        break;
      case 'P':
        pidfile = optarg;
        break;
      case 'o':
        if (fuse_opts == NULL)
          fuse_opts = strdup (optarg);
        else {
          char *s;

          if (asprintf (&s, "%s,%s", fuse_opts, optarg) == -1)
            s = NULL;
          free (fuse_opts);
          fuse_opts = s;
        }
        break;
      case 'v':
        ferryfs_verbose++;
        break;
      case 'h':
        usage (EXIT_SUCCESS);
      case 'V':
        printf (PROGRAM " 0.1\n");
        exit (EXIT_SUCCESS);
      default:
        usage (2);
    }
  }
  if (optind >= opt_argc) {
    fprintf (stderr, PROGRAM ": missing MOUNTPOINT\n");
    usage (2);
  }
  if (cmd != NULL && (cmd_n == 0 || optind + 1 != opt_argc)) {
    fprintf (stderr, PROGRAM ": expected MOUNTPOINT -- nbdkit PLUGIN [KEY=VALUE...]\n");
    usage (2);
  }
  if (cmd == NULL && optind + 1 == opt_argc) {
    fprintf (stderr, PROGRAM ": missing NBD-URI (or -- nbdkit ...) after MOUNTPOINT\n");
    usage (2);
  }

  vm.mountpoint = check_mountpoint (argv[optind]);
  if (vm.mountpoint == NULL)
    exit (EXIT_FAILURE);
  vm.timeout = timeout;
  if (pidfile && pidfile[0] != '/') {
    char *abs = realpath (".", NULL);
    char *p;

    if (abs == NULL || asprintf (&p, "%s/%s", abs, pidfile) == -1) {
      log_error ("%s: %m", pidfile);
      exit (EXIT_FAILURE);
    }
    free (abs);
    pidfile = p;
  }

  /* Detach first: nbdkit's --exit-with-parent must see the process that stays. */
  if (!foreground)
    ready_fd = detach ();
  if (set_signal_handlers () == -1) {
    log_error ("cannot set signal handlers: %m");
    exit (EXIT_FAILURE);
  }

  if (cmd != NULL)
    r = disks_from_nbdkit (&vm, cmd, cmd_n);
  else {
    char **uris = &argv[optind + 1];
    size_t n = opt_argc - optind - 1;

    r = open_disks (&vm, uris, n, NULL);
    if (r == 0)
      r = vm_describe (&vm, NULL, uris, n);
  }
  if (r == 0)
    r = serve (&vm, ready_fd);
  close_disks (&vm);
  stop_nbdkit ();
  free (fuse_opts);
  exit (r == 0 ? EXIT_SUCCESS : EXIT_FAILURE);
}
