/* SPDX-License-Identifier: Apache-2.0 */
/* ferry: running a plan (migrate.h).
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
#include "diskcache/source-ops.h"
#include "inspection.h"
#include "journal.h"
#include "migrate.h"
#include "sched.h"
#include "verify.h"

struct run {
  struct plan *plan;
  enum run_mode mode;
  struct journal *journal;
  struct sched *sched;
  struct progress *progress;
  /* The signal that cancels the run (0: none): providers, waits and slots look at it. */
  volatile sig_atomic_t cancel;
  pthread_mutex_t lock;
  pthread_cond_t cond;
};

struct vm_job {
  struct run *run;
  const struct plan_vm *pvm;
  const char *label;
  pthread_t thread;
  bool ok;
  bool retryable; /* failed, but for a reason that retrying later may cure */
};

struct disk_job {
  struct vm_job *vm;
  struct source *src;
  size_t index;
  unsigned round;
  bool final;
  pthread_t thread;
  /* Results. */
  int r;
  char *error;
  bool error_transient;
  char *target;
  uint64_t changed, fetched, zeroed;
  char digest[65];
  struct progress_disk *pd;
  uint64_t to_copy; /* counted in the journal's bytesToCopy while the disk runs */
};

/* Errors: printed above the progress display and kept per thread, so that a VM's result
 * says why it failed in the server's own words.
 */
static struct progress *log_progress;
static __thread bool tracking; /* a VM or disk thread: keeps its first error */
static __thread char *thread_error;
static __thread bool thread_error_transient; /* log_error_is_transient of thread_error */
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
static void
drop_error (void)
{
  free (thread_error);
  thread_error = NULL;
}

/* The first error of this thread (or the last one anywhere), malloc'd; clears it.
 * *TRANSIENT (if not NULL) says whether retrying later may cure it (log.h).
 */
static char *
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

static bool
cancelled (struct run *run)
{
  return run->cancel != 0;
}

/* Journal helpers; called with the journal locked. */
static void
jset_str (json_t *obj, const char *key, const char *value)
{
  json_object_set_new (obj, key, value ? json_string (value) : json_null ());
}

static void
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

/* Add DELTA to the VM's bytes still to fetch in this round (for ferry status). */
static void
add_to_copy (struct disk_job *dj, int64_t delta)
{
  struct journal *j = dj->vm->run->journal;

  journal_lock (j);
  json_t *vm = journal_vm (j, dj->vm->label);
  json_int_t now = json_integer_value (json_object_get (vm, "bytesToCopy")) + delta;
  json_object_set_new (vm, "bytesToCopy", json_integer (now > 0 ? now : 0));
  journal_save (j);
  journal_unlock (j);
}

static void
progress_cb (void *data, uint64_t done, uint64_t total)
{
  struct disk_job *dj = data;

  if (dj->pd == NULL) {
    const struct provider_disk *d = source_disk (dj->src, dj->index);
    dj->pd = progress_disk_start (dj->vm->run->progress, dj->vm->label, d->key, dj->round,
                                  total);
    dj->to_copy = total;
    add_to_copy (dj, total);
  }
  progress_disk_update (dj->pd, done, 0);
  if (total > 0 && done >= total / 2)
    test_stop ("fill", dj->round);
}

/* The host whose transfers a disk of SRC counts against. */
static const char *
host_of (struct source *src)
{
  return source_vm (src)->host ? source_vm (src)->host : "host";
}

/* The metadata file of a disk's cache: stateDir/VM/KEY.dcache. */
static char *
meta_path (struct run *run, const char *label, const char *key)
{
  CLEANUP_FREE char *dir = journal_path (run->plan->state_dir, label);
  char *p;

  if (dir == NULL || (mkdir (dir, 0700) == -1 && errno != EEXIST)) {
    log_error ("%s: %m", dir ? dir : run->plan->state_dir);
    return NULL;
  }
  if (asprintf (&p, "%s/%s.dcache", dir, key) == -1)
    return NULL;
  return p;
}

