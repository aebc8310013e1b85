/* SPDX-License-Identifier: Apache-2.0 */
/* ferry: the KubeVirt VirtualMachine and the PersistentVolumeClaims of a migrated VM.
 *
 * The objects are built as JSON values and written as one YAML stream (documents
 * separated by "---"), block style with every string double-quoted, which kubectl apply
 * reads as it is.  Labels follow Forklift's (vmID, vmUUID), so that tools that find
 * Forklift's objects find ferry's too.
 *
 * After conversion the VM's disks and NICs are virtio; a raw copy (skipGuestConversion)
 * gets what an unconverted guest boots with, SATA disks and an e1000e NIC, as MTV does.
 */
#include <ctype.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <jansson.h>

#include "common/log.h"
#include "convert.h"

#define MiB (UINT64_C (1) << 20)

void
convert_dns_name (const char *name, char out[64])
{
  size_t n = 0;
  bool dash = false;

  for (const char *s = name ? name : ""; *s && n < 63; s++) {
    unsigned char c = tolower ((unsigned char)*s);
    if ((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9')) {
      if (dash && n > 0) {
        if (n >= 62) /* no room for the separator and a character after it */
          break;
        out[n++] = '-';
      }
      dash = false;
      out[n++] = c;
    } else
      dash = true;
  }
  while (n > 0 && out[n - 1] == '-')
    n--;
  out[n] = '\0';
  if (n == 0)
    strcpy (out, "vm");
}

uint64_t
convert_pvc_size (uint64_t size, bool filesystem, double overhead)
{
  uint64_t aligned = (size + MiB - 1) / MiB * MiB;

  if (!filesystem)
    return aligned;
  /* CDI: the overhead is a share of the whole volume, not of the image. */
  uint64_t whole = (uint64_t)ceil ((double)aligned / (1 - overhead));
  return (whole + MiB - 1) / MiB * MiB;
}

static json_t *
labels (json_t *desc)
{
  const char *id = json_string_value (json_object_get (desc, "moref"));
  const char *uuid = json_string_value (json_object_get (desc, "uuid"));
  json_t *l = json_pack ("{s:s}", "app.kubernetes.io/managed-by", "ferry");

  if (id)
    json_object_set_new (l, "vmID", json_string (id));
  if (uuid)
    json_object_set_new (l, "vmUUID", json_string (uuid));
  return l;
}

/* The networkMap entry for NIC, or NULL. */
static const struct manifest_network *
map_nic (const struct manifest_params *p, json_t *nic)
{
  const char *id = json_string_value (json_object_get (nic, "networkId"));
  const char *net = json_string_value (json_object_get (nic, "network"));

  for (size_t i = 0; i < p->nr_networks; i++) {
    const struct manifest_network *m = &p->networks[i];
    if ((m->source_id && id && strcmp (m->source_id, id) == 0) ||
        (m->source_name && net && strcmp (m->source_name, net) == 0))
      return m;
  }
  return NULL;
}

/* The VM's interfaces and networks: NIC I is netI, with the source's MAC, on the pod
 * network (masquerade) or a Multus network (bridge).  -1 (reported) when a NIC has no
 * mapping or two go to the pod network.
 */
static int
nic_devices (struct manifest_params *p, json_t *interfaces, json_t *networks)
{
  json_t *nics = json_object_get (p->description, "nics"), *nic;
  const char *model = p->converted ? "virtio" : "e1000e";
  const char *pod = NULL;
  size_t i;

  p->nics_left_out = 0;
  json_array_foreach (nics, i, nic)
  {
    const char *mac = json_string_value (json_object_get (nic, "mac"));
    const char *net = json_string_value (json_object_get (nic, "network"));
    const struct manifest_network *m = map_nic (p, nic);
    json_t *iface;
    char name[32];

    snprintf (name, sizeof name, "net%zu", i);
    if (p->nr_networks == 0 && i > 0) { /* the pod network carries one interface */
      p->nics_left_out++;
      continue;
    }
    if (p->nr_networks > 0 && m == NULL) {
      log_error ("%s: NIC %zu (%s) is on network \"%s\" (%s), which the networkMap does "
                 "not map",
                 p->name, i, mac ? mac : "no MAC", net ? net : "?",
                 json_string_value (json_object_get (nic, "networkId"))
                     ? json_string_value (json_object_get (nic, "networkId"))
                     : "no id");
      return -1;
    }
    if (m && strcmp (m->type, "ignored") == 0) {
      p->nics_left_out++;
      continue;
    }
    if (m == NULL || strcmp (m->type, "pod") == 0) {
      if (pod) {
        log_error ("%s: NICs %s and %s both map to the pod network; a VM has at most one "
                   "pod interface (map the other to a multus network)",
                   p->name, pod, mac ? mac : name);
        return -1;
      }
      pod = mac ? mac : name;
      iface = json_pack ("{s:s, s:s, s:{}}", "name", name, "model", model, "masquerade");
      json_array_append_new (networks, json_pack ("{s:s, s:{}}", "name", name, "pod"));
    } else {
      char nad[512];
      snprintf (nad, sizeof nad, "%s/%s", m->namespace, m->name);
      iface = json_pack ("{s:s, s:s, s:{}}", "name", name, "model", model, "bridge");
      json_array_append_new (networks, json_pack ("{s:s, s:{s:s}}", "name", name, "multus",
                                                  "networkName", nad));
    }
    if (mac)
      json_object_set_new (iface, "macAddress", json_string (mac));
    json_array_append_new (interfaces, iface);
  }
  return 0;
}

json_t *
convert_virtual_machine (struct manifest_params *p)
{
  json_t *desc = p->description;
  json_int_t cpus = json_integer_value (json_object_get (desc, "cpus"));
  json_int_t memory_mb = json_integer_value (json_object_get (desc, "memoryMB"));
  const char *firmware = json_string_value (json_object_get (desc, "firmware"));
  const char *power = p->original_power_state;
  json_t *disks = json_array (), *volumes = json_array ();
  json_t *interfaces = json_array (), *networks = json_array ();
  char mem[32];

  for (size_t i = 0; i < p->nr_disks; i++) {
    char name[32];
    snprintf (name, sizeof name, "disk%zu", i);
    json_array_append_new (disks, json_pack ("{s:s, s:i, s:{s:s}}", "name", name,
                                             "bootOrder", (int)i + 1, "disk", "bus",
                                             p->converted ? "virtio" : "sata"));
    json_array_append_new (volumes, json_pack ("{s:s, s:{s:s}}", "name", name,
                                               "persistentVolumeClaim", "claimName",
                                               p->disks[i].claim));
  }
  if (nic_devices (p, interfaces, networks) == -1) {
    json_decref (disks);
    json_decref (volumes);
    json_decref (interfaces);
    json_decref (networks);
    return NULL;
  }
  snprintf (mem, sizeof mem, "%lldMi", (long long)(memory_mb > 0 ? memory_mb : 1024));
  json_t *bootloader = firmware && strcmp (firmware, "efi") == 0
                           ? json_pack ("{s:{s:b}}", "efi", "secureBoot", 0)
                           : json_pack ("{s:{}}", "bios");
  json_t *domain =
      json_pack ("{s:{s:i, s:i, s:i}, s:{s:s}, s:{s:o}, s:{s:s}, s:{s:o, s:o}}", "cpu",
                 "cores", (int)(cpus > 0 ? cpus : 1), "sockets", 1, "threads", 1, "memory",
                 "guest", mem, "firmware", "bootloader", bootloader, "machine", "type",
                 "q35", "devices", "disks", disks, "interfaces", interfaces);
  json_t *vm = json_pack (
      "{s:s, s:s, s:{s:s, s:o, s:{s:s}}, s:{s:s, s:{s:{s:o}, s:{s:o, s:o, s:o}}}}",
      "apiVersion", "kubevirt.io/v1", "kind", "VirtualMachine", "metadata", "name", p->name,
      "labels", labels (desc), "annotations", "ferry.io/source-vm-name",
      p->original_name ? p->original_name : p->name, "spec", "runStrategy",
      power && strcmp (power, "poweredOn") == 0 ? "Always" : "Halted", "template",
      "metadata", "labels", labels (desc), "spec", "domain", domain, "networks", networks,
      "volumes", volumes);
  return vm;
}

json_t *
convert_claim (const struct manifest_params *p, const struct manifest_disk *d)
{
  double overhead = d->fs_overhead > 0 ? d->fs_overhead : CONVERT_FS_OVERHEAD;
  char size[32];
  json_t *pvc;

  snprintf (size, sizeof size, "%" PRIu64 "Mi",
            convert_pvc_size (d->size, !d->block, overhead) / MiB);
  pvc = json_pack ("{s:s, s:s, s:{s:s, s:o, s:{}}, s:{s:[s], s:s, s:{s:{s:s}}}}",
                   "apiVersion", "v1", "kind", "PersistentVolumeClaim", "metadata", "name",
                   d->claim, "labels", labels (p->description), "annotations", "spec",
                   "accessModes", d->access_mode ? d->access_mode : "ReadWriteOnce",
                   "volumeMode", d->block ? "Block" : "Filesystem", "resources", "requests",
                   "storage", size);
  if (d->storage_class)
    json_object_set_new (json_object_get (pvc, "spec"), "storageClassName",
                         json_string (d->storage_class));
  json_t *ann = json_object_get (json_object_get (pvc, "metadata"), "annotations");
  if (d->source_path)
    json_object_set_new (ann, "ferry.io/disk-source", json_string (d->source_path));
  json_object_set_new (ann, "ferry.io/vm", json_string (p->name));
  return pvc;
}

/* YAML emitter: block mappings and sequences, scalars as JSON (a subset of YAML). */
static void
put_scalar (FILE *fp, json_t *v)
{
  char *s = json_dumps (v, JSON_ENCODE_ANY);
  fputs (s ? s : "null", fp);
  free (s);
}

/* A key printed bare: letters, digits and ._/- only, not starting with a digit or one
 * of ._/-, and not a word YAML 1.1 reads as a boolean or null.
 */
static void
put_key (FILE *fp, const char *key)
{
  static const char *const words[] = { "y",   "n",    "yes",   "no",   "on",
                                       "off", "true", "false", "null", NULL };
  bool bare = (key[0] >= 'a' && key[0] <= 'z') || (key[0] >= 'A' && key[0] <= 'Z');

  for (const char *s = key; bare && *s; s++)
    bare =
        strchr ("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._/-", *s);
  for (size_t i = 0; bare && words[i]; i++)
    bare = strcasecmp (key, words[i]) != 0;
  if (bare)
    fputs (key, fp);
  else {
    json_t *k = json_string (key);
    put_scalar (fp, k);
    json_decref (k);
  }
}

static bool
is_empty_container (json_t *v)
{
  return (json_is_object (v) && json_object_size (v) == 0) ||
         (json_is_array (v) && json_array_size (v) == 0);
}

static void emit (FILE *fp, json_t *v, int indent);

/* After "key:" or "- ": a scalar or empty container on the same line, else a newline
 * and the value indented.
 */
static void
emit_value (FILE *fp, json_t *v, int indent)
{
  if (is_empty_container (v)) {
    fputs (json_is_object (v) ? " {}\n" : " []\n", fp);
  } else if (json_is_object (v) || json_is_array (v)) {
    fputc ('\n', fp);
    emit (fp, v, indent);
  } else {
    fputc (' ', fp);
    put_scalar (fp, v);
    fputc ('\n', fp);
  }
}

static void
emit (FILE *fp, json_t *v, int indent)
{
  const char *key;
  json_t *e;
  size_t i;

  if (json_is_object (v)) {
    json_object_foreach (v, key, e)
    {
      fprintf (fp, "%*s", indent, "");
      put_key (fp, key);
      fputc (':', fp);
      emit_value (fp, e, indent + 2);
    }
  } else if (json_is_array (v)) {
    json_array_foreach (v, i, e)
    {
      fprintf (fp, "%*s-", indent, "");
      if (json_is_object (e) && json_object_size (e) > 0) {
        /* "- key: value" with the rest of the mapping aligned under the key. */
        const char *k0;
        json_t *v0;
        bool first = true;
        json_object_foreach (e, k0, v0)
        {
          fprintf (fp, "%*s", first ? 1 : indent + 2, "");
          put_key (fp, k0);
          fputc (':', fp);
          emit_value (fp, v0, indent + 4);
          first = false;
        }
      } else
        emit_value (fp, e, indent + 2);
    }
  } else {
    fprintf (fp, "%*s", indent, "");
    put_scalar (fp, v);
    fputc ('\n', fp);
  }
}

void
convert_yaml_emit (FILE *fp, json_t *doc)
{
  fputs ("---\n", fp);
  emit (fp, doc, 0);
}

char *
convert_manifests (struct manifest_params *p)
{
  char *buf = NULL;
  size_t len = 0;
  FILE *fp = open_memstream (&buf, &len);
  json_t *vm;

  if (fp == NULL) {
    log_error ("%s: manifests: %m", p->name);
    return NULL;
  }
  fprintf (fp, "# KubeVirt objects of %s, written by ferry: kubectl apply -f vm.yaml\n",
           p->name);
  vm = convert_virtual_machine (p);
  if (vm == NULL) {
    fclose (fp);
    free (buf);
    return NULL;
  }
  convert_yaml_emit (fp, vm);
  json_decref (vm);
  for (size_t i = 0; i < p->nr_disks; i++) {
    json_t *pvc = convert_claim (p, &p->disks[i]);
    convert_yaml_emit (fp, pvc);
    json_decref (pvc);
  }
  if (fclose (fp) == EOF) {
    log_error ("%s: manifests: %m", p->name);
    free (buf);
    return NULL;
  }
  return buf;
}
