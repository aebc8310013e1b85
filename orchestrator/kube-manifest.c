/* SPDX-License-Identifier: Apache-2.0 */
/* ferry: ferry kube's objects (kube-internal.h) — the ServiceAccount, each shard's
 * ConfigMap, target and state PVCs and Job, each VM's VirtualMachine, and the YAML stream
 * of them in the order kube.c describes.  The PVCs of the targets and the VirtualMachines
 * come from convert/ (convert_claim, convert_virtual_machine), the generators of
 * vm.yaml too; this file adds the plan's labels and namespace.
 *
 * THREAD MODEL: one thread; every function only reads struct kube.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "common/cleanup.h"
#include "common/log.h"
#include "convert/convert.h"
#include "conversion.h"
#include "kube-internal.h"
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
int
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
