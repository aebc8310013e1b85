/* SPDX-License-Identifier: Apache-2.0 */
/* ferry: ferry kube, the parts shared by kube.c (learning the VMs from the source, the
 * shards, the run) and kube-manifest.c (the Kubernetes objects and the YAML stream).
 *
 * THREAD MODEL: one thread; struct kube is filled by kube.c, then only read.
 */
#ifndef FERRY_KUBE_INTERNAL_H
#define FERRY_KUBE_INTERNAL_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include <jansson.h>

#include "common/vector.h"
#include "kube.h"
#include "plan.h"

struct kdisk {
  char *key;
  char *datastore;
  char *file_name;
  uint64_t capacity;
  bool block;
  const struct storage_map_entry *storage; /* NULL: a vms[].targets override only */
  char claim[64];
};
DEFINE_VECTOR_TYPE (kdisk_vector, struct kdisk);

struct kvm {
  const struct plan_vm *pvm;
  char name[64]; /* the VirtualMachine's */
  char *host;
  char *power_state;
  json_t *desc;
  kdisk_vector disks;
  size_t shard;
};
DEFINE_VECTOR_TYPE (kvm_vector, struct kvm);

struct kshard {
  const char *key; /* host moref, datastore or VM label (borrowed) */
  char name[64];   /* DNS-1123, unique among the shards */
};
DEFINE_VECTOR_TYPE (kshard_vector, struct kshard);

struct kube {
  const struct kube_options *opts;
  struct plan *plan;
  json_t *raw; /* the plan file */
  char plan_label[64];
  char base[64];   /* "ferry-PLAN": the ServiceAccount, prefix of the others */
  char secret[64]; /* the Secret's name */
  json_t *claims;  /* claim names given so far (a set) */
  kvm_vector vms;
  kshard_vector shards;
};

/* ---- kube.c ---- */

/* PREFIX-SUFFIX as a DNS-1123 label: when longer than 63, cut and end with 8 hex digits
 * of a hash of the whole, so that names stay unique and deterministic.
 */
void object_name (char out[64], const char *prefix, const char *suffix);
const char *shard_by_name (enum kube_shard_by by);

/* ---- kube-manifest.c ---- */

/* Write the stream of K's objects to FP.  -1 when an object could not be made
 * (reported): nothing is written then.
 */
int write_stream (FILE *fp, const struct kube *k);

#endif /* FERRY_KUBE_INTERNAL_H */