static void *
disk_thread (void *arg)
{
  struct disk_job *dj = arg;
  struct run *run = dj->vm->run;
  const struct provider_disk *d = source_disk (dj->src, dj->index);
  const char *host = host_of (dj->src);
  struct dcache_disk_ref ref = { dj->src, dj->index };
  struct dcache_params p = { 0 };
  struct dcache_stats st;
  struct dcache *c = NULL;
  enum target_kind kind;
  CLEANUP_FREE char *meta = NULL;
  CLEANUP_FREE char *why = NULL;
  bool slot = false;

  tracking = true;
  dj->r = -1;
  if (plan_resolve_target (run->plan, dj->vm->pvm, dj->index, d->key, d->datastore,
                           &dj->target, &kind, &why) == -1) {
    log_error ("%s disk %s: %s", dj->vm->label, d->key, why ? why : "out of memory");
    goto out;
  }
  meta = meta_path (run, dj->vm->label, d->key);
  if (meta == NULL)
    goto out;
  slot = sched_acquire (run->sched, host, d->datastore, &run->cancel);
  if (!slot) {
    log_error ("%s disk %s: cancelled", dj->vm->label, d->key);
    goto out;
  }
  p.image = dj->target;
  p.meta = meta;
  dcache_params_from_source (&p, dj->src, dj->index);
  c = dcache_open (&p, &dcache_source_adapter, &ref);
  if (c == NULL)
    goto out;
  dcache_get_stats (c, &st);
  dj->changed = st.valid_bytes == 0 ? source_data_bytes (dj->src, dj->index, 0, d->capacity)
                                    : st.invalidated_bytes;
  if (dcache_fill (c, run->plan->connections_per_disk, progress_cb, dj) == -1)
    goto out;
  if (dj->final && dcache_digest (c, dj->digest, sizeof dj->digest) == -1)
    goto out;
  dcache_get_stats (c, &st);
  dj->fetched = st.fetched_bytes;
  dj->zeroed = st.zeroed_bytes;
  progress_disk_update (dj->pd, st.fetched_bytes, st.zeroed_bytes);
  dj->r = 0;

out:
  if (c && dcache_close (c) == -1)
    dj->r = -1;
  if (slot)
    sched_release (run->sched, host, d->datastore);
  progress_disk_end (dj->pd);
  if (dj->to_copy)
    add_to_copy (dj, -(int64_t)dj->to_copy);
  if (dj->r == -1)
    dj->error = take_error_ex ("the copy failed", &dj->error_transient);
  drop_error ();
  return NULL;
}

/* Verify the final round's copy of each disk while the snapshot still exists. */
static int
verify_disks (struct vm_job *vj, struct source *src, struct disk_job *djs, size_t n,
              json_t *disks)
{
  struct run *run = vj->run;
  int r = 0;

  for (size_t i = 0; i < n; i++) {
    struct disk_job *dj = &djs[i];
    const struct provider_disk *d = source_disk (src, i);
    char target[65] = "";
    uint64_t blocks = 0, mismatches = 0;

    const char *host = host_of (src);
    bool sampled;

    test_stop ("verify", dj->round);
    if (verify_digest (dj->target, d->capacity, target, &run->cancel) == -1) {
      r = -1;
      continue;
    }
    /* The sample reads the source: within the host's and the datastore's limits. */
    if (!sched_acquire (run->sched, host, d->datastore, &run->cancel)) {
      log_error ("%s disk %s: cancelled", vj->label, d->key);
      r = -1;
      continue;
    }
    sampled = verify_sample (src, i, dj->target, run->plan->verify_sample_percent, &blocks,
                             &mismatches) == 0;
    sched_release (run->sched, host, d->datastore);
    if (!sampled) {
      r = -1;
      continue;
    }
    journal_lock (run->journal);
    json_t *jd = json_object_get (disks, d->key);
    json_object_set_new (jd, "digest",
                         json_pack ("{s:s, s:s}", "source", dj->digest, "target", target));
    json_object_set_new (jd, "verifySample",
                         json_pack ("{s:I, s:I}", "blocks", (json_int_t)blocks,
                                    "mismatches", (json_int_t)mismatches));
    journal_unlock (run->journal);
    if (strcmp (dj->digest, target) != 0) {
      log_error ("%s disk %s: the target %s does not hold what was copied: digest %s, "
                 "source side %s",
                 vj->label, d->key, dj->target, target, dj->digest);
      r = -1;
    }
    if (mismatches) {
      log_error ("%s disk %s: %" PRIu64 " of %" PRIu64 " sampled blocks differ from the "
                 "source",
                 vj->label, d->key, mismatches, blocks);
      r = -1;
    }
  }
  return r;
}

