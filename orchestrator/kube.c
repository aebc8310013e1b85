/* SPDX-License-Identifier: Apache-2.0 */
/* ferry: ferry kube — a plan as the Kubernetes objects that run it, one Job per shard.
 *
 * ferry kube connects to the source as ferry validate does (read-only, no snapshot) to
 * learn each VM's host, datastores and disks, splits the plan into shards (one per ESXi
 * host by default: the host is the bottleneck, and many medium plans beat one large one)
 * and writes one YAML stream for kubectl apply, in this order:
 *
 *   ServiceAccount   no API access at all (automountServiceAccountToken: false)
 *   ConfigMap        per shard: the shard's own plan.json — its VMs only, every disk's
 *                    target an explicit path where the Job mounts its PVC, stateDir on
 *                    the shard's state PVC, no storageMap (a disk that appears later
 *                    fails clearly instead of landing in the container's own filesystem)
 *   PVC              per disk: the target (convert_claim, the one PVC generator of
 *                    vm.yaml too: CDI's size rule, volumeMode, accessMode, storageClass
 *                    from the storageMap), and per shard a small state PVC (journal,
 *                    caches' metadata, conversion overlays, results)
 *   Job              per shard: the image's entrypoint without arguments runs ferry
 *                    migrate /etc/ferry/plan/plan.json; exactly its shard's PVCs mounted
 *                    (volumeMounts for filesystem, volumeDevices for block), the plan,
 *                    the user's Secret at the path source.secret names
 *   VirtualMachine   per VM: what ferry writes to stateDir/VM/vm.yaml after conversion
 *                    (convert_virtual_machine), as far as it is known before: see
 *                    vm_object for what differs
 *
 * Names are DNS-1123 labels, deterministic (the same plan and source give the same
 * stream) and unique; the labels ferry.io/plan and ferry.io/shard tie every object to
 * its plan and shard.  The user's Secret is referenced, never read into the stream.
 *
 * This file learns the VMs and makes the shards; kube-manifest.c builds the objects and
 * writes the stream.
 */
#include <inttypes.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "common/cleanup.h"
#include "common/log.h"
#include "common/util.h"
#include "convert/convert.h"
#include "conversion.h"
#include "kube-internal.h"
#include "kube.h"
#include "plan.h"

int
kube_parse_shard_by (const char *s, enum kube_shard_by *by)
{
  if (strcmp (s, "host") == 0)
    *by = SHARD_BY_HOST;
  else if (strcmp (s, "datastore") == 0)
    *by = SHARD_BY_DATASTORE;
  else if (strcmp (s, "vm") == 0)
    *by = SHARD_BY_VM;
  else
    return -1;
  return 0;
}

/* PREFIX-SUFFIX as a DNS-1123 label: when longer than 63, cut and end with 8 hex digits
 * of a hash of the whole, so that names stay unique and deterministic.
 */
void
object_name (char out[64], const char *prefix, const char *suffix)
{
  CLEANUP_FREE char *whole = NULL;
  uint32_t h = 2166136261u; /* FNV-1a */
  size_t n;

  if (asprintf (&whole, "%s-%s", prefix, suffix) == -1) {
    convert_dns_name (prefix, out);
    return;
  }
  for (const char *s = whole; *s; s++)
    h = (h ^ (unsigned char)*s) * 16777619u;
  n = strlen (whole);
  if (n <= 63) {
    strcpy (out, whole);
    return;
  }
  n = 54;
  while (n > 0 && whole[n - 1] == '-')
    n--;
  snprintf (out, 64, "%.*s-%08" PRIx32, (int)n, whole, h);
}

/* BASE, or BASE-2, BASE-3 ... if USED has it; added to USED. */
static void
unique_name (char out[64], const char *base, json_t *used)
{
  size_t len = strlen (base);

  strcpy (out, base);
  for (unsigned n = 2; json_object_get (used, out); n++) {
    char suffix[16];
    int k = snprintf (suffix, sizeof suffix, "-%u", n);
    size_t keep = len + k > 63 ? (size_t)(63 - k) : len;
    snprintf (out, 64, "%.*s%s", (int)keep, base, suffix);
  }
  json_object_set_new (used, out, json_true ());
}

