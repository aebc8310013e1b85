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
#include "kube.h"
#include "plan.h"

/* Where a shard's volumes are in its pod. */
#define PLAN_DIR "/etc/ferry/plan"
#define STATE_DIR "/var/lib/ferry/state"
#define FS_MOUNTS "/var/lib/ferry/pvc"
#define BLOCK_DEVICES "/dev/ferry"

#define DEFAULT_IMAGE "localhost/ferry:latest"
#define METRICS_PORT 8443
#define FERRY_UID 107 /* qemu, as KubeVirt and CDI expect */
#define MiB (UINT64_C (1) << 20)

/* Resources, from measurements (see ferry.pod, ferry kube): ferry migrate of a warm plan,
 * 2 VMs x 2 disks of 512 MiB (1 GiB of data) copied concurrently with the plan's default
 * limits (4 disks in flight, 4 connections each), 2 rounds, against the vSphere double on
 * this machine (/usr/bin/time -v): maximum RSS 60 MiB, 7.1 CPU seconds for 1 GiB.  So
 * one core copies about 150 MB/s, more than one NFC stream gives (about 100 MiB/s per
 * disk); the request is one core and there is no CPU limit (throttling a copy only makes
 * it slower).  Memory: 4 x the measured peak, and a limit with room for the page cache
 * of the writes (which counts against the pod's memory, CDI's cdi#3119).  Conversion
 * adds the libguestfs appliance that virt-v2v starts: tests/integration/
 * test-ferry-convert.sh's cutover (a warm Debian guest converted by virt-v2v-in-place
 * under TCG) peaked at 1.6 GiB RSS (the appliance's qemu, whose guest has 2560 MiB) and
 * took 249 CPU seconds; so 2 GiB more requested, 3 GiB more as the limit.
 */
#define CPU_REQUEST "1"
#define COPY_MEMORY_REQUEST_MIB 256
#define COPY_MEMORY_LIMIT_MIB 1024
#define CONVERT_MEMORY_REQUEST_MIB 2048
#define CONVERT_MEMORY_LIMIT_MIB 3072
/* The state PVC: journal and bitmaps are small (2 KiB per GiB of disk); a conversion's
 * overlays hold what virt-v2v changed (drivers, initramfs: hundreds of MiB), per VM.
 */
#define STATE_BASE_MIB 1024
#define STATE_PER_CONVERTED_VM_MIB 2048
/* Seconds between SIGTERM and SIGKILL: ferry cancels, removes its snapshot (a vSphere
 * consolidation of what the guest wrote during the round) and saves its journal.
 */
#define GRACE_SECONDS 300
#define BACKOFF_LIMIT 6

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
static void
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

static const char *
shard_by_name (enum kube_shard_by by)
{
  return by == SHARD_BY_HOST ? "host" : by == SHARD_BY_DATASTORE ? "datastore" : "vm";
}

/* The labels of an object of SHARD (NULL: the plan's) playing COMPONENT. */
static json_t *
labels (const struct kube *k, const struct kshard *sh, const char *component)
{
  json_t *l =
      json_pack ("{s:s, s:s, s:s, s:s}", "app.kubernetes.io/name", "ferry",
                 "app.kubernetes.io/managed-by", "ferry", "app.kubernetes.io/component",
                 component, "ferry.io/plan", k->plan_label);
  if (sh)
    json_object_set_new (l, "ferry.io/shard", json_string (sh->name));
  return l;
}

/* apiVersion, kind and metadata (name, namespace, labels). */
static json_t *
object (const struct kube *k, const char *api, const char *kind, const char *name,
        json_t *lbls)
{
  json_t *meta = json_pack ("{s:s}", "name", name);

  if (k->opts->namespace)
    json_object_set_new (meta, "namespace", json_string (k->opts->namespace));
  json_object_set_new (meta, "labels", lbls);
  return json_pack ("{s:s, s:s, s:o}", "apiVersion", api, "kind", kind, "metadata", meta);
}

