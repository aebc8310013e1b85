/* SPDX-License-Identifier: Apache-2.0 */
/* ferry: progress of a run — a live display on a terminal, JSON lines otherwise.
 *
 * TTY: one line per active disk and a total line, redrawn in place once a second; log
 * lines are printed above the display (progress_log), never through it.
 * JSON (--progress=json, documented in ferry.pod): one object per line on stdout —
 * "state", "progress" (per active disk, once a second), "round" and "done" events.
 *
 * THREAD MODEL: any thread; one mutex.  A display thread redraws (TTY) or emits progress
 * lines (JSON) every second while the run lasts.
 */
#ifndef FERRY_PROGRESS_H
#define FERRY_PROGRESS_H

#include <stdbool.h>
#include <stdint.h>

#include <jansson.h>

enum progress_mode { PROGRESS_NONE, PROGRESS_TTY, PROGRESS_JSON };

struct progress;
struct progress_disk;

struct progress *progress_new (enum progress_mode mode);
void progress_free (struct progress *p);

/* A disk transfer starts: TOTAL bytes to fetch in ROUND. */
struct progress_disk *progress_disk_start (struct progress *p, const char *vm,
                                           const char *disk, unsigned round,
                                           uint64_t total);
/* Bytes fetched so far (never less than before) and known-zero bytes skipped. */
void progress_disk_update (struct progress_disk *d, uint64_t done, uint64_t zero_bytes);
void progress_disk_end (struct progress_disk *d);

/* An event: EVENT is a JSON object ("event" and "time" are added); on a terminal (or with
 * no progress) TEXT is printed instead, if not NULL.  Steals EVENT.
 */
void progress_event (struct progress *p, json_t *event, const char *text);

/* For metrics: each disk transfer running now and the last one of each disk that ended
 * (ACTIVE false), then each VM as the events described it; called with the progress
 * lock held (the callbacks must not call back into progress).
 */
struct progress_info {
  const char *vm, *disk;
  unsigned round;
  uint64_t done, total, zero_bytes;
  double rate; /* bytes/s over the transfer */
  bool active;
};
struct progress_vm {
  const char *name;
  const char *state; /* the last state event's (a static string) */
  unsigned round;
  double predicted_downtime; /* seconds, from the last round event */
  double change_rate;        /* bytes/s, from the last round event */
};
void progress_foreach (struct progress *p,
                       void (*disk_fn) (void *data, const struct progress_info *disk),
                       void (*vm_fn) (void *data, const struct progress_vm *vm),
                       void *data);

/* A log line, printed above the live display. */
void progress_log (struct progress *p, const char *msg);

#endif /* FERRY_PROGRESS_H */