/* Record a finished round and the prediction of a cutover's downtime. */
static void
record_round (struct vm_job *vj, json_t *vm, unsigned round, struct disk_job *djs, size_t n,
              double seconds, double fill_seconds, double snap_time)
{
  uint64_t changed = 0, fetched = 0, zeroed = 0;
  json_t *prev_time = json_object_get (vm, "lastSnapshotTime");
  double since = json_is_number (prev_time) ? snap_time - json_number_value (prev_time) : 0;
  double change_rate = 0, fetch_rate, predicted;
  char text[512];

  for (size_t i = 0; i < n; i++) {
    changed += djs[i].changed;
    fetched += djs[i].fetched;
    zeroed += djs[i].zeroed;
  }
  if (round > 1 && since > 0)
    change_rate = changed / since;
  fetch_rate = fill_seconds > 0 && fetched > 0 ? fetched / fill_seconds : 0;
  json_array_append_new (json_object_get (vm, "rounds"),
                         json_pack ("{s:i, s:I, s:I, s:I, s:f, s:f}", "round", (int)round,
                                    "bytesChanged", (json_int_t)changed, "bytesFetched",
                                    (json_int_t)fetched, "zeroBytes", (json_int_t)zeroed,
                                    "seconds", seconds, "changeRate", change_rate));
  json_object_set_new (vm, "lastSnapshotTime", json_real (snap_time));
  json_object_set_new (vm, "changeRate", json_real (change_rate));
  json_object_set_new (vm, "fetchRate", json_real (fetch_rate));
  json_object_set_new (vm, "roundOverheadSeconds", json_real (seconds - fill_seconds));
  /* A cutover now: the shutdown (as measured, once known) and a final round. */
  predicted = journal_predict_final_round (vm, (double)time (NULL)) +
              json_number_value (json_object_get (vm, "shutdownSeconds"));
  json_object_set_new (vm, "predictedDowntimeSeconds", json_real (predicted));
  snprintf (text, sizeof text,
            "ferry: %s: round %u: %" PRIu64 " bytes changed, %" PRIu64
            " fetched in %.1f s; "
            "change rate %.0f B/s; predicted downtime of a cutover now %.1f s",
            vj->label, round, changed, fetched, seconds, change_rate, predicted);
  progress_event (vj->run->progress,
                  json_pack ("{s:s, s:s, s:i, s:I, s:I, s:f, s:f, s:f}", "event", "round",
                             "vm", vj->label, "round", (int)round, "bytesChanged",
                             (json_int_t)changed, "bytesFetched", (json_int_t)fetched,
                             "seconds", seconds, "changeRate", change_rate,
                             "predictedDowntimeSeconds", predicted),
                  text);
}

/* RHV reports changes only for disks with incremental backup; without it a warm plan
 * would copy every block in every round.  Say so before a backup is made.
 */
static int
check_incremental (struct vm_job *vj)
{
  struct source_config cfg = plan_source_config (vj->run->plan, vj->pvm);
  struct source *src;
  int r = 0;

  cfg.metadata_only = true;
  src = source_open (&cfg);
  if (src == NULL)
    return -1;
  if (!source_vm (src)->change_tracking) {
    source_enable_change_tracking (src); /* changes nothing; names the disks */
    r = -1;
  }
  source_close (src);
  return r;
}

