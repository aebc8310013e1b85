/* SPDX-License-Identifier: Apache-2.0 */
/* ferry: running a plan (migrate.h): the run, its VM threads and their states, errors
 * and signals; one round of a VM is in migrate-round.c.
 *
 * THREAD MODEL: the main thread starts one thread per VM and a signal thread, then joins
 * the VM threads.  A VM thread runs its rounds; a round starts one thread per disk.  The
 * journal is shared under its lock; the run's cancel flag is written by the signal thread
 * and read everywhere (atomics); waits sleep on the run's condition variable.
 */
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "common/cleanup.h"
#include "common/log.h"
#include "common/util.h"
#include "conversion.h"
#include "inspection.h"
#include "journal.h"
#include "migrate-internal.h"
#include "migrate.h"
#include "sched.h"

/* Errors: printed above the progress display and kept per thread, so that a VM's result
 * says why it failed in the server's own words.
 */
static struct progress *log_progress;
__thread bool tracking; /* a VM or disk thread: keeps its first error */
__thread char *thread_error;
__thread bool thread_error_transient; /* log_error_is_transient of thread_error */
static char *last_error;
static bool last_error_transient;
static pthread_mutex_t last_error_lock = PTHREAD_MUTEX_INITIALIZER;

static void
capture_error (const char *msg)
{
  char line[4096];

  snprintf (line, sizeof line, "ferry: %s", msg);
  progress_log (log_progress, line);
  if (tracking && thread_error == NULL) {
    thread_error = strdup (msg);
    thread_error_transient = log_error_is_transient ();
  }
  pthread_mutex_lock (&last_error_lock);
  free (last_error);
  last_error = strdup (msg);
  last_error_transient = log_error_is_transient ();
  pthread_mutex_unlock (&last_error_lock);
}

static void
capture_info (const char *msg)
{
  char line[4096];

  snprintf (line, sizeof line, "ferry: %s", msg);
  progress_log (log_progress, line);
}

static void
capture_warning (const char *msg)
{
  char line[4096];

  snprintf (line, sizeof line, "ferry: warning: %s", msg);
  progress_log (log_progress, line);
}

/* Forget this thread's error (the work it was about succeeded, or the thread ends). */
void
drop_error (void)
{
  free (thread_error);
  thread_error = NULL;
}

/* The first error of this thread (or the last one anywhere), malloc'd; clears it.
 * *TRANSIENT (if not NULL) says whether retrying later may cure it (log.h).
 */
char *
take_error_ex (const char *fallback, bool *transient)
{
  char *e = thread_error;
  bool t = thread_error_transient;

  thread_error = NULL;
  thread_error_transient = false;
  if (e == NULL) {
    pthread_mutex_lock (&last_error_lock);
    e = last_error ? strdup (last_error) : NULL;
    t = last_error != NULL && last_error_transient;
    pthread_mutex_unlock (&last_error_lock);
  }
  if (transient)
    *transient = e != NULL && t;
  return e ? e : strdup (fallback);
}

static char *
take_error (const char *fallback)
{
  return take_error_ex (fallback, NULL);
}

bool
cancelled (struct run *run)
{
  return run->cancel != 0;
}

/* Journal helpers; called with the journal locked. */
void
jset_str (json_t *obj, const char *key, const char *value)
{
  json_object_set_new (obj, key, value ? json_string (value) : json_null ());
}

void
set_state (struct vm_job *vj, const char *state, unsigned round)
{
  struct run *run = vj->run;
  char text[256];

  journal_lock (run->journal);
  json_t *vm = journal_vm (run->journal, vj->label);
  jset_str (vm, "state", state);
  json_object_set_new (vm, "round", json_integer (round));
  journal_save (run->journal);
  journal_unlock (run->journal);
  snprintf (text, sizeof text, "ferry: %s: %s (round %u)", vj->label, state, round);
  progress_event (run->progress,
                  json_pack ("{s:s, s:s, s:s, s:i}", "event", "state", "vm", vj->label,
                             "state", state, "round", (int)round),
                  text);
}

/* When the plan or ferry cutover asks for the cutover; 0 if nobody has yet. */
static time_t
cutover_time (struct run *run)
{
  CLEANUP_FREE char *file = journal_path (run->plan->state_dir, "cutover");
  FILE *fp = file ? fopen (file, "re") : NULL;
  long long t = 0;

  if (fp) {
    if (fscanf (fp, "%lld", &t) != 1)
      t = 0;
    fclose (fp);
  }
  if (t > 0)
    return t;
  if (run->mode == RUN_CUTOVER)
    return 1;
  return run->plan->has_cutover ? run->plan->cutover : 0;
}

static bool
cutover_due (struct run *run)
{
  time_t t = cutover_time (run);
  return t > 0 && time (NULL) >= t;
}