static json_t *
metadata (json_t *obj)
{
  return json_object_get (obj, "metadata");
}

/* Where disk D is in its shard's pod: a directory (the mount) or a block device. */
static char *
pod_path (const struct kdisk *d)
{
  char *p = NULL;

  if (asprintf (&p, "%s/%s", d->block ? BLOCK_DEVICES : FS_MOUNTS, d->claim) == -1)
    return NULL;
  return p;
}

/* The shard's own plan: the user's plan with its VMs only, their targets explicit. */
static json_t *
shard_plan (const struct kube *k, size_t s)
{
  json_t *p = json_deep_copy (k->raw), *vms = json_array ();
  json_t *raw_vms = json_object_get (k->raw, "vms");

  json_object_del (p, "storageMap");
  json_object_set_new (p, "stateDir", json_string (STATE_DIR));
  for (size_t v = 0; v < k->vms.len; v++) {
    const struct kvm *kv = &k->vms.ptr[v];
    if (kv->shard != s)
      continue;
    json_t *vm = json_deep_copy (json_array_get (raw_vms, kv->pvm - k->plan->vms.ptr));
    json_t *targets = json_object ();
    for (size_t i = 0; i < kv->disks.len; i++) {
      CLEANUP_FREE char *path = pod_path (&kv->disks.ptr[i]);
      json_object_set_new (targets, kv->disks.ptr[i].key, json_string (path ? path : ""));
    }
    json_object_set_new (vm, "targets", targets);
    json_array_append_new (vms, vm);
  }
  json_object_set_new (p, "vms", vms);
  return p;
}

static json_t *
service_account (const struct kube *k)
{
  json_t *sa = object (k, "v1", "ServiceAccount", k->base, labels (k, NULL, "importer"));

  /* ferry needs nothing from the Kubernetes API: no Role, no token. */
  json_object_set_new (sa, "automountServiceAccountToken", json_false ());
  return sa;
}

static json_t *
config_map (const struct kube *k, size_t s)
{
  const struct kshard *sh = &k->shards.ptr[s];
  char name[64];
  json_t *plan = shard_plan (k, s), *cm;
  char *text = json_dumps (plan, JSON_INDENT (2));

  object_name (name, k->base, sh->name);
  object_name (name, name, "plan");
  cm = object (k, "v1", "ConfigMap", name, labels (k, sh, "plan"));
  json_object_set_new (cm, "data", json_pack ("{s:s}", "plan.json", text ? text : "{}"));
  free (text);
  json_decref (plan);
  return cm;
}

static void
vm_params (const struct kvm *kv, struct manifest_disk *md, struct manifest_params *mp,
           bool converted)
{
  for (size_t i = 0; i < kv->disks.len; i++) {
    const struct kdisk *d = &kv->disks.ptr[i];
    md[i] = (struct manifest_disk){
      .claim = d->claim,
      .block = d->block,
      .size = d->capacity,
      .source_path = d->file_name,
      .storage_class = d->storage ? d->storage->storage_class : NULL,
      .access_mode = d->storage ? d->storage->access_mode : NULL,
      .fs_overhead = d->storage ? d->storage->fs_overhead : 0,
    };
  }
  *mp = (struct manifest_params){
    .description = kv->desc,
    .name = kv->name,
    .original_name = json_string_value (json_object_get (kv->desc, "name")),
    .original_power_state = kv->power_state,
    .converted = converted,
    .disks = md,
    .nr_disks = kv->disks.len,
  };
}

/* Add the plan's labels (and namespace) to an object made by convert/. */
static void
tie (const struct kube *k, json_t *obj, const struct kshard *sh, const char *component)
{
  json_t *meta = metadata (obj), *l = json_object_get (meta, "labels");
  json_t *add = labels (k, sh, component);

  json_object_update (l, add);
  json_decref (add);
  if (k->opts->namespace)
    json_object_set_new (meta, "namespace", json_string (k->opts->namespace));
}

