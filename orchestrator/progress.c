/* SPDX-License-Identifier: Apache-2.0 */
/* ferry: progress display and JSON lines (progress.h). */
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/util.h"
#include "progress.h"

struct progress_disk {
  struct progress *p;
  char *vm, *disk;
  unsigned round;
  uint64_t total, done, zero_bytes;
  double started;
  bool active;
  double ended; /* time_monotonic () at the end, 0 while active */
  struct progress_disk *next;
};

/* What the events said of a VM (for metrics). */
struct progress_vm_entry {
  char *name;
  struct progress_vm info;
  struct progress_vm_entry *next;
};

struct progress {
  enum progress_mode mode;
  pthread_mutex_t lock;
  pthread_cond_t cond;
  bool stop;
  pthread_t thread;
  bool have_thread;
  struct progress_disk *disks; /* active ones, newest first */
  unsigned drawn;              /* lines of the live display on screen */
  /* For metrics: the last transfer of each disk that ended, and what the events said of
   * each VM.
   */
  struct progress_disk *ended;
  struct progress_vm_entry *vms;
};

static void
iso_time (char *buf, size_t len)
{
  struct timespec ts;
  struct tm tm;

  clock_gettime (CLOCK_REALTIME, &ts);
  gmtime_r (&ts.tv_sec, &tm);
  snprintf (buf, len, "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ", tm.tm_year + 1900,
            tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
            (long)(ts.tv_nsec / 1000000) % 1000);
}

static void
human (uint64_t bytes, char *buf, size_t len)
{
  static const char *const units[] = { "B", "KiB", "MiB", "GiB", "TiB" };
  double v = bytes;
  size_t u = 0;

  while (v >= 1024 && u < 4)
    v /= 1024, u++;
  snprintf (buf, len, u ? "%.1f %s" : "%.0f %s", v, units[u]);
}

static double
rate_of (const struct progress_disk *d, double now)
{
  double t = (d->ended ? d->ended : now) - d->started;
  return t > 0 ? d->done / t : 0;
}

/* Called with the lock held. */
static void
clear_display (struct progress *p)
{
  for (; p->drawn > 0; p->drawn--)
    fputs ("\033[1A\033[2K", stderr);
}

static void
draw_display (struct progress *p)
{
  double now = time_monotonic (), rate_sum = 0;
  uint64_t done = 0, total = 0;
  unsigned n = 0;

  for (struct progress_disk *d = p->disks; d; d = d->next) {
    char a[32], b[32], r[32];
    double rate = rate_of (d, now);
    human (d->done, a, sizeof a);
    human (d->total, b, sizeof b);
    human (rate, r, sizeof r);
    fprintf (stderr, "  %-20.20s disk %-6s round %-3u %10s / %-10s %5.1f%% %10s/s", d->vm,
             d->disk, d->round, a, b, d->total ? 100.0 * d->done / d->total : 100.0, r);
    if (rate > 0)
      fprintf (stderr, " ETA %.0f s\n", (d->total - d->done) / rate);
    else
      fputs (" ETA -\n", stderr);
    done += d->done;
    total += d->total;
    rate_sum += rate;
    n++;
  }
  if (n > 0) {
    char a[32], b[32], r[32];
    human (done, a, sizeof a);
    human (total, b, sizeof b);
    human (rate_sum, r, sizeof r);
    fprintf (stderr, "  total: %u disk(s) %s / %s at %s/s, ETA %.0f s\n", n, a, b, r,
             rate_sum > 0 ? (total - done) / rate_sum : 0.0);
    n++;
  }
  p->drawn = n;
  fflush (stderr);
}

static void
emit_json (json_t *obj)
{
  char t[64];
  char *s;

  iso_time (t, sizeof t);
  json_object_set_new (obj, "time", json_string (t));
  s = json_dumps (obj, JSON_COMPACT);
  if (s) {
    fputs (s, stdout);
    fputc ('\n', stdout);
    fflush (stdout);
    free (s);
  }
  json_decref (obj);
}