/* Sleep until UNTIL (monotonic seconds), a due cutover or cancellation. */
static void
wait_round (struct run *run, double until)
{
  pthread_mutex_lock (&run->lock);
  while (!cancelled (run) && time_monotonic () < until && !cutover_due (run)) {
    struct timespec ts;
    clock_gettime (CLOCK_REALTIME, &ts);
    ts.tv_sec += 1; /* look at the cutover request once a second */
    pthread_cond_timedwait (&run->cond, &run->lock, &ts);
  }
  pthread_mutex_unlock (&run->lock);
}

/* Power the VM off for the final round, recording how it was found. */
static int
shut_down (struct vm_job *vj)
{
  struct run *run = vj->run;
  struct source_config cfg = plan_source_config (run->plan, vj->pvm);
  struct source *src;
  double t0 = time_monotonic ();
  int r;

  cfg.metadata_only = true;
  cfg.stop = &run->cancel;
  src = source_open (&cfg);
  if (src == NULL)
    return -1;
  journal_lock (run->journal);
  json_t *vm = journal_vm (run->journal, vj->label);
  if (json_is_null (json_object_get (vm, "originalPowerState")))
    jset_str (vm, "originalPowerState", source_vm (src)->power_state);
  journal_save (run->journal);
  journal_unlock (run->journal);
  r = source_shutdown (src, run->plan->shutdown_timeout);
  source_close (src);
  journal_lock (run->journal);
  vm = journal_vm (run->journal, vj->label);
  json_object_set_new (vm, "shutdownSeconds", json_real (time_monotonic () - t0));
  journal_unlock (run->journal);
  return r;
}

static void
finish_vm (struct vm_job *vj, bool ok)
{
  struct run *run = vj->run;
  bool transient = false;
  CLEANUP_FREE char *error = ok ? NULL : take_error_ex ("failed", &transient);
  char text[4200];

  drop_error (); /* what failed on the way to success */
  vj->ok = ok;
  vj->retryable = !ok && transient;
  journal_lock (run->journal);
  json_t *vm = journal_vm (run->journal, vj->label);
  char state[32];
  snprintf (state, sizeof state, "%s", json_string_value (json_object_get (vm, "state")));
  if (!ok && strcmp (state, "conversion-failed") == 0) { /* the conversion said why */
    free (error);
    error = json_is_string (json_object_get (vm, "error"))
                ? strdup (json_string_value (json_object_get (vm, "error")))
                : NULL;
    ok = true; /* not "failed": the copy stands */
    vj->retryable = false;
  }
  if (!ok && cancelled (run)) {
    /* Not a failure: the next migrate resumes where this one stopped. */
    jset_str (vm, "error", "cancelled");
    journal_save (run->journal);
    journal_unlock (run->journal);
    return;
  }
  jset_str (vm, "error", error);
  journal_save (run->journal);
  journal_unlock (run->journal);
  if (!ok)
    set_state (vj, "failed", json_integer_value (json_object_get (vm, "round")));
  snprintf (text, sizeof text, "ferry: %s: %s%s%s", vj->label, ok ? state : "failed",
            error ? ": " : "", error ? error : "");
  progress_event (run->progress,
                  json_pack ("{s:s, s:s, s:s, s:s?}", "event", "done", "vm", vj->label,
                             "state", ok ? state : "failed", "error", error),
                  text);
}

/* The preflight inspection before round 1 (inspection.h): -1 when it could not run or
 * virt-v2v cannot convert the guest, which is then refused before a byte is copied.  An
 * earlier run's success stands.
 */
