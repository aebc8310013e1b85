/* SPDX-License-Identifier: Apache-2.0 */
/* ferry: vSphere tasks — snapshots and CBT reconfiguration, polled until they finish.
 *
 * A task goes queued -> running -> success | error.  We poll Task.info with a backoff from
 * 100 ms up to 2 s; a task's error is reported with the fault's own type and message.  A
 * task that has not finished by its deadline (task-timeout=, the same for every task of
 * the process) is given up with its last state and progress named, and cancelled where the
 * server allows it; a snapshot it may still make is one of ferry's leftovers, removed at
 * the next open.
 *
 * THREAD MODEL: any thread; the deadline is set once at open and only read afterwards.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/cleanup.h"
#include "common/log.h"
#include "common/util.h"
#include "soap.h"

static unsigned task_timeout = VS_TASK_TIMEOUT_DEFAULT;

void
vs_set_task_timeout (unsigned seconds)
{
  task_timeout = seconds ? seconds : VS_TASK_TIMEOUT_DEFAULT;
}

/* Best effort: a task we stop waiting for should not go on to make something. */
static void
cancel_task (struct vs_session *s, const char *ctx, const char *task)
{
  xmlDoc *doc;
  xmlNode *ret;
  struct vs_fault fault = { 0 };

  if (soap_call (s, ctx, "CancelTask", "Task", task, "", false, &doc, &ret, &fault) == 0)
    xmlFreeDoc (doc);
  else if (fault.type) {
    log_debug ("%s: CancelTask %s: %s %s", ctx, task, fault.type,
               fault.message ? fault.message : "");
    vs_fault_reset (&fault);
  }
}

/* Wait for TASK until the task deadline; on success *RESULT (if not NULL) gets
 * info.result's text.
 */
static int
wait_task (struct vs_session *s, const char *ctx, const char *what, const char *task,
           char **result)
{
  static const char *const paths[] = { "info", NULL };
  unsigned delay = 100, timeout = task_timeout;
  double deadline = time_monotonic () + timeout;
  char last[64] = "none reported";

  for (;;) {
    xmlDoc *doc;
    xmlNode *obj, *info;
    if (vs_retrieve (s, "Task", task, paths, &doc, &obj, NULL) == -1) {
      log_error ("%s: %s: lost track of %s", ctx, what, task);
      return -1;
    }
    info = vs_prop (obj, "info");
    CLEANUP_FREE char *state = xml_child_text (info, "state");
    if (state && strcmp (state, "success") == 0) {
      if (result)
        *result = xml_child_text (info, "result");
      xmlFreeDoc (doc);
      return 0;
    }
    if (state && strcmp (state, "error") == 0) {
      xmlNode *error = xml_child (info, "error");
      CLEANUP_FREE char *type = xml_type (xml_child (error, "fault"));
      CLEANUP_FREE char *msg = xml_child_text (error, "localizedMessage");
      log_error ("%s: %s (%s): %s%s%s", ctx, what, task, type ? type : "error",
                 msg && *msg ? ": " : "", msg ? msg : "");
      xmlFreeDoc (doc);
      return -1;
    }
    if (state) {
      CLEANUP_FREE char *progress = xml_child_text (info, "progress");
      snprintf (last, sizeof last, "%s%s%s%s", state, progress ? ", " : "",
                progress ? progress : "", progress ? "%" : "");
    }
    xmlFreeDoc (doc);
    if (ferry_debug_soap)
      log_debug ("soap: %s: %s (%s) is %s", ctx, what, task, state ? state : "?");
    if (time_monotonic () >= deadline) {
      log_error ("%s: %s (%s): not finished after %u s (task-timeout=%u); its last state: "
                 "%s",
                 ctx, what, task, timeout, timeout, last);
      cancel_task (s, ctx, task);
      return -1;
    }
    sleep_ms (delay);
    if (delay < 2000)
      delay *= 2;
  }
}

/* Start a *_Task method and wait for it.  Task methods are not idempotent: a resent
 * CreateSnapshot_Task would make a second snapshot.
 */
static int
run_task (struct vs_session *s, const char *ctx, const char *method, const char *this_type,
          const char *this_ref, const char *args, char **result)
{
  xmlDoc *doc;
  xmlNode *ret;
  CLEANUP_FREE char *task = NULL;

  if (soap_call (s, ctx, method, this_type, this_ref, args, false, &doc, &ret, NULL) == -1)
    return -1;
  task = xml_text (ret);
  xmlFreeDoc (doc);
  if (task == NULL || *task == '\0') {
    log_error ("%s: %s: the server returned no task", ctx, method);
    return -1;
  }
  return wait_task (s, ctx, method, task, result);
}

int
vs_create_snapshot (struct vs_session *s, const struct vs_vm *vm, const char *name,
                    const char *description, char **snap_moref)
{
  CLEANUP_FREE char *ename = xml_escape (name);
  CLEANUP_FREE char *edesc = xml_escape (description);
  CLEANUP_FREE char *args = NULL;

  if (ename == NULL || edesc == NULL ||
      asprintf (&args,
                "<name>%s</name><description>%s</description>"
                "<memory>false</memory><quiesce>false</quiesce>",
                ename, edesc) == -1) {
    log_error ("%s: CreateSnapshot_Task: out of memory", vm->moref);
    return -1;
  }
  *snap_moref = NULL;
  if (run_task (s, vm->moref, "CreateSnapshot_Task", "VirtualMachine", vm->moref, args,
                snap_moref) == -1)
    return -1;
  if (*snap_moref == NULL || **snap_moref == '\0') {
    log_error ("%s: CreateSnapshot_Task: the task gave no snapshot", vm->moref);
    free (*snap_moref);
    *snap_moref = NULL;
    return -1;
  }
  return 0;
}

int
vs_remove_snapshot (struct vs_session *s, const struct vs_vm *vm, const char *snap)
{
  char ctx[256];

  snprintf (ctx, sizeof ctx, "%s snapshot %s", vm->moref, snap);
  return run_task (s, ctx, "RemoveSnapshot_Task", "VirtualMachineSnapshot", snap,
                   "<removeChildren>false</removeChildren><consolidate>true</consolidate>",
                   NULL);
}

int
vs_enable_cbt (struct vs_session *s, const struct vs_vm *vm)
{
  return run_task (s, vm->moref, "ReconfigVM_Task", "VirtualMachine", vm->moref,
                   "<spec><changeTrackingEnabled>true</changeTrackingEnabled></spec>",
                   NULL);
}

int
vs_shutdown_guest (struct vs_session *s, const struct vs_vm *vm)
{
  xmlDoc *doc;
  xmlNode *ret;

  if (soap_call (s, vm->moref, "ShutdownGuest", "VirtualMachine", vm->moref, "", false,
                 &doc, &ret, NULL) == -1)
    return -1;
  xmlFreeDoc (doc);
  return 0;
}

int
vs_power_off (struct vs_session *s, const struct vs_vm *vm)
{
  return run_task (s, vm->moref, "PowerOffVM_Task", "VirtualMachine", vm->moref, "", NULL);
}

char *
vs_power_state (struct vs_session *s, const struct vs_vm *vm)
{
  static const char *const paths[] = { "runtime.powerState", NULL };
  xmlDoc *doc;
  xmlNode *obj;
  char *state;

  if (vs_retrieve (s, "VirtualMachine", vm->moref, paths, &doc, &obj, NULL) == -1)
    return NULL;
  state = xml_text (vs_prop (obj, "runtime.powerState"));
  xmlFreeDoc (doc);
  if (state == NULL)
    log_error ("%s: the server did not say the VM's power state", vm->moref);
  return state;
}
