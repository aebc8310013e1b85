/* SPDX-License-Identifier: Apache-2.0 */
/* ferry: cleanup attributes and scoped locks.
 *
 * Variables declared with these attributes are released when they go out of scope, so
 * functions with several exits need no goto chain for plain memory, files and locks.
 */
#ifndef FERRY_CLEANUP_H
#define FERRY_CLEANUP_H

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>

void cleanup_free (void *ptr);
void cleanup_fclose (FILE **fp);
void cleanup_close (int *fd);
void cleanup_unlock (pthread_mutex_t **mutex);

#define CLEANUP_FREE __attribute__ ((cleanup (cleanup_free)))
#define CLEANUP_FCLOSE __attribute__ ((cleanup (cleanup_fclose)))
#define CLEANUP_CLOSE __attribute__ ((cleanup (cleanup_close)))

#define FERRY_CONCAT_(a, b) a##b
#define FERRY_CONCAT(a, b) FERRY_CONCAT_ (a, b)
#define FERRY_UNIQUE(name) FERRY_CONCAT (name, __LINE__)

/* Holds MUTEX until the end of the enclosing scope. */
#define ACQUIRE_LOCK_FOR_CURRENT_SCOPE(mutex)                                              \
  __attribute__ ((cleanup (cleanup_unlock))) pthread_mutex_t *FERRY_UNIQUE (_lock) =       \
      (mutex);                                                                             \
  pthread_mutex_lock (FERRY_UNIQUE (_lock))

#endif /* FERRY_CLEANUP_H */
