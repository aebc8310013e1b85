/* SPDX-License-Identifier: Apache-2.0 */
/* ferry: cleanup attribute helpers (see cleanup.h). */
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "cleanup.h"

void
cleanup_free (void *ptr)
{
  free (*(void **)ptr);
}

void
cleanup_fclose (FILE **fp)
{
  if (*fp)
    fclose (*fp);
}

void
cleanup_close (int *fd)
{
  if (*fd >= 0)
    close (*fd);
}

void
cleanup_unlock (pthread_mutex_t **mutex)
{
  pthread_mutex_unlock (*mutex);
}
