/* SPDX-License-Identifier: Apache-2.0 */
/* ferry: running the tools conversion needs (qemu-img, qemu-nbd, virt-v2v-in-place,
 * guestfish) as children with an explicit environment and argv, never a shell.
 *
 * The environment is the part of ferry's own that the tools need (a list: PATH, HOME,
 * locale, libguestfs' and virt-v2v's variables), plus, when the probe found that a
 * libguestfs appliance cannot start with the defaults (KVM unusable: the launch fails at
 * once), the settings that make libguestfs and its qemu use TCG.  Probed once per process
 * (pthread_once).
 */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/cleanup.h"
#include "common/log.h"
#include "children.h"

extern char **environ;

static pthread_once_t probe_once = PTHREAD_ONCE_INIT;
static char **child_env;
static bool use_tcg;

/* What the tools need of ferry's environment; nothing else passes, so that a secret in
 * ferry's environment (a caller's PASSWORD=..., a token) never reaches them.
 */
static bool
passed_on (const char *var)
{
  static const char *const names[] = { "PATH=",
                                       "HOME=",
                                       "USER=",
                                       "LOGNAME=",
                                       "TMPDIR=",
                                       "TZ=",
                                       "LANG=",
                                       "LANGUAGE=",
                                       "TERM=",
                                       "XDG_RUNTIME_DIR=",
                                       "LD_LIBRARY_PATH=",
                                       "LIBVIRT_DEFAULT_URI=",
                                       "VIRT_TOOLS_DATA_DIR=",
                                       NULL };
  static const char *const prefixes[] = { "LC_", "LIBGUESTFS_", "VIRT_V2V_", "SUPERMIN_",
                                          NULL };

  for (size_t i = 0; names[i]; i++)
    if (strncmp (var, names[i], strlen (names[i])) == 0)
      return true;
  for (size_t i = 0; prefixes[i]; i++)
    if (strncmp (var, prefixes[i], strlen (prefixes[i])) == 0)
      return true;
  return false;
}

/* The variables of environ that pass, plus the NULL-terminated EXTRA entries; NULL on
 * ENOMEM.
 */
static char **
env_with (char *const *extra)
{
  size_t n = 0, m = 0, k = 0;
  char **env;

  while (environ[n])
    n++;
  while (extra && extra[m])
    m++;
  env = calloc (n + m + 1, sizeof *env);
  if (env == NULL)
    return NULL;
  for (size_t i = 0; i < n; i++)
    if (passed_on (environ[i]))
      env[k++] = environ[i];
  for (size_t i = 0; i < m; i++)
    env[k++] = extra[i];
  return env;
}

static void
probe (void)
{
  static char *tcg[] = { "LIBGUESTFS_BACKEND=direct",
                         "LIBGUESTFS_BACKEND_SETTINGS=force_tcg", NULL };
  const char *const argv[] = { "guestfish", "-a", "/dev/null", "run", NULL };
  char **plain = env_with (NULL);
  int status = -1;

  /* The caller's own choice wins. */
  if (getenv ("LIBGUESTFS_BACKEND_SETTINGS") == NULL && plain &&
      child_run (argv, plain, NULL, NULL, &status) == 0 && status != 0) {
    use_tcg = true;
    child_env = env_with (tcg);
    log_info ("libguestfs cannot use KVM here; running it under TCG (slower)");
  }
  if (child_env == NULL)
    child_env = plain;
  else
    free (plain);
}

char *const *
convert_child_env (void)
{
  pthread_once (&probe_once, probe);
  return child_env;
}

bool
convert_uses_tcg (void)
{
  pthread_once (&probe_once, probe);
  return use_tcg;
}

pid_t
child_spawn (const char *const *argv, char *const *env, int out_fd, int err_fd,
             bool new_group)
{
  posix_spawn_file_actions_t fa;
  posix_spawnattr_t attr;
  pid_t pid;
  int r;

  posix_spawn_file_actions_init (&fa);
  posix_spawnattr_init (&attr);
  posix_spawn_file_actions_addopen (&fa, 0, "/dev/null", O_RDONLY, 0);
  if (out_fd >= 0)
    posix_spawn_file_actions_adddup2 (&fa, out_fd, 1);
  else
    posix_spawn_file_actions_addopen (&fa, 1, "/dev/null", O_WRONLY, 0);
  if (err_fd >= 0)
    posix_spawn_file_actions_adddup2 (&fa, err_fd, 2);
  else
    posix_spawn_file_actions_addopen (&fa, 2, "/dev/null", O_WRONLY, 0);
  if (new_group)
    posix_spawnattr_setpgroup (&attr, 0);
  /* The children must not inherit ferry's blocked signals (SIGTERM is taken by a
   * sigwait thread in ferry).
   */
  sigset_t none;
  sigemptyset (&none);
  posix_spawnattr_setsigmask (&attr, &none);
  posix_spawnattr_setflags (&attr, POSIX_SPAWN_SETSIGMASK |
                                       (new_group ? POSIX_SPAWN_SETPGROUP : 0));
  r = posix_spawnp (&pid, argv[0], &fa, &attr, (char *const *)argv, env);
  posix_spawn_file_actions_destroy (&fa);
  posix_spawnattr_destroy (&attr);
  if (r != 0) {
    errno = r;
    log_error ("%s: cannot run it: %m", argv[0]);
    return -1;
  }
  return pid;
}