static int
preflight (struct vm_job *vj)
{
  struct run *run = vj->run;
  CLEANUP_FREE char *dir = journal_path (run->plan->state_dir, vj->label);
  char text[1024];
  json_t *r;
  bool done;

  journal_lock (run->journal);
  done = json_is_true (json_object_get (
      json_object_get (journal_vm (run->journal, vj->label), "inspection"), "convertible"));
  journal_unlock (run->journal);
  if (done)
    return 0;
  if (dir == NULL || (mkdir (dir, 0700) == -1 && errno != EEXIST)) {
    log_error ("%s: %m", dir ? dir : run->plan->state_dir);
    return -1;
  }
  set_state (vj, "inspecting", 0);
  struct inspection in = { .plan = run->plan,
                           .pvm = vj->pvm,
                           .work_dir = dir,
                           .progress = run->progress,
                           .cancel = &run->cancel };
  r = inspection_vm (&in);
  if (r == NULL)
    return -1;
  journal_lock (run->journal);
  json_object_set (journal_vm (run->journal, vj->label), "inspection", r);
  journal_save (run->journal);
  journal_unlock (run->journal);
  if (!json_is_true (json_object_get (r, "convertible"))) {
    log_error ("%s: the preflight inspection found that virt-v2v cannot convert this "
               "guest, so nothing is copied (set \"preflightInspection\": false or "
               "\"skipGuestConversion\": true to copy it anyway): %s",
               vj->label, json_string_value (json_object_get (r, "error")));
    json_decref (r);
    return -1;
  }
  json_t *os = json_object_get (r, "os");
  snprintf (text, sizeof text,
            "ferry: %s: inspected: %s %s, root %s, firmware %s: virt-v2v can convert it "
            "(read %" JSON_INTEGER_FORMAT " bytes of %" JSON_INTEGER_FORMAT ", %.0f s)",
            vj->label, json_string_value (json_object_get (os, "distro")),
            json_string_value (json_object_get (os, "product_name")),
            json_string_value (json_object_get (os, "root")),
            json_string_value (json_object_get (r, "firmware")),
            json_integer_value (json_object_get (r, "bytesRead")),
            json_integer_value (json_object_get (r, "diskBytes")),
            json_number_value (json_object_get (r, "seconds")));
  progress_event (run->progress,
                  json_pack ("{s:s, s:s, s:b, s:I, s:I}", "event", "inspected", "vm",
                             vj->label, "convertible", 1, "bytesRead",
                             json_integer_value (json_object_get (r, "bytesRead")),
                             "bytesFetched",
                             json_integer_value (json_object_get (r, "bytesFetched"))),
                  text);
  json_decref (r);
  return 0;
}

static void *
vm_thread (void *arg)
{
  struct vm_job *vj = arg;
  struct run *run = vj->run;
  char state[32];
  unsigned round;
  bool cutting_over;

  tracking = true;
  journal_lock (run->journal);
  json_t *vm = journal_vm (run->journal, vj->label);
  snprintf (state, sizeof state, "%s", json_string_value (json_object_get (vm, "state")));
  round = json_integer_value (json_object_get (vm, "round"));
  json_object_set_new (vm, "warm", json_boolean (run->plan->warm));
  /* A recorded power state means the cutover began (and may have failed later). */
  cutting_over = strcmp (state, "cutover") == 0 ||
                 json_is_string (json_object_get (vm, "originalPowerState"));
  journal_unlock (run->journal);

  if (conversion_state (state)) {
    if (run->mode == RUN_PRECOPY) {
      vj->ok = true;
      return NULL;
    }
    goto convert;
  }
  if (run->plan->conversion_only) { /* the disks sit in the targets: check, convert */
    struct conversion check = { .plan = run->plan,
                                .pvm = vj->pvm,
                                .journal = run->journal,
                                .progress = run->progress,
                                .cancel = &run->cancel,
                                .take_error = take_error };
    if (run->mode == RUN_PRECOPY)
      log_error ("%s: a conversion plan has no precopy rounds: run ferry migrate",
                 vj->label);
    if (run->mode == RUN_PRECOPY || conversion_check (&check) == -1)
      goto fail;
    goto convert;
  }
  if (round == 0 && !cutting_over && inspection_wanted (run->plan) && preflight (vj) == -1)
    goto fail;
  if (run->mode == RUN_PRECOPY) {
    if (cutting_over) {
      log_info ("%s: already cutting over; no precopy round", vj->label);
      vj->ok = true;
      return NULL;
    }
    if (do_round (vj, round + 1, false) == -1)
      goto fail;
    set_state (vj, "precopy-wait", round + 1);
    finish_vm (vj, true);
    return NULL;
  }
  if (run->plan->warm && !cutting_over) {
    while (!cutover_due (run) || round == 0) {
      double started = time_monotonic ();
      if (do_round (vj, ++round, false) == -1)
        goto fail;
      set_state (vj, "precopy-wait", round);
      test_stop ("precopy-wait", round);
      wait_round (run, started + run->plan->precopy_interval);
      if (cancelled (run))
        goto fail;
    }
  }
  set_state (vj, "cutover", round);
  if (shut_down (vj) == -1)
    goto fail;
  journal_lock (run->journal);
  vm = journal_vm (run->journal, vj->label);
  double predicted = journal_predict_final_round (vm, (double)time (NULL));
  json_object_set_new (vm, "predictedFinalRoundSeconds",
                       predicted >= 0 ? json_real (predicted) : json_null ());
  journal_unlock (run->journal);
  if (do_round (vj, ++round, true) == -1)
    goto fail;
  set_state (vj, "verified", round);

convert:;
  struct conversion c = { .plan = run->plan,
                          .pvm = vj->pvm,
                          .journal = run->journal,
                          .progress = run->progress,
                          .cancel = &run->cancel,
                          .take_error = take_error };
  finish_vm (vj, conversion_vm (&c) == 0);
  return NULL;

fail:
  finish_vm (vj, false);
  return NULL;
}

