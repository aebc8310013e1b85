/* SPDX-License-Identifier: Apache-2.0 */
/* ferry: the termination log (termlog.h). */
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>

#include "common/log.h"
#include "journal.h"
#include "migrate.h"
#include "termlog.h"

static char *first_error;

static void
record_error (const char *msg)
{
  fprintf (stderr, "ferry: %s\n", msg);
  if (first_error == NULL)
    first_error = strdup (msg);
}

void
termlog_capture_errors (void)
{
  log_set_error_handler (record_error);
}

const char *
termlog_first_error (void)
{
  return first_error;
}

const char *
termlog_result (int status)
{
  switch (status) {
    case 0:
      return "succeeded";
    case 2:
      return "usage";
    case EXIT_RETRY:
      return "retryable";
    default:
      return "failed";
  }
}

char *
termlog_shorten (const char *s, size_t max)
{
  size_t len = strlen (s), cut;
  char *r;

  if (len <= max)
    return strdup (s);
  if (max < 4)
    return strdup ("");
  cut = max - 3;
  while (cut > 0 && ((unsigned char)s[cut] & 0xC0) == 0x80) /* a UTF-8 continuation */
    cut--;
  r = malloc (cut + 4);
  if (r) {
    memcpy (r, s, cut);
    memcpy (r + cut, "...", 4);
  }
  return r;
}

int
termlog_write_text (const char *path, const char *text)
{
  size_t len = strlen (text);
  int fd;

  if (len > TERMLOG_MAX)
    len = TERMLOG_MAX;
  /* Not write_file_atomic: /dev/termination-log is a bind mount, it cannot be renamed. */
  fd = open (path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd == -1 || write (fd, text, len) != (ssize_t)len || fsync (fd) == -1) {
    fprintf (stderr, "ferry: termination log %s: %m\n", path);
    if (fd != -1)
      close (fd);
    return -1;
  }
  return close (fd);
}

/* The VM entries, failed ones first, each error at most ERR_MAX bytes. */
static json_t *
vm_entries (const struct plan *plan, json_t *jvms, size_t err_max, json_t *counts)
{
  json_t *failed = json_array (), *others = json_array ();

  for (size_t i = 0; i < plan->vms.len; i++) {
    const char *name = plan_vm_label (&plan->vms.ptr[i]);
    json_t *vm = json_object_get (jvms, name);
    const char *state = json_string_value (json_object_get (vm, "state"));
    const char *error = json_string_value (json_object_get (vm, "error"));
    bool cancelled = error && strcmp (error, "cancelled") == 0;
    json_t *e;

    if (state == NULL)
      state = "pending";
    e = json_pack ("{s:s, s:s, s:i}", "name", name, "state", state, "round",
                   (int)json_integer_value (json_object_get (vm, "round")));
    if (error) {
      char *shortened = termlog_shorten (error, err_max);
      json_object_set_new (e, "error", json_string (shortened ? shortened : ""));
      free (shortened);
    }
    if (counts) {
      const char *key = cancelled ? "cancelled" : state;
      json_object_set_new (
          counts, key,
          json_integer (json_integer_value (json_object_get (counts, key)) + 1));
    }
    json_array_append_new (strcmp (state, "failed") == 0 ? failed : others, e);
  }
  json_array_extend (failed, others);
  json_decref (others);
  return failed;
}

/* The plan's journal, or NULL (not an error: the plan may not have run). */
static json_t *
read_journal (const char *state_dir)
{
  char *file = journal_path (state_dir, "journal.json");
  json_t *root = file ? json_load_file (file, 0, NULL) : NULL;

  free (file);
  return root;
}

int
termlog_write (const char *path, const char *command, const struct plan *plan, int status)
{
  static const size_t err_limits[] = { 1024, 256, 96 };
  json_t *journal = plan ? read_journal (plan->state_dir) : NULL;
  json_t *jvms = json_object_get (journal, "vms");
  char *text = NULL;
  int r;

  for (size_t li = 0; li < sizeof err_limits / sizeof err_limits[0] && text == NULL; li++) {
    size_t err_max = err_limits[li];
    json_t *doc = json_pack ("{s:s, s:i, s:s}", "command", command, "exitCode", status,
                             "result", termlog_result (status));
    json_t *vms = NULL;

    if (plan) {
      json_t *counts = json_pack ("{s:i}", "vms", (int)plan->vms.len);
      json_object_set_new (doc, "plan", json_string (plan->name));
      vms = vm_entries (plan, jvms, err_max, counts);
      json_object_set_new (doc, "counts", counts);
    }
    const char *error = first_error;
    for (size_t i = 0; plan && error == NULL && i < plan->vms.len; i++)
      error = json_string_value (json_object_get (
          json_object_get (jvms, plan_vm_label (&plan->vms.ptr[i])), "error"));
    if (error) {
      char *e = termlog_shorten (error, err_max);
      json_object_set_new (doc, "error", json_string (e ? e : ""));
      free (e);
    }
    /* Add VMs while the whole fits; the last limit keeps as many as fit. */
    size_t total = vms ? json_array_size (vms) : 0, kept = total;
    for (;;) {
      json_t *part = json_array ();
      for (size_t i = 0; i < kept; i++)
        json_array_append (part, json_array_get (vms, i));
      if (plan)
        json_object_set_new (doc, "vms", part);
      else
        json_decref (part);
      json_object_set_new (doc, "truncated", json_boolean (kept < total || li > 0));
      if (kept < total)
        json_object_set_new (doc, "vmsOmitted", json_integer (total - kept));
      char *s = json_dumps (doc, JSON_COMPACT | JSON_PRESERVE_ORDER);
      if (s && strlen (s) < TERMLOG_MAX) {
        text = s;
        break;
      }
      free (s);
      if (kept == 0 || (kept == total && li + 1 < sizeof err_limits / sizeof err_limits[0]))
        break; /* first shorten the errors more */
      kept = kept > 8 ? kept - kept / 8 : kept - 1;
    }
    json_decref (vms);
    json_decref (doc);
  }
  json_decref (journal);
  if (text == NULL)
    text = strdup ("{\"truncated\":true}");
  r = text ? termlog_write_text (path, text) : -1;
  free (text);
  return r;
}