/* Learn VM from the source and resolve its targets.  -1 on error (reported). */
static int
learn_vm (struct kube *k, const struct plan_vm *pvm, struct kvm *kv)
{
  const char *label = plan_vm_label (pvm);
  struct source_config cfg = plan_source_config (k->plan, pvm);
  struct source *src;
  int r = -1;

  kv->pvm = pvm;
  conversion_vm_name (k->plan, pvm, kv->name);
  cfg.metadata_only = true;
  src = source_open (&cfg);
  if (src == NULL) {
    log_error ("vm %s: cannot read its configuration from the source", label);
    return -1;
  }
  kv->host = strdup (source_vm (src)->host ? source_vm (src)->host : "unknown-host");
  kv->power_state =
      source_vm (src)->power_state ? strdup (source_vm (src)->power_state) : NULL;
  kv->desc = source_describe (src);
  if (kv->host == NULL || kv->desc == NULL)
    goto out;
  for (size_t i = 0; i < source_disk_count (src); i++) {
    const struct provider_disk *d = source_disk (src, i);
    CLEANUP_FREE char *path = NULL;
    CLEANUP_FREE char *why = NULL;
    enum target_kind kind;
    char claim[64];
    struct kdisk kd = { 0 };

    if (plan_resolve_target (k->plan, pvm, i, d->key, d->datastore, &path, &kind, &why) ==
        -1) {
      log_error ("vm %s: %s", label, why ? why : "out of memory");
      goto out;
    }
    kd.block = kind == TARGET_BLOCK;
    conversion_claim_name (path, kd.block, claim);
    unique_name (kd.claim, claim, k->claims);
    kd.key = strdup (d->key);
    kd.datastore = strdup (d->datastore ? d->datastore : "");
    kd.file_name = d->file_name ? strdup (d->file_name) : NULL;
    kd.capacity = d->capacity;
    kd.storage = plan_storage_for (k->plan, d->datastore);
    if (kd.key == NULL || kd.datastore == NULL || kdisk_vector_append (&kv->disks, kd)) {
      free (kd.key);
      free (kd.datastore);
      free (kd.file_name);
      goto out;
    }
  }
  r = 0;
out:
  source_close (src);
  if (r == -1 && kv->desc == NULL)
    log_error ("vm %s: cannot describe it", label);
  return r;
}

static const char *
shard_key (const struct kube *k, const struct kvm *kv)
{
  switch (k->opts->shard_by) {
    case SHARD_BY_HOST:
      return kv->host;
    case SHARD_BY_DATASTORE: /* the first disk's: a VM is in one shard */
      return kv->disks.len ? kv->disks.ptr[0].datastore : "no-disks";
    default:
      return plan_vm_label (kv->pvm);
  }
}

static int
make_shards (struct kube *k)
{
  json_t *used = json_object ();

  for (size_t v = 0; v < k->vms.len; v++) {
    struct kvm *kv = &k->vms.ptr[v];
    const char *key = shard_key (k, kv);
    size_t s;
    for (s = 0; s < k->shards.len; s++)
      if (strcmp (k->shards.ptr[s].key, key) == 0)
        break;
    if (s == k->shards.len) {
      struct kshard sh = { .key = key };
      char base[64];
      convert_dns_name (key, base);
      unique_name (sh.name, base, used);
      char state[64];
      object_name (state, k->base, sh.name);
      object_name (state, state, "state");
      if (json_object_get (k->claims, state)) {
        log_error ("a target's PVC would be named %s, as the state PVC of shard %s: give "
                   "the target another path",
                   state, sh.name);
        json_decref (used);
        return -1;
      }
      if (kshard_vector_append (&k->shards, sh) == -1) {
        json_decref (used);
        return -1;
      }
    }
    kv->shard = s;
  }
  json_decref (used);
  return 0;
}

const char *
shard_by_name (enum kube_shard_by by)
{
  return by == SHARD_BY_HOST ? "host" : by == SHARD_BY_DATASTORE ? "datastore" : "vm";
}

/* With shards not by host, several pods may read from one host: the plan's per-host
 * limit then holds per pod only.  Said once per host.
 */