static void
emit_disk (struct progress_disk *d, double now)
{
  double rate = rate_of (d, now);
  double eta = rate > 0 ? (d->total - d->done) / rate : -1;

  emit_json (json_pack ("{s:s, s:s, s:s, s:i, s:I, s:I, s:I, s:f, s:f}", "event",
                        "progress", "vm", d->vm, "disk", d->disk, "round", (int)d->round,
                        "bytesDone", (json_int_t)d->done, "bytesTotal",
                        (json_int_t)d->total, "zeroBytes", (json_int_t)d->zero_bytes,
                        "rate", rate, "etaSeconds", eta));
}

static void *
display_thread (void *arg)
{
  struct progress *p = arg;

  pthread_mutex_lock (&p->lock);
  while (!p->stop) {
    struct timespec ts;
    clock_gettime (CLOCK_REALTIME, &ts);
    ts.tv_sec += 1;
    pthread_cond_timedwait (&p->cond, &p->lock, &ts);
    if (p->stop)
      break;
    if (p->mode == PROGRESS_TTY) {
      clear_display (p);
      draw_display (p);
    } else {
      double now = time_monotonic ();
      for (struct progress_disk *d = p->disks; d; d = d->next)
        emit_disk (d, now);
    }
  }
  pthread_mutex_unlock (&p->lock);
  return NULL;
}

struct progress *
progress_new (enum progress_mode mode)
{
  struct progress *p = calloc (1, sizeof *p);

  if (p == NULL)
    return NULL;
  p->mode = mode;
  pthread_mutex_init (&p->lock, NULL);
  pthread_cond_init (&p->cond, NULL);
  /* The display thread takes no signals: they belong to the run's signal thread (or its
   * handlers), never to the default action that would end ferry with children running.
   */
  sigset_t all, old;
  sigfillset (&all);
  pthread_sigmask (SIG_BLOCK, &all, &old);
  if (mode != PROGRESS_NONE && pthread_create (&p->thread, NULL, display_thread, p) == 0)
    p->have_thread = true;
  pthread_sigmask (SIG_SETMASK, &old, NULL);
  return p;
}

void
progress_free (struct progress *p)
{
  if (p == NULL)
    return;
  pthread_mutex_lock (&p->lock);
  p->stop = true;
  pthread_cond_broadcast (&p->cond);
  pthread_mutex_unlock (&p->lock);
  if (p->have_thread)
    pthread_join (p->thread, NULL);
  if (p->mode == PROGRESS_TTY)
    clear_display (p);
  while (p->ended) {
    struct progress_disk *d = p->ended;
    p->ended = d->next;
    free (d->vm);
    free (d->disk);
    free (d);
  }
  while (p->vms) {
    struct progress_vm_entry *v = p->vms;
    p->vms = v->next;
    free (v->name);
    free (v);
  }
  pthread_cond_destroy (&p->cond);
  pthread_mutex_destroy (&p->lock);
  free (p);
}

struct progress_disk *
progress_disk_start (struct progress *p, const char *vm, const char *disk, unsigned round,
                     uint64_t total)
{
  struct progress_disk *d = calloc (1, sizeof *d);

  if (d == NULL)
    return NULL;
  d->p = p;
  d->vm = strdup (vm);
  d->disk = strdup (disk);
  d->round = round;
  d->total = total;
  d->started = time_monotonic ();
  pthread_mutex_lock (&p->lock);
  d->next = p->disks;
  p->disks = d;
  if (p->mode == PROGRESS_JSON)
    emit_disk (d, d->started);
  pthread_mutex_unlock (&p->lock);
  return d;
}

void
progress_disk_update (struct progress_disk *d, uint64_t done, uint64_t zero_bytes)
{
  if (d == NULL)
    return;
  pthread_mutex_lock (&d->p->lock);
  if (done > d->done)
    d->done = done;
  if (done > d->total)
    d->total = done;
  d->zero_bytes = zero_bytes;
  pthread_mutex_unlock (&d->p->lock);
}

