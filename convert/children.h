/* SPDX-License-Identifier: Apache-2.0 */
/* ferry: child processes of conversion (children.c); internal to libconvert. */
#ifndef FERRY_CONVERT_CHILDREN_H
#define FERRY_CONVERT_CHILDREN_H

#include <stdbool.h>
#include <sys/types.h>

#include "convert.h"

/* Start ARGV[0] (looked up in PATH) with ENV, stdin /dev/null, stdout/stderr to OUT_FD /
 * ERR_FD (or /dev/null when -1), in a new process group with NEW_GROUP.  -1 reported.
 */
pid_t child_spawn (const char *const *argv, char *const *env, int out_fd, int err_fd,
                   bool new_group);

/* child_spawn in a new process group with convert_child_env (), its stdout and stderr
 * into two new pipes whose read ends (close-on-exec) are *OUT_FD and *ERR_FD.  -1 when
 * it could not start (the pipes are closed then).
 */
pid_t child_spawn_piped (const char *const *argv, int *out_fd, int *err_fd);

/* Run to completion; *OUT and *ERR (when not NULL) get what it printed, *STATUS its exit
 * status (128 + signal when killed).  -1 (reported) only when it could not run.
 */
int child_run (const char *const *argv, char *const *env, char **out, char **err,
               int *status);

/* Run with convert_child_env; -1 reported as "WHAT: TOOL failed (exit N): its stderr"
 * when it fails.
 */
int child_check (const char *what, const char *const *argv, char **out);

/* A TCP port on 127.0.0.1 free at the time of the call. */
int free_local_port (void);

#endif /* FERRY_CONVERT_CHILDREN_H */