static json_t *
state_claim (const struct kube *k, size_t s)
{
  const struct kshard *sh = &k->shards.ptr[s];
  unsigned converted = 0;
  char name[64], size[32];
  json_t *pvc;

  for (size_t v = 0; v < k->vms.len; v++)
    if (k->vms.ptr[v].shard == s && !k->plan->skip_guest_conversion)
      converted++;
  snprintf (size, sizeof size, "%uMi",
            STATE_BASE_MIB + converted * STATE_PER_CONVERTED_VM_MIB);
  object_name (name, k->base, sh->name);
  object_name (name, name, "state");
  pvc = object (k, "v1", "PersistentVolumeClaim", name, labels (k, sh, "state"));
  json_object_set_new (pvc, "spec",
                       json_pack ("{s:[s], s:s, s:{s:{s:s}}}", "accessModes",
                                  "ReadWriteOnce", "volumeMode", "Filesystem", "resources",
                                  "requests", "storage", size));
  return pvc;
}

static json_t *
security_context (void)
{
  return json_pack ("{s:b, s:{s:[s]}, s:b, s:{s:s}}", "allowPrivilegeEscalation", 0,
                    "capabilities", "drop", "ALL", "runAsNonRoot", 1, "seccompProfile",
                    "type", "RuntimeDefault");
}