void
progress_disk_end (struct progress_disk *d)
{
  struct progress *p;

  if (d == NULL)
    return;
  p = d->p;
  pthread_mutex_lock (&p->lock);
  for (struct progress_disk **pp = &p->disks; *pp; pp = &(*pp)->next)
    if (*pp == d) {
      *pp = d->next;
      break;
    }
  if (p->mode == PROGRESS_JSON)
    emit_disk (d, time_monotonic ());
  if (p->mode == PROGRESS_TTY) {
    clear_display (p);
    draw_display (p);
  }
  /* Kept (for metrics) in place of the disk's earlier transfer. */
  d->ended = time_monotonic ();
  for (struct progress_disk **pp = &p->ended; *pp; pp = &(*pp)->next)
    if (strcmp ((*pp)->vm, d->vm) == 0 && strcmp ((*pp)->disk, d->disk) == 0) {
      struct progress_disk *old = *pp;
      *pp = old->next;
      free (old->vm);
      free (old->disk);
      free (old);
      break;
    }
  d->next = p->ended;
  p->ended = d;
  pthread_mutex_unlock (&p->lock);
}

/* The VM's entry, created if new; called with the lock held.  NULL on ENOMEM. */
static struct progress_vm *
vm_entry (struct progress *p, const char *name)
{
  struct progress_vm_entry *v;

  for (v = p->vms; v; v = v->next)
    if (strcmp (v->name, name) == 0)
      return &v->info;
  v = calloc (1, sizeof *v);
  if (v == NULL || (v->name = strdup (name)) == NULL) {
    free (v);
    return NULL;
  }
  v->info.name = v->name;
  v->info.state = "pending";
  v->next = p->vms;
  p->vms = v;
  return &v->info;
}

/* Keep what a state, round or done event says of its VM; called with the lock held. */
static void
note_event (struct progress *p, json_t *event)
{
  static const char *const states[] = { "pending",    "copying",   "precopy-wait",
                                        "cutover",    "verified",  "failed",
                                        "converting", "converted", "conversion-failed" };
  const char *kind = json_string_value (json_object_get (event, "event"));
  const char *vm = json_string_value (json_object_get (event, "vm"));
  const char *state = json_string_value (json_object_get (event, "state"));
  struct progress_vm *v;

  if (kind == NULL || vm == NULL || (v = vm_entry (p, vm)) == NULL)
    return;
  if (state) {
    v->state = "other";
    for (size_t i = 0; i < sizeof states / sizeof states[0]; i++)
      if (strcmp (state, states[i]) == 0)
        v->state = states[i];
  }
  if (json_is_integer (json_object_get (event, "round")))
    v->round = json_integer_value (json_object_get (event, "round"));
  if (strcmp (kind, "round") == 0) {
    v->predicted_downtime =
        json_number_value (json_object_get (event, "predictedDowntimeSeconds"));
    v->change_rate = json_number_value (json_object_get (event, "changeRate"));
  }
}

void
progress_foreach (struct progress *p,
                  void (*disk_fn) (void *, const struct progress_info *),
                  void (*vm_fn) (void *, const struct progress_vm *), void *data)
{
  double now;

  pthread_mutex_lock (&p->lock);
  now = time_monotonic ();
  for (int active = 1; active >= 0; active--)
    for (struct progress_disk *d = active ? p->disks : p->ended; d && disk_fn;
         d = d->next) {
      struct progress_info info = { .vm = d->vm,
                                    .disk = d->disk,
                                    .round = d->round,
                                    .done = d->done,
                                    .total = d->total,
                                    .zero_bytes = d->zero_bytes,
                                    .rate = rate_of (d, now),
                                    .active = active };
      disk_fn (data, &info);
    }
  for (struct progress_vm_entry *v = p->vms; v && vm_fn; v = v->next)
    vm_fn (data, &v->info);
  pthread_mutex_unlock (&p->lock);
}

void
progress_event (struct progress *p, json_t *event, const char *text)
{
  pthread_mutex_lock (&p->lock);
  note_event (p, event);
  if (p->mode == PROGRESS_JSON)
    emit_json (event);
  else {
    json_decref (event);
    if (text) {
      clear_display (p);
      fprintf (stderr, "%s\n", text);
      if (p->mode == PROGRESS_TTY)
        draw_display (p);
      fflush (stderr);
    }
  }
  pthread_mutex_unlock (&p->lock);
}

void
progress_log (struct progress *p, const char *msg)
{
  pthread_mutex_lock (&p->lock);
  clear_display (p);
  fprintf (stderr, "%s\n", msg);
  if (p->mode == PROGRESS_TTY)
    draw_display (p);
  fflush (stderr);
  pthread_mutex_unlock (&p->lock);
}
