/* SPDX-License-Identifier: Apache-2.0 */
/* ferry: ferry kube — the Kubernetes objects that run a plan on a cluster (kube.c). */
#ifndef FERRY_KUBE_H
#define FERRY_KUBE_H

enum kube_shard_by { SHARD_BY_HOST, SHARD_BY_DATASTORE, SHARD_BY_VM };

struct kube_options {
  enum kube_shard_by shard_by;
  const char *image;     /* NULL: localhost/ferry:latest */
  const char *namespace; /* NULL: none in the objects (kubectl's current one) */
  const char *output;    /* NULL: stdout */
  const char *secret;    /* the Secret's name; NULL: the base name of source.secret */
};

/* "host", "datastore", "vm" -> *BY; -1 if none of them. */
int kube_parse_shard_by (const char *s, enum kube_shard_by *by);

/* Read the plan at PLAN_PATH, learn each VM's host, datastores and disks from the source
 * (read-only, no snapshot) and write the YAML stream.  Exit status: 0, 1 failure.
 */
int kube_run (const char *plan_path, const struct kube_options *opts);

#endif /* FERRY_KUBE_H */
