/* SPDX-License-Identifier: Apache-2.0 */
/* ferry: per-host and per-datastore transfer slots (sched.h). */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "common/vector.h"
#include "sched.h"

struct counter {
  char *name;
  unsigned used;
};
DEFINE_VECTOR_TYPE (counter_vector, struct counter);

struct sched {
  pthread_mutex_t lock;
  pthread_cond_t cond;
  unsigned per_host, per_datastore;
  counter_vector hosts, datastores;
};

struct sched *
sched_new (unsigned per_host, unsigned per_datastore)
{
  struct sched *s = calloc (1, sizeof *s);

  if (s == NULL)
    return NULL;
  pthread_mutex_init (&s->lock, NULL);
  pthread_cond_init (&s->cond, NULL);
  s->per_host = per_host;
  s->per_datastore = per_datastore;
  return s;
}

static void
counters_free (counter_vector *v)
{
  for (size_t i = 0; i < v->len; i++)
    free (v->ptr[i].name);
  counter_vector_reset (v);
}

void
sched_free (struct sched *s)
{
  if (s == NULL)
    return;
  counters_free (&s->hosts);
  counters_free (&s->datastores);
  pthread_cond_destroy (&s->cond);
  pthread_mutex_destroy (&s->lock);
  free (s);
}

/* The counter of NAME (created at 0); NULL on ENOMEM. */
static struct counter *
counter (counter_vector *v, const char *name)
{
  for (size_t i = 0; i < v->len; i++)
    if (strcmp (v->ptr[i].name, name) == 0)
      return &v->ptr[i];
  struct counter c = { strdup (name), 0 };
  if (c.name == NULL || counter_vector_append (v, c) == -1) {
    free (c.name);
    return NULL;
  }
  return &v->ptr[v->len - 1];
}

bool
sched_acquire (struct sched *s, const char *host, const char *datastore,
               const volatile sig_atomic_t *cancel)
{
  bool ok = false;

  pthread_mutex_lock (&s->lock);
  for (;;) {
    if (cancel && *cancel)
      break;
    /* Looked up each time: appending may move the vectors. */
    struct counter *h = counter (&s->hosts, host);
    struct counter *d = counter (&s->datastores, datastore);
    if (h == NULL || d == NULL)
      break;
    if (h->used < s->per_host && d->used < s->per_datastore) {
      h->used++;
      d->used++;
      ok = true;
      break;
    }
    pthread_cond_wait (&s->cond, &s->lock);
  }
  pthread_mutex_unlock (&s->lock);
  return ok;
}

void
sched_release (struct sched *s, const char *host, const char *datastore)
{
  pthread_mutex_lock (&s->lock);
  struct counter *h = counter (&s->hosts, host);
  struct counter *d = counter (&s->datastores, datastore);
  if (h && h->used > 0)
    h->used--;
  if (d && d->used > 0)
    d->used--;
  pthread_cond_broadcast (&s->cond);
  pthread_mutex_unlock (&s->lock);
}

void
sched_wake (struct sched *s)
{
  pthread_mutex_lock (&s->lock);
  pthread_cond_broadcast (&s->cond);
  pthread_mutex_unlock (&s->lock);
}