static json_t *
job (const struct kube *k, size_t s)
{
  const struct kshard *sh = &k->shards.ptr[s];
  char name[64], cm[64], state[64], vol[32], mem_req[32], mem_lim[32], port[16];
  json_t *mounts = json_array (), *devices = json_array (), *volumes = json_array ();
  json_t *vms = json_array ();
  bool converting = !k->plan->skip_guest_conversion;
  unsigned extra_req = converting ? CONVERT_MEMORY_REQUEST_MIB : 0;
  unsigned extra_lim = converting ? CONVERT_MEMORY_LIMIT_MIB : 0;
  size_t n = 0;

  object_name (name, k->base, sh->name);
  object_name (cm, name, "plan");
  object_name (state, name, "state");
  json_array_append_new (mounts, json_pack ("{s:s, s:s, s:b}", "name", "plan", "mountPath",
                                            PLAN_DIR, "readOnly", 1));
  json_array_append_new (
      volumes, json_pack ("{s:s, s:{s:s}}", "name", "plan", "configMap", "name", cm));
  json_array_append_new (mounts,
                         json_pack ("{s:s, s:s, s:b}", "name", "secret", "mountPath",
                                    k->plan->secret_dir, "readOnly", 1));
  /* Group-readable: the files are root's, the group fsGroup's (ferry runs as 107). */
  json_array_append_new (volumes,
                         json_pack ("{s:s, s:{s:s, s:i}}", "name", "secret", "secret",
                                    "secretName", k->secret, "defaultMode", 0440));
  json_array_append_new (mounts,
                         json_pack ("{s:s, s:s}", "name", "state", "mountPath", STATE_DIR));
  json_array_append_new (volumes, json_pack ("{s:s, s:{s:s}}", "name", "state",
                                             "persistentVolumeClaim", "claimName", state));
  for (size_t v = 0; v < k->vms.len; v++) {
    const struct kvm *kv = &k->vms.ptr[v];
    if (kv->shard != s)
      continue;
    json_array_append_new (vms, json_string (plan_vm_label (kv->pvm)));
    for (size_t i = 0; i < kv->disks.len; i++) {
      const struct kdisk *d = &kv->disks.ptr[i];
      CLEANUP_FREE char *path = pod_path (d);
      snprintf (vol, sizeof vol, "target-%zu", n++);
      json_array_append_new (d->block ? devices : mounts,
                             json_pack ("{s:s, s:s}", "name", vol,
                                        d->block ? "devicePath" : "mountPath",
                                        path ? path : ""));
      json_array_append_new (volumes,
                             json_pack ("{s:s, s:{s:s}}", "name", vol,
                                        "persistentVolumeClaim", "claimName", d->claim));
    }
  }
  snprintf (port, sizeof port, "%d", METRICS_PORT);
  snprintf (mem_req, sizeof mem_req, "%uMi", COPY_MEMORY_REQUEST_MIB + extra_req);
  snprintf (mem_lim, sizeof mem_lim, "%uMi", COPY_MEMORY_LIMIT_MIB + extra_lim);
  json_t *container = json_pack (
      "{s:s, s:s, s:s, s:[{s:s, s:s}], s:[{s:s, s:i, s:s}], s:{s:{s:s, s:s}, s:{s:s}}, "
      "s:o, s:s, s:s, s:o}",
      "name", "ferry", "image", k->opts->image ? k->opts->image : DEFAULT_IMAGE,
      "imagePullPolicy", "IfNotPresent", "env", "name", "FERRY_METRICS_PORT", "value", port,
      "ports", "name", "metrics", "containerPort", METRICS_PORT, "protocol", "TCP",
      "resources", "requests", "cpu", CPU_REQUEST, "memory", mem_req, "limits", "memory",
      mem_lim, "securityContext", security_context (), "terminationMessagePath",
      "/dev/termination-log", "terminationMessagePolicy", "FallbackToLogsOnError",
      "volumeMounts", mounts);
  if (json_array_size (devices))
    json_object_set_new (container, "volumeDevices", devices);
  else
    json_decref (devices);

  json_t *pod = json_pack (
      "{s:s, s:s, s:b, s:i, s:{s:b, s:i, s:i, s:i, s:s, s:{s:s}}, s:[{s:i, s:s, s:s, "
      "s:{s:{s:s}}}], s:[o], s:o}",
      "restartPolicy", "Never", "serviceAccountName", k->base,
      "automountServiceAccountToken", 0, "terminationGracePeriodSeconds", GRACE_SECONDS,
      "securityContext", "runAsNonRoot", 1, "runAsUser", FERRY_UID, "runAsGroup", FERRY_UID,
      "fsGroup", FERRY_UID, "fsGroupChangePolicy", "OnRootMismatch", "seccompProfile",
      "type", "RuntimeDefault", "topologySpreadConstraints", "maxSkew", 1, "topologyKey",
      "kubernetes.io/hostname", "whenUnsatisfiable", "ScheduleAnyway", "labelSelector",
      "matchLabels", "ferry.io/plan", k->plan_label, "containers", container, "volumes",
      volumes);
  /* Exit 1 (the plan, the data or the conversion is wrong) and 2 (usage) fail the Job at
   * once; anything else (75: the network, the server, a signal; an OOM kill) is retried
   * in a new pod, which resumes from the journal on the state PVC.  A new pod starts
   * only once the old one has ended (podReplacementPolicy Failed, implied by a
   * podFailurePolicy), so that two never hold the same PVCs.  A node drain does not
   * count against the limit.
   */
  json_t *spec =
      json_pack ("{s:i, s:s, s:{s:[{s:s, s:{s:s, s:s, s:[i, i]}}, {s:s, s:[{s:s, s:s}]}]}, "
                 "s:{s:{s:o}, s:o}}",
                 "backoffLimit", BACKOFF_LIMIT, "podReplacementPolicy", "Failed",
                 "podFailurePolicy", "rules", "action", "FailJob", "onExitCodes",
                 "containerName", "ferry", "operator", "In", "values", 1, 2, "action",
                 "Ignore", "onPodConditions", "type", "DisruptionTarget", "status", "True",
                 "template", "metadata", "labels", labels (k, sh, "importer"), "spec", pod);
  json_t *jb = object (k, "batch/v1", "Job", name, labels (k, sh, "importer"));
  char *vm_list = json_dumps (vms, JSON_COMPACT);
  json_object_set_new (metadata (jb), "annotations",
                       json_pack ("{s:s, s:s, s:s}", "ferry.io/shard-by",
                                  shard_by_name (k->opts->shard_by), "ferry.io/shard-key",
                                  sh->key, "ferry.io/vms", vm_list ? vm_list : "[]"));
  free (vm_list);
  json_decref (vms);
  json_object_set_new (jb, "spec", spec);
  return jb;
}

