/* SPDX-License-Identifier: Apache-2.0 */
/* ferry: guest conversion and the KubeVirt objects of a migrated VM (libconvert.a).
 *
 * Conversion never damages the copy: each target gets a qcow2 overlay whose backing file
 * is the target, qemu-nbd serves the overlays writable on localhost TCP ports, and
 * virt-v2v-in-place converts the guest through them (-i libvirtxml, the XML made from the
 * source VM's description).  Only when virt-v2v succeeds are the overlays committed into
 * the targets; on failure the targets are untouched and the overlays are kept beside
 * virt-v2v's log for diagnosis.  See convert/README.md.
 *
 * The VM's description is what source_describe returns (providers/source.h): name, uuid,
 * cpus, memoryMB, firmware, powerState, disks[] (key, capacity, fileName) and nics[]
 * (type, mac, network).
 *
 * THREAD MODEL: convert_run may run in several threads at once for different VMs (each
 * has its own work directory, ports and children); the KVM probe runs once under a lock.
 * Children get an explicit environment: the variables of ferry's own that the tools need
 * (PATH, HOME, locale, LIBGUESTFS_*, VIRT_V2V_*, ...) plus the libguestfs settings; no
 * secret is ever on their command line.
 */
#ifndef FERRY_CONVERT_H
#define FERRY_CONVERT_H

#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdint.h>

#include <jansson.h>

#define CONVERT_BLOCK_SIZE 65536
/* CDI's default filesystem overhead: the share of a filesystem PVC its filesystem takes. */
#define CONVERT_FS_OVERHEAD 0.055

/* One target disk, in the VM's disk order. */
struct convert_disk {
  const char *target; /* raw image (DIR/disk.img) or block device */
  uint64_t size;      /* the source disk's capacity */
  /* Out: 64 KiB blocks that the conversion changed (committed). */
  uint64_t changed_blocks;
};

struct convert_params {
  json_t *description;        /* source_describe (borrowed) */
  struct convert_disk *disks; /* in the order of description.disks */
  size_t nr_disks;
  const char *work_dir; /* overlays, XML and virt-v2v.log go here */
  /* Called from the calling thread for each progress line (0..100) and stage line. */
  void (*progress) (void *opaque, double percent, const char *stage);
  void *opaque;
  /* When it becomes non-zero (a signal number), virt-v2v is stopped (may be NULL). */
  const volatile sig_atomic_t *cancel;
};

/* Convert in place (see above).  0 when converted and committed; -1 otherwise, every
 * error reported with log_error: the targets unchanged unless virt-v2v had succeeded and a
 * commit failed (the next call finishes it); when virt-v2v itself failed, *ERROR is also
 * set to a malloc'd line with its own words (else NULL).
 */
int convert_run (struct convert_params *p, char **error);

/* Once the caller has durably recorded a conversion's success: forget its commit intent
 * (WORK/commit.json, see run.c).  Until then a later convert_run finishes that commit
 * instead of converting again.
 */
void convert_forget (const char *work_dir);

/* The environment for the children: what they need of ferry's own, plus
 * LIBGUESTFS_BACKEND=direct and LIBGUESTFS_BACKEND_SETTINGS=force_tcg when an appliance
 * cannot start with the defaults (KVM unusable).  Probed once per process; the caller must
 * not free it.
 */
char *const *convert_child_env (void);
/* Whether the probe chose TCG (probes if it has not yet). */
bool convert_uses_tcg (void);

/* libvirt XML (domain type vmware) for DESCRIPTION, disk I served on localhost:PORTS[I].
 * malloc'd, or NULL when the description lacks what it needs (reported).
 */
char *convert_libvirt_xml (json_t *description, const int *ports, size_t nr_ports);

/* The blocks a qcow2 overlay holds itself (from qemu-img map --output=json MAP_JSON):
 * 64 KiB blocks touched by its depth-0 extents.  -1 if MAP_JSON does not parse.
 */
int64_t convert_count_overlay_blocks (const char *map_json);

/* --- the targets of a conversion-only plan (target.c) --- */

/* A VMDK descriptor: its one flat extent (a file name in the descriptor's directory), the
 * size it gives, and its ddb.uuid (NULL when it has none).
 */
struct convert_vmdk {
  char *extent;
  uint64_t size;
  char *uuid;
};

/* Parse descriptor TEXT: createType monolithicFlat or vmfs, exactly one RW FLAT/VMFS
 * extent at offset 0, no parent.  -1 with a malloc'd *WHY (not reported) otherwise.
 */
int convert_vmdk_parse (const char *text, struct convert_vmdk *v, char **why);

struct convert_target {
  char *raw;        /* what the overlay is backed by: disk.img, the flat extent, a device */
  char *descriptor; /* the VMDK descriptor, or NULL */
  char *uuid;       /* the descriptor's ddb.uuid, or NULL */
  uint64_t size;    /* the disk's size as the target holds it */
  bool block;
};

/* What PATH (DIR/disk.img, or a block device with BLOCK) holds: DIR/disk.img when it
 * exists, else the VMDK descriptor DIR is (or the one DIR holds) and its flat extent.
 * -1 with a malloc'd *WHY (not reported).
 */
int convert_find_target (const char *path, bool block, struct convert_target *t,
                         char **why);
void convert_target_free (struct convert_target *t);

/* Whether two disk uuids are the same, whatever their spelling ("60 00 C2 9a ..." in a
 * descriptor, "6000C29a-..." in vSphere).
 */
bool convert_same_uuid (const char *a, const char *b);