static void
warn_shared_hosts (const struct kube *k)
{
  json_t *seen = json_object ();

  for (size_t v = 0; v < k->vms.len && k->opts->shard_by != SHARD_BY_HOST; v++) {
    const struct kvm *kv = &k->vms.ptr[v];
    json_t *first = json_object_get (seen, kv->host);
    if (first == NULL)
      json_object_set_new (seen, kv->host, json_integer (kv->shard));
    else if ((size_t)json_integer_value (first) != kv->shard &&
             json_integer_value (first) >= 0) {
      log_warning ("host %s is read by several Jobs: maxInFlightPerHost (%u) holds in each "
                   "of them, not across them (--shard-by=host keeps it)",
                   kv->host, k->plan->max_per_host);
      json_object_set_new (seen, kv->host, json_integer (-1));
    }
  }
  json_decref (seen);
}

static void
kube_free (struct kube *k)
{
  for (size_t v = 0; v < k->vms.len; v++) {
    struct kvm *kv = &k->vms.ptr[v];
    for (size_t i = 0; i < kv->disks.len; i++) {
      free (kv->disks.ptr[i].key);
      free (kv->disks.ptr[i].datastore);
      free (kv->disks.ptr[i].file_name);
    }
    kdisk_vector_reset (&kv->disks);
    free (kv->host);
    free (kv->power_state);
    json_decref (kv->desc);
  }
  kvm_vector_reset (&k->vms);
  kshard_vector_reset (&k->shards);
  json_decref (k->claims);
  json_decref (k->raw);
  plan_free (k->plan);
}

int
kube_run (const char *plan_path, const struct kube_options *opts)
{
  struct kube k = { .opts = opts };
  json_error_t err;
  char *buf = NULL;
  size_t len = 0;
  FILE *fp;
  int r = 1;

  k.plan = plan_load (plan_path);
  if (k.plan == NULL)
    return 1;
  k.raw = json_load_file (plan_path, JSON_REJECT_DUPLICATES, &err);
  k.claims = json_object ();
  if (k.raw == NULL || k.claims == NULL)
    goto out;
  if (k.plan->secret_dir[0] != '/') {
    log_error ("%s: source.secret %s: ferry kube mounts the Secret there in the pod, so it "
               "must be an absolute path",
               plan_path, k.plan->secret_dir);
    goto out;
  }
  convert_dns_name (k.plan->name, k.plan_label);
  object_name (k.base, "ferry", k.plan_label);
  if (opts->secret) {
    convert_dns_name (opts->secret, k.secret);
    if (strcmp (k.secret, opts->secret) != 0) {
      log_error ("--secret=%s: not a Kubernetes name (lower case letters, digits and '-', "
                 "at most 63)",
                 opts->secret);
      goto out;
    }
  } else {
    CLEANUP_FREE char *copy = strdup (k.plan->secret_dir);
    convert_dns_name (copy ? basename (copy) : "secret", k.secret);
  }
  for (size_t v = 0; v < k.plan->vms.len; v++) {
    struct kvm kv = { 0 };
    if (learn_vm (&k, &k.plan->vms.ptr[v], &kv) == -1 || kvm_vector_append (&k.vms, kv)) {
      for (size_t i = 0; i < kv.disks.len; i++) {
        free (kv.disks.ptr[i].key);
        free (kv.disks.ptr[i].datastore);
        free (kv.disks.ptr[i].file_name);
      }
      kdisk_vector_reset (&kv.disks);
      free (kv.host);
      free (kv.power_state);
      json_decref (kv.desc);
      goto out;
    }
  }
  if (make_shards (&k) == -1)
    goto out;
  warn_shared_hosts (&k);

  fp = open_memstream (&buf, &len);
  if (fp == NULL)
    goto out;
  if (write_stream (fp, &k) == -1) {
    fclose (fp);
    goto out;
  }
  if (fclose (fp) == EOF)
    goto out;
  if (opts->output == NULL) {
    if (fwrite (buf, 1, len, stdout) != len || fflush (stdout) == EOF) {
      log_error ("stdout: %m");
      goto out;
    }
  } else if (write_file_atomic (opts->output, buf, len) == -1) {
    log_error ("%s: %m", opts->output);
    goto out;
  }
  fprintf (stderr, "ferry kube: plan %s: %zu VM(s) in %zu Job(s) by %s%s%s\n", k.plan->name,
           k.vms.len, k.shards.len, shard_by_name (opts->shard_by),
           opts->output ? " -> " : "", opts->output ? opts->output : "");
  r = 0;
out:
  if (k.raw == NULL && k.plan)
    log_error ("%s:%d:%d: %s", plan_path, err.line, err.column, err.text);
  free (buf);
  kube_free (&k);
  return r;
}