/* One round; see migrate.h.  With FINAL, verify before the snapshot goes. */
static int
do_round (struct vm_job *vj, unsigned round, bool final)
{
  struct run *run = vj->run;
  struct source_config cfg = plan_source_config (run->plan, vj->pvm);
  char purpose[512];
  struct source *src;
  struct disk_job *djs = NULL;
  size_t n = 0;
  double t0 = time_monotonic (), t_fill, t_filled, snap_time, verify_seconds = 0;
  int r = -1;

  snprintf (purpose, sizeof purpose, "%s/%s round %u", run->plan->name, vj->label, round);
  cfg.snapshot = "create";
  cfg.purpose = purpose;
  cfg.stop = &run->cancel;
  /* Providers whose point in time is a backup since a checkpoint (RHV) start from the
   * one the targets hold; vSphere's snapshots need none.
   */
  journal_lock (run->journal);
  json_t *held = json_object_iter_value (
      json_object_iter (json_object_get (journal_vm (run->journal, vj->label), "disks")));
  CLEANUP_FREE char *since =
      json_is_string (json_object_get (held, "changeId"))
          ? strdup (json_string_value (json_object_get (held, "changeId")))
          : NULL;
  journal_unlock (run->journal);
  cfg.checkpoint = since;
  journal_lock (run->journal);
  json_object_set_new (journal_vm (run->journal, vj->label), "bytesToCopy",
                       json_integer (0));
  journal_unlock (run->journal);
  set_state (vj, final ? "cutover" : "copying", round);
  if (cancelled (run))
    return -1;
  if (run->plan->warm && strcmp (run->plan->source_type, "ovirt") == 0 &&
      check_incremental (vj) == -1)
    return -1;
  src = source_open (&cfg);
  if (src == NULL)
    return -1;
  snap_time = (double)time (NULL);
  journal_lock (run->journal);
  json_t *vm = journal_vm (run->journal, vj->label);
  const struct source_vm *sv = source_vm (src);
  json_object_set_new (vm, "snapshot",
                       sv->snapshot_id ? json_pack ("{s:s, s:s?}", "moref", sv->snapshot_id,
                                                    "name", sv->snapshot_name)
                                       : json_null ());
  jset_str (vm, "sourceId", sv->id);
  jset_str (vm, "sourceName", sv->name);
  journal_save (run->journal);
  journal_unlock (run->journal);
  test_stop ("snapshot-created", round);

  n = source_disk_count (src);
  djs = calloc (n, sizeof *djs);
  if (djs == NULL)
    goto release;
  t_fill = time_monotonic ();
  for (size_t i = 0; i < n; i++) {
    djs[i] = (struct disk_job){
      .vm = vj, .src = src, .index = i, .round = round, .final = final
    };
    if (pthread_create (&djs[i].thread, NULL, disk_thread, &djs[i]) != 0) {
      log_error ("%s: pthread_create: %m", vj->label);
      n = i;
      goto release;
    }
  }
  r = 0;
  for (size_t i = 0; i < n; i++) {
    pthread_join (djs[i].thread, NULL);
    if (djs[i].r == -1) {
      r = -1;
      if (thread_error == NULL) {
        thread_error = djs[i].error, djs[i].error = NULL;
        thread_error_transient = djs[i].error_transient;
      }
    }
  }
  t_filled = time_monotonic ();
  /* What conversion and the manifests need, kept so that they need no source. */
  json_t *desc = final && r == 0 ? source_describe (src) : NULL;

  journal_lock (run->journal);
  vm = journal_vm (run->journal, vj->label);
  if (desc)
    json_object_set_new (vm, "description", desc);
  json_t *disks = json_object_get (vm, "disks");
  for (size_t i = 0; i < n; i++) {
    const struct provider_disk *d = source_disk (src, i);
    json_t *jd = json_object_get (disks, d->key);
    if (jd == NULL) {
      jd = json_object ();
      json_object_set_new (disks, d->key, jd);
    }
    json_object_set_new (jd, "index", json_integer (i));
    json_object_set_new (jd, "capacity", json_integer (d->capacity));
    jset_str (jd, "target", djs[i].target);
    if (djs[i].r == 0)
      jset_str (jd, "changeId", d->change_id);
  }
  if (r == 0)
    record_round (vj, vm, round, djs, n, time_monotonic () - t0, t_filled - t_fill,
                  snap_time);
  journal_save (run->journal);
  journal_unlock (run->journal);
  if (r == 0 && final) {
    double tv = time_monotonic ();
    r = verify_disks (vj, src, djs, n, disks);
    verify_seconds = time_monotonic () - tv;
  }

release:
  test_stop ("snapshot-remove", round);
  if (source_release (src) == -1)
    r = -1;
  journal_lock (run->journal);
  vm = journal_vm (run->journal, vj->label);
  json_object_set_new (vm, "snapshot", json_null ());
  if (final) {
    /* The round as predicted (snapshot, fill, release); verification apart. */
    json_object_set_new (vm, "actualFinalRoundSeconds",
                         json_real (time_monotonic () - t0 - verify_seconds));
    json_object_set_new (vm, "verifySeconds", json_real (verify_seconds));
  }
  journal_save (run->journal);
  journal_unlock (run->journal);
  source_close (src);
  for (size_t i = 0; djs && i < n; i++) {
    free (djs[i].error);
    free (djs[i].target);
  }
  free (djs);
  return r;
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