/* --- manifests (manifest.c) --- */

/* A DNS-1123 label (lower case, [a-z0-9-], 1..63, alphanumeric at both ends) made from
 * NAME, written to OUT (64 bytes).  Runs of other characters become one '-'; an empty
 * result becomes "vm".
 */
void convert_dns_name (const char *name, char out[64]);

/* The PVC request for a disk of SIZE bytes: CDI's rule for filesystem mode (SIZE rounded
 * up to 1 MiB, divided by 1 - OVERHEAD, rounded up to 1 MiB), else SIZE rounded up to
 * 1 MiB.  In bytes.
 */
uint64_t convert_pvc_size (uint64_t size, bool filesystem, double overhead);

struct manifest_disk {
  const char *claim;       /* PVC name (DNS-1123) */
  bool block;              /* volumeMode Block, else Filesystem */
  uint64_t size;           /* virtual size */
  const char *source_path; /* "[ds] vm/vm.vmdk", an annotation */
  /* From the plan's storageMap: NULL = the cluster's default class, ReadWriteOnce; 0 =
   * CONVERT_FS_OVERHEAD.
   */
  const char *storage_class;
  const char *access_mode;
  double fs_overhead;
};

/* A networkMap entry (Forklift's NetworkMap pair): the source network, by moref or name,
 * and where its NICs go.
 */
struct manifest_network {
  const char *source_id;   /* the network's moref, or NULL */
  const char *source_name; /* its name, or NULL */
  const char *type;        /* "pod", "multus" or "ignored" */
  const char *namespace;   /* multus: the NetworkAttachmentDefinition */
  const char *name;
};

struct manifest_params {
  json_t *description; /* source_describe (borrowed) */
  const char *name;    /* the VM's DNS-1123 name */
  const char *original_name;
  const char *original_power_state; /* poweredOn, poweredOff, ... or NULL */
  bool converted;                   /* virtio devices; else SATA + e1000e (raw copy) */
  struct manifest_disk *disks;
  size_t nr_disks;
  /* The plan's networkMap: every NIC must be mapped (at most one to the pod network).
   * Without one (NULL, 0), the first NIC goes on the pod network and the others are left
   * out.
   */
  const struct manifest_network *networks;
  size_t nr_networks;
  /* Out: NICs left out of the VM (beyond the first without a networkMap, or mapped to
   * "ignored").
   */
  size_t nics_left_out;
};

/* The YAML stream (a VirtualMachine, then one PersistentVolumeClaim per disk), malloc'd;
 * NULL on error (reported).
 */
char *convert_manifests (struct manifest_params *p);

/* The objects of that stream, each a new reference: the VirtualMachine, and the
 * PersistentVolumeClaim of disk D (labelled and annotated for P's VM).  ferry kube writes
 * the same objects (orchestrator/kube.c).
 */
json_t *convert_virtual_machine (struct manifest_params *p);
json_t *convert_claim (const struct manifest_params *p, const struct manifest_disk *d);

/* JSON value -> block-style YAML document (strings double-quoted), appended to FP. */
void convert_yaml_emit (FILE *fp, json_t *doc);

/* --- read-only NBD exports on localhost (nbdserve.c) --- */

/* Reads COUNT bytes at OFFSET of disk DISK into BUF: 0, or -1 (reported). */
typedef int (*convert_read_fn) (void *opaque, size_t disk, void *buf, size_t count,
                                uint64_t offset);
struct convert_nbd;

/* Serve N disks of SIZES bytes read-only, disk I on its own 127.0.0.1 TCP port, the
 * bytes from READ; until convert_nbd_stop.  NULL on error (reported).
 */
struct convert_nbd *convert_nbd_serve (const uint64_t *sizes, size_t n,
                                       convert_read_fn read, void *opaque);
int convert_nbd_port (const struct convert_nbd *s, size_t i);
/* Bytes the clients have read so far. */
uint64_t convert_nbd_bytes_served (struct convert_nbd *s);
/* Close every connection and port (NULL is fine). */
void convert_nbd_stop (struct convert_nbd *s);

/* --- the preflight inspection (inspect.c) --- */

struct convert_inspect_params {
  json_t *description; /* source_describe (borrowed) */
  const int *ports;    /* disk I served read-only on localhost:PORTS[I] */
  size_t nr_disks;
  const char *work_dir; /* inspect.xml, inspection.xml, inspection.log go here */
  /* Let the inspector finish its conversion in its throwaway overlay (the XML's disk
   * estimates, conversion-time failures) instead of stopping it once the conversion
   * begins (open, inspect, free space and the choice of conversion have passed then).
   */
  bool full;
  void (*progress) (void *opaque, double percent, const char *stage);
  void *opaque;
  const volatile sig_atomic_t *cancel;
};

/* Run virt-v2v-inspector -v over the exports: {"convertible": bool, "error": virt-v2v's
 * words when not, "os": {name, distro, major_version, minor_version, product_name, arch,
 * root, ...}, "firmware" (bios, uefi), "full" (it ran to the end), with FULL "disks":
 * [{virtualSize, estimatedAllocated}], "warnings", "seconds", "tcg", "log"}.  NULL when
 * it could not run or was cancelled (reported).
 */
json_t *convert_inspect (struct convert_inspect_params *p);

/* virt-v2v-inspector's XML output -> the "os", "firmware" and "disks" of the result;
 * NULL when it does not parse.
 */
json_t *convert_parse_inspection (const char *xml, size_t len);

#endif /* FERRY_CONVERT_H */
