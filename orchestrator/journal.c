/* SPDX-License-Identifier: Apache-2.0 */
/* ferry: the plan's journal (journal.h). */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/cleanup.h"
#include "common/log.h"
#include "common/util.h"
#include "journal.h"

struct journal {
  char *dir;
  char *file;
  int lock_fd;
  pthread_mutex_t lock;
  json_t *root;
};

char *
journal_path (const char *state_dir, const char *file)
{
  char *p;
  if (asprintf (&p, "%s/%s", state_dir, file) == -1)
    return NULL;
  return p;
}

/* mkdir -p, mode 0700: the state holds no secret, but describes the VMs. */
static int
make_dirs (const char *dir)
{
  CLEANUP_FREE char *copy = strdup (dir);

  if (copy == NULL)
    return -1;
  for (char *p = copy + 1; *p; p++) {
    if (*p != '/')
      continue;
    *p = '\0';
    if (mkdir (copy, 0755) == -1 && errno != EEXIST)
      return -1;
    *p = '/';
  }
  if (mkdir (copy, 0700) == -1 && errno != EEXIST)
    return -1;
  return 0;
}

json_t *
journal_read (const char *state_dir)
{
  CLEANUP_FREE char *file = journal_path (state_dir, "journal.json");
  json_error_t err;
  json_t *root;

  if (file == NULL)
    return NULL;
  root = json_load_file (file, 0, &err);
  if (root == NULL)
    log_error ("%s: %s", file, err.text);
  return root;
}

struct journal *
journal_open (const char *state_dir, const char *plan_name, bool run)
{
  struct journal *j = calloc (1, sizeof *j);

  if (j == NULL)
    return NULL;
  j->lock_fd = -1;
  pthread_mutex_init (&j->lock, NULL);
  j->dir = strdup (state_dir);
  j->file = journal_path (state_dir, "journal.json");
  if (j->dir == NULL || j->file == NULL)
    goto err;
  if (make_dirs (state_dir) == -1) {
    log_error ("stateDir %s: cannot create it: %m", state_dir);
    goto err;
  }
  if (run) {
    CLEANUP_FREE char *lock = journal_path (state_dir, "lock");
    char pid[32];
    j->lock_fd = lock ? open (lock, O_RDWR | O_CREAT | O_CLOEXEC, 0600) : -1;
    if (j->lock_fd == -1) {
      log_error ("%s: %m", lock);
      goto err;
    }
    if (flock (j->lock_fd, LOCK_EX | LOCK_NB) == -1) {
      pid_t other = journal_runner (state_dir);
      log_error ("plan %s: another ferry (pid %ld) is running this plan (stateDir %s); "
                 "ferry status shows its progress, ferry cancel stops it",
                 plan_name, (long)other, state_dir);
      goto err;
    }
    snprintf (pid, sizeof pid, "%ld\n", (long)getpid ());
    if (ftruncate (j->lock_fd, 0) == -1 ||
        pwrite_full (j->lock_fd, pid, strlen (pid), 0) == -1) {
      log_error ("%s: %m", lock);
      goto err;
    }
  }
  if (access (j->file, F_OK) == 0) {
    j->root = journal_read (state_dir);
    if (j->root == NULL)
      goto err;
    json_t *name = json_object_get (j->root, "plan");
    if (!json_is_string (name) || strcmp (json_string_value (name), plan_name) != 0) {
      log_error ("stateDir %s holds the journal of plan \"%s\", not \"%s\": give each plan "
                 "its own stateDir",
                 state_dir, json_is_string (name) ? json_string_value (name) : "?",
                 plan_name);
      goto err;
    }
  } else {
    j->root = json_pack ("{s:s, s:{}}", "plan", plan_name, "vms");
    if (j->root == NULL)
      goto err;
  }
  return j;

err:
  journal_close (j);
  return NULL;
}

void
journal_close (struct journal *j)
{
  if (j == NULL)
    return;
  if (j->lock_fd != -1)
    close (j->lock_fd); /* releases the flock */
  json_decref (j->root);
  pthread_mutex_destroy (&j->lock);
  free (j->dir);
  free (j->file);
  free (j);
}