static void *
signal_thread (void *arg)
{
  struct run *run = arg;
  sigset_t set;
  int sig;

  sigemptyset (&set);
  sigaddset (&set, SIGTERM);
  sigaddset (&set, SIGINT);
  sigaddset (&set, SIGHUP);
  sigaddset (&set, SIGUSR1); /* our own wake-up at the end of the run */
  for (;;) {
    if (sigwait (&set, &sig) != 0 || sig == SIGUSR1)
      return NULL;
    log_info ("%s: stopping: in-flight work is aborted, ferry's snapshots are removed; "
              "ferry migrate resumes",
              strsignal (sig));
    run->cancel = sig;
    sched_wake (run->sched);
    pthread_mutex_lock (&run->lock);
    pthread_cond_broadcast (&run->cond);
    pthread_mutex_unlock (&run->lock);
  }
}

int
migrate_run (struct plan *plan, enum run_mode mode, struct progress *progress)
{
  struct run run = { .plan = plan, .mode = mode, .progress = progress };
  struct vm_job *jobs = NULL;
  const char **names = NULL;
  sigset_t set, old;
  pthread_t sigthr;
  int failed = 0;
  bool final_failure = false; /* a VM failed for a reason retrying will not cure */

  pthread_mutex_init (&run.lock, NULL);
  pthread_cond_init (&run.cond, NULL);
  log_progress = progress;
  log_set_error_handler (capture_error);
  log_set_info_handler (capture_info);
  log_set_warning_handler (capture_warning);
  run.journal = journal_open (plan->state_dir, plan->name, true);
  run.sched = sched_new (plan->max_per_host, plan->max_per_datastore);
  jobs = calloc (plan->vms.len, sizeof *jobs);
  names = calloc (plan->vms.len, sizeof *names);
  if (run.journal == NULL || run.sched == NULL || jobs == NULL || names == NULL) {
    /* Another ferry runs the plan: a later attempt will find it free. */
    failed = run.journal == NULL && journal_runner (plan->state_dir) != 0 ? EXIT_RETRY : 1;
    goto out;
  }
  /* Signals go to the signal thread only; the threads below inherit the mask. */
  sigemptyset (&set);
  sigaddset (&set, SIGTERM);
  sigaddset (&set, SIGINT);
  sigaddset (&set, SIGHUP);
  sigaddset (&set, SIGUSR1);
  pthread_sigmask (SIG_BLOCK, &set, &old);
  pthread_create (&sigthr, NULL, signal_thread, &run);

  for (size_t i = 0; i < plan->vms.len; i++) {
    jobs[i] = (struct vm_job){ .run = &run,
                               .pvm = &plan->vms.ptr[i],
                               .label = plan_vm_label (&plan->vms.ptr[i]) };
    names[i] = jobs[i].label;
    journal_lock (run.journal);
    journal_vm (run.journal, names[i]);
    journal_unlock (run.journal);
    if (pthread_create (&jobs[i].thread, NULL, vm_thread, &jobs[i]) != 0) {
      log_error ("%s: pthread_create: %m", names[i]);
      jobs[i].thread = 0;
    }
  }
  for (size_t i = 0; i < plan->vms.len; i++) {
    if (jobs[i].thread)
      pthread_join (jobs[i].thread, NULL);
    if (!jobs[i].ok) {
      failed = 1;
      if (!jobs[i].retryable)
        final_failure = true;
    }
  }
  pthread_kill (sigthr, SIGUSR1);
  pthread_join (sigthr, NULL);
  pthread_sigmask (SIG_SETMASK, &old, NULL);

  journal_lock (run.journal);
  if (journal_write_results (run.journal, names, plan->vms.len) == -1)
    failed = 1;
  journal_unlock (run.journal);
  if (!cancelled (&run) && (mode == RUN_CUTOVER || mode == RUN_MIGRATE)) {
    CLEANUP_FREE char *req = journal_path (plan->state_dir, "cutover");
    if (req && !failed)
      unlink (req);
  }
  /* Cancelled (a signal, ferry cancel) or failed only for reasons that may pass (the
   * network, the server): a retry resumes from the journal.
   */
  if (cancelled (&run) || (failed && !final_failure))
    failed = EXIT_RETRY;

out:
  free (last_error);
  last_error = NULL;
  free (names);
  free (jobs);
  sched_free (run.sched);
  journal_close (run.journal);
  log_set_error_handler (NULL);
  log_set_info_handler (NULL);
  log_set_warning_handler (NULL);
  pthread_cond_destroy (&run.cond);
  pthread_mutex_destroy (&run.lock);
  return failed;
}
