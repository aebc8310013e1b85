/* SPDX-License-Identifier: Apache-2.0 */
/* ferry: one round of a VM (migrate-internal.h) — open the VM at a new ferry snapshot,
 * copy each disk through diskcache into its target, record the round and its prediction
 * of a cutover's downtime in the journal, verify the final round's copies, then remove
 * the snapshot.
 *
 * THREAD MODEL: do_round runs in its VM's thread and starts one thread per disk, which
 * holds a slot of its host and of its datastore (sched.h) while it copies.  The journal
 * is shared under its lock; a disk thread's first error is handed to the VM thread's
 * error slot when it is joined.
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "common/cleanup.h"
#include "common/log.h"
#include "common/util.h"
#include "diskcache/source-ops.h"
#include "journal.h"
#include "migrate-internal.h"
#include "sched.h"
#include "verify.h"

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
int
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