/* The VirtualMachine that ferry writes after conversion, as far as it is known now.  What
 * differs from stateDir/VM/vm.yaml: the devices assume that conversion will succeed
 * (virtio; SATA and e1000e for a raw copy, as there), and runStrategy is Halted, so that
 * applying the whole stream never starts a guest on a disk that is still being copied;
 * the source's strategy is in the annotation ferry.io/run-strategy, for virtctl start
 * after the cutover.
 */
static json_t *
vm_object (const struct kube *k, const struct kvm *kv)
{
  struct manifest_disk *md = calloc (kv->disks.len ? kv->disks.len : 1, sizeof *md);
  struct manifest_network *nets = conversion_networks (k->plan);
  struct manifest_params mp;
  json_t *vm = NULL, *spec;

  if (md && nets) {
    vm_params (kv, md, &mp, !k->plan->skip_guest_conversion);
    mp.networks = nets;
    mp.nr_networks = k->plan->networks.len;
    vm = convert_virtual_machine (&mp); /* NULL: a NIC the networkMap cannot place */
  }
  free (md);
  free (nets);
  if (vm == NULL)
    return NULL;
  spec = json_object_get (vm, "spec");
  json_object_set (json_object_get (metadata (vm), "annotations"), "ferry.io/run-strategy",
                   json_object_get (spec, "runStrategy"));
  json_object_set_new (spec, "runStrategy", json_string ("Halted"));
  tie (k, vm, &k->shards.ptr[kv->shard], "vm");
  return vm;
}

/* Append DOC (consumed); false when it could not be made (reported). */
static bool
emit (FILE *fp, json_t *doc)
{
  if (doc == NULL)
    return false;
  convert_yaml_emit (fp, doc);
  json_decref (doc);
  return true;
}

/* -1 when an object could not be made (reported): nothing is written then. */
static int
write_stream (FILE *fp, const struct kube *k)
{
  bool ok = true;

  fprintf (
      fp,
      "# ferry kube: plan %s in %zu shard(s) by %s, written by ferry.\n"
      "# It needs the Secret \"%s\" (files user, password, cacert or thumbprint, as\n"
      "# the plan's source.secret): kubectl create secret generic %s --from-file=DIR\n"
      "# Then: kubectl apply -f THIS; the VirtualMachines stay Halted until started.\n",
      k->plan->name, k->shards.len, shard_by_name (k->opts->shard_by), k->secret,
      k->secret);
  emit (fp, service_account (k));
  for (size_t s = 0; s < k->shards.len; s++)
    emit (fp, config_map (k, s));
  for (size_t s = 0; s < k->shards.len; s++) {
    for (size_t v = 0; v < k->vms.len; v++) {
      const struct kvm *kv = &k->vms.ptr[v];
      if (kv->shard != s)
        continue;
      struct manifest_disk *md = calloc (kv->disks.len ? kv->disks.len : 1, sizeof *md);
      struct manifest_params mp;
      if (md == NULL)
        continue;
      vm_params (kv, md, &mp, !k->plan->skip_guest_conversion);
      for (size_t i = 0; i < kv->disks.len; i++) {
        json_t *pvc = convert_claim (&mp, &md[i]);
        tie (k, pvc, &k->shards.ptr[s], "target");
        emit (fp, pvc);
      }
      free (md);
    }
    emit (fp, state_claim (k, s));
  }
  for (size_t s = 0; s < k->shards.len; s++)
    emit (fp, job (k, s));
  for (size_t v = 0; v < k->vms.len; v++)
    ok &= emit (fp, vm_object (k, &k->vms.ptr[v]));
  return ok ? 0 : -1;
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