pid_t
journal_runner (const char *state_dir)
{
  CLEANUP_FREE char *lock = journal_path (state_dir, "lock");
  char buf[32] = "";
  pid_t pid = 0;
  int fd = lock ? open (lock, O_RDONLY | O_CLOEXEC) : -1;

  if (fd == -1)
    return 0;
  /* Only a held lock means a running process; its pid is in the file. */
  if (flock (fd, LOCK_SH | LOCK_NB) == -1 && errno == EWOULDBLOCK &&
      pread (fd, buf, sizeof buf - 1, 0) > 0)
    pid = strtol (buf, NULL, 10);
  close (fd);
  return pid;
}

void
journal_lock (struct journal *j)
{
  pthread_mutex_lock (&j->lock);
}

void
journal_unlock (struct journal *j)
{
  pthread_mutex_unlock (&j->lock);
}

json_t *
journal_vm (struct journal *j, const char *name)
{
  json_t *vms = json_object_get (j->root, "vms");
  json_t *vm = json_object_get (vms, name);

  if (vm == NULL) {
    vm = json_pack ("{s:s, s:i, s:n, s:n, s:{}, s:[], s:[], s:n}", "state", "pending",
                    "round", 0, "originalPowerState", "snapshot", "disks", "rounds",
                    "warnings", "error");
    json_object_set_new (vms, name, vm);
  }
  return vm;
}

static int
save_json (json_t *root, const char *file)
{
  char *text = json_dumps (root, JSON_INDENT (2) | JSON_SORT_KEYS);
  int r;

  if (text == NULL) {
    log_error ("%s: cannot encode the JSON", file);
    return -1;
  }
  r = write_file_atomic (file, text, strlen (text));
  if (r == -1)
    log_error ("%s: cannot write it durably: %m", file);
  free (text);
  return r;
}

int
journal_save (struct journal *j)
{
  return save_json (j->root, j->file);
}

static int
by_index (const void *a, const void *b)
{
  json_int_t x = json_integer_value (json_object_get (*(json_t *const *)a, "index"));
  json_int_t y = json_integer_value (json_object_get (*(json_t *const *)b, "index"));
  return x < y ? -1 : x > y;
}

/* Sort the array ARR of objects by their "index". */
static void
json_array_sort_by_index (json_t *arr)
{
  size_t n = json_array_size (arr);
  json_t **items = calloc (n, sizeof *items);

  if (items == NULL)
    return;
  for (size_t i = 0; i < n; i++)
    items[i] = json_incref (json_array_get (arr, i));
  qsort (items, n, sizeof *items, by_index);
  json_array_clear (arr);
  for (size_t i = 0; i < n; i++)
    json_array_append_new (arr, items[i]);
  free (items);
}

int
journal_write_results (struct journal *j, const char *const *names, size_t n)
{
  CLEANUP_FREE char *file = journal_path (j->dir, "results.json");
  json_t *vms = json_array (), *root;
  int r;

  for (size_t i = 0; i < n; i++) {
    json_t *vm = json_deep_copy (journal_vm (j, names[i])), *disks = json_array (), *d;
    const char *key;
    json_object_set_new (vm, "name", json_string (names[i]));
    json_object_del (vm, "snapshot"); /* in flight only: the journal's business */
    /* Disks as a list in index order, each with its key. */
    json_object_foreach (json_object_get (vm, "disks"), key, d)
    {
      json_object_set_new (d, "key", json_string (key));
      json_array_append (disks, d);
    }
    json_array_sort_by_index (disks);
    json_object_set_new (vm, "disks", disks);
    json_array_append_new (vms, vm);
  }
  root = json_pack ("{s:O, s:o}", "plan", json_object_get (j->root, "plan"), "vms", vms);
  r = file && root ? save_json (root, file) : -1;
  json_decref (root);
  return r;
}

double
journal_predict_final_round (json_t *vm, double now)
{
  json_t *last = json_object_get (vm, "lastSnapshotTime");
  double rate = json_number_value (json_object_get (vm, "changeRate"));
  double fetch = json_number_value (json_object_get (vm, "fetchRate"));
  double fixed = json_number_value (json_object_get (vm, "roundOverheadSeconds"));
  double since;

  if (!json_is_number (last))
    return -1;
  since = now - json_number_value (last);
  if (since < 0)
    since = 0;
  return fixed + (fetch > 0 ? rate * since / fetch : 0);
}