/* Read all of FD into a malloc'd string (NUL-terminated). */
static char *
slurp (int fd)
{
  char *buf = NULL;
  size_t len = 0;
  FILE *fp = open_memstream (&buf, &len);
  char chunk[8192];
  ssize_t n;

  if (fp == NULL)
    return NULL;
  while ((n = read (fd, chunk, sizeof chunk)) != 0) {
    if (n == -1) {
      if (errno == EINTR)
        continue;
      break;
    }
    fwrite (chunk, 1, n, fp);
  }
  fclose (fp);
  return buf;
}

pid_t
child_spawn_piped (const char *const *argv, int *out_fd, int *err_fd)
{
  int opipe[2], epipe[2];
  pid_t pid;

  if (pipe2 (opipe, O_CLOEXEC) == -1)
    return -1;
  if (pipe2 (epipe, O_CLOEXEC) == -1) {
    close (opipe[0]), close (opipe[1]);
    return -1;
  }
  pid = child_spawn (argv, convert_child_env (), opipe[1], epipe[1], true);
  close (opipe[1]);
  close (epipe[1]);
  if (pid == -1) {
    close (opipe[0]), close (epipe[0]);
    return -1;
  }
  *out_fd = opipe[0];
  *err_fd = epipe[0];
  return pid;
}

int
child_run (const char *const *argv, char *const *env, char **out, char **err, int *status)
{
  int opipe[2] = { -1, -1 }, epipe[2] = { -1, -1 };
  CLEANUP_FREE char *ebuf = NULL;
  pid_t pid;
  int ws;

  if ((out && pipe2 (opipe, O_CLOEXEC) == -1) || pipe2 (epipe, O_CLOEXEC) == -1) {
    log_error ("%s: pipe: %m", argv[0]);
    goto fail;
  }
  pid = child_spawn (argv, env, opipe[1], epipe[1], false);
  if (pid == -1)
    goto fail;
  if (opipe[1] >= 0)
    close (opipe[1]), opipe[1] = -1;
  close (epipe[1]), epipe[1] = -1;
  /* qemu-img map prints little; read stdout fully, then stderr (no deadlock for the
   * sizes these tools print: stderr fits the pipe).
   */
  if (out)
    *out = slurp (opipe[0]);
  ebuf = slurp (epipe[0]);
  while (waitpid (pid, &ws, 0) == -1)
    if (errno != EINTR) {
      log_error ("%s: waitpid: %m", argv[0]);
      goto fail;
    }
  if (opipe[0] >= 0)
    close (opipe[0]);
  close (epipe[0]);
  *status = WIFEXITED (ws) ? WEXITSTATUS (ws) : 128 + WTERMSIG (ws);
  if (err)
    *err = ebuf, ebuf = NULL;
  return 0;

fail:
  for (int i = 0; i < 2; i++) {
    if (opipe[i] >= 0)
      close (opipe[i]);
    if (epipe[i] >= 0)
      close (epipe[i]);
  }
  return -1;
}

int
child_check (const char *what, const char *const *argv, char **out)
{
  CLEANUP_FREE char *err = NULL;
  int status;

  if (child_run (argv, convert_child_env (), out, &err, &status) == -1)
    return -1;
  if (status != 0) {
    size_t n = err ? strlen (err) : 0;
    while (n > 0 && (err[n - 1] == '\n' || err[n - 1] == ' '))
      err[--n] = '\0';
    log_error ("%s: %s failed (exit %d): %s", what, argv[0], status,
               n ? err : "no message");
    if (out)
      free (*out), *out = NULL;
    return -1;
  }
  return 0;
}

int
free_local_port (void)
{
  struct sockaddr_in sa = { .sin_family = AF_INET,
                            .sin_addr.s_addr = htonl (INADDR_LOOPBACK) };
  socklen_t len = sizeof sa;
  CLEANUP_CLOSE int fd = socket (AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

  if (fd == -1 || bind (fd, (struct sockaddr *)&sa, sizeof sa) == -1 ||
      getsockname (fd, (struct sockaddr *)&sa, &len) == -1) {
    log_error ("a free localhost port: %m");
    return -1;
  }
  return ntohs (sa.sin_port);
}
