/* SPDX-License-Identifier: Apache-2.0 */
/* ferry: vSphere inventory — find a VM, read its disks, snapshots and datacenter path. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/cleanup.h"
#include "common/log.h"
#include "soap.h"

/* Backings that have a -flat extent and carry a changeId. */
static const char *const flat_backings[] = { "VirtualDiskFlatVer2BackingInfo",
                                             "VirtualDiskFlatVer1BackingInfo", NULL };

static bool
is_flat_backing (const char *type)
{
  for (size_t i = 0; flat_backings[i]; i++)
    if (type && strcmp (type, flat_backings[i]) == 0)
      return true;
  return false;
}

int
vs_parse_file_name (const char *file_name, char **datastore, char **path)
{
  const char *close;

  *datastore = *path = NULL;
  if (file_name[0] != '[' || (close = strchr (file_name, ']')) == NULL)
    return -1;
  *datastore = strndup (file_name + 1, close - file_name - 1);
  close++;
  while (*close == ' ')
    close++;
  *path = strdup (close);
  if (*datastore == NULL || *path == NULL || **datastore == '\0' || **path == '\0') {
    free (*datastore);
    free (*path);
    *datastore = *path = NULL;
    return -1;
  }
  return 0;
}

int
vs_parse_disks (xmlNode *devices, disk_vector *disks)
{
  for (xmlNode *d = xml_child (devices, NULL); d; d = xml_next (d, NULL)) {
    CLEANUP_FREE char *type = xml_type (d);
    CLEANUP_FREE char *backing_type = NULL;
    struct provider_disk disk = { 0 };
    xmlNode *backing;
    uint64_t kb;

    if (type == NULL || strcmp (type, "VirtualDisk") != 0)
      continue;
    backing = xml_child (d, "backing");
    backing_type = xml_type (backing);
    disk.key = xml_child_text (d, "key");
    disk.label = xml_child_text (xml_child (d, "deviceInfo"), "label");
    disk.file_name = xml_child_text (backing, "fileName");
    disk.uuid = xml_child_text (backing, "uuid");
    disk.change_id = xml_child_text (backing, "changeId");
    /* A backing with a parent is a snapshot delta (or a linked clone): its flat file
     * holds only what changed above the parent.
     */
    disk.delta = xml_child (backing, "parent") != NULL;
    if (disk.change_id && disk.change_id[0] == '\0') {
      free (disk.change_id);
      disk.change_id = NULL;
    }
    if (!xml_child_u64 (d, "capacityInBytes", &disk.capacity) || disk.capacity == 0) {
      if (xml_child_u64 (d, "capacityInKB", &kb))
        disk.capacity = kb * 1024;
    }
    if (disk.key == NULL || disk.file_name == NULL) {
      log_error ("a VirtualDisk without key or backing fileName");
      provider_disk_free (&disk);
      return -1;
    }
    if (!is_flat_backing (backing_type)) {
      log_error ("disk %s (%s): backing %s is not a flat disk that the datastore can serve "
                 "(vSAN, vVol, RDM and sparse disks are not supported)",
                 disk.key, disk.file_name, backing_type ? backing_type : "of unknown type");
      provider_disk_free (&disk);
      return -1;
    }
    CLEANUP_FREE char *path = NULL;
    if (vs_parse_file_name (disk.file_name, &disk.datastore, &path) == -1) {
      log_error ("disk %s: cannot parse the datastore path %s", disk.key, disk.file_name);
      provider_disk_free (&disk);
      return -1;
    }
    disk.export_name = provider_export_name (disk.key, disk.label);
    if (disk.export_name == NULL || disk_vector_append (disks, disk) == -1) {
      log_error ("disk %s: out of memory", disk.key);
      provider_disk_free (&disk);
      return -1;
    }
  }
  return 0;
}

/* Collect the snapshot tree (VirtualMachineSnapshotTree, recursively). */
static int
collect_snapshots (xmlNode *list, snapshot_vector *v)
{
  for (xmlNode *t = list; t; t = xml_next (t, (const char *)list->name)) {
    struct vs_snapshot snap = {
      .moref = xml_child_text (t, "snapshot"),
      .name = xml_child_text (t, "name"),
      .description = xml_child_text (t, "description"),
    };
    if (snap.moref == NULL || snapshot_vector_append (v, snap) == -1) {
      free (snap.moref);
      free (snap.name);
      free (snap.description);
      return -1;
    }
    xmlNode *children = xml_child (t, "childSnapshotList");
    if (children && collect_snapshots (children, v) == -1)
      return -1;
  }
  return 0;
}

/* Walk parent links from the VM up to its Datacenter; the inventory path is the names of
 * the folders between the root folder and the datacenter, then the datacenter's name.
 */
static char *
find_dc_path (struct vs_session *s, const char *vm_ref, xmlNode *vm_parent)
{
  static const char *const paths[] = { "name", "parent", NULL };
  xmlChar *type = xmlGetNoNsProp (vm_parent, BAD_CAST "type");
  CLEANUP_FREE char *ref = xml_text (vm_parent);
  char *path = NULL;

  /* Up to the datacenter first, then collect names above it. */
  bool in_dc = false;
  for (int depth = 0; ref && type && depth < 64; depth++) {
    xmlDoc *doc;
    xmlNode *obj;
    if (vs_retrieve (s, (const char *)type, ref, paths, &doc, &obj, NULL) == -1)
      break;
    CLEANUP_FREE char *name = xml_text (vs_prop (obj, "name"));
    xmlNode *parent = vs_prop (obj, "parent");
    bool is_dc = strcmp ((const char *)type, "Datacenter") == 0;
    if (is_dc)
      in_dc = true;
    if (in_dc && parent && name) {
      char *p = NULL;
      if (asprintf (&p, "%s%s%s", name, path ? "/" : "", path ? path : "") == -1)
        p = NULL;
      free (path);
      path = p;
    }
    xmlFree (type);
    type = parent ? xmlGetNoNsProp (parent, BAD_CAST "type") : NULL;
    free (ref);
    ref = parent ? xml_text (parent) : NULL;
    xmlFreeDoc (doc);
  }
  if (type)
    xmlFree (type);
  if (!in_dc || path == NULL) {
    log_error ("%s: cannot find the datacenter of the VM; pass datacenter=", vm_ref);
    free (path);
    return NULL;
  }
  return path;
}

/* SearchIndex.FindByInventoryPath: the moref at PATH ("DC0/vm/folder/web01") and its
 * type, or NULL (not an error) when nothing is there.
 */
static char *
find_by_inventory_path (struct vs_session *s, const char *path, char **type)
{
  CLEANUP_FREE char *epath = xml_escape (path);
  CLEANUP_FREE char *args = NULL;
  xmlDoc *doc;
  xmlNode *ret;
  char *ref;

  *type = NULL;
  if (epath == NULL || asprintf (&args, "<inventoryPath>%s</inventoryPath>", epath) == -1)
    return NULL;
  if (soap_call (s, s->server, "FindByInventoryPath", "SearchIndex", s->search_index, args,
                 true, &doc, &ret, NULL) == -1)
    return NULL;
  ref = xml_text (ret);
  if (ref && *ref) {
    xmlChar *t = xmlGetNoNsProp (ret, BAD_CAST "type");
    *type = t ? strdup ((const char *)t) : NULL;
    xmlFree (t);
  } else {
    free (ref);
    ref = NULL;
  }
  xmlFreeDoc (doc);
  return ref;
}

/* A datacenter= the user gave must name a Datacenter, or every /folder read would fail
 * with a bare 404: say so at open, with the VM's own datacenter.
 */
static int
check_datacenter (struct vs_session *s, const char *vm_ref, xmlNode *vm_parent,
                  const char *datacenter)
{
  CLEANUP_FREE char *type = NULL;
  CLEANUP_FREE char *ref = find_by_inventory_path (s, datacenter, &type);
  CLEANUP_FREE char *own = NULL;

  if (ref && type && strcmp (type, "Datacenter") == 0)
    return 0;
  own = find_dc_path (s, vm_ref, vm_parent);
  log_error ("%s: datacenter=%s: %s at that inventory path%s%s%s", vm_ref, datacenter,
             ref ? "not a datacenter" : "no datacenter",
             own ? " (the VM's datacenter is \"" : "", own ? own : "", own ? "\")" : "");
  return -1;
}

/* The VM moref for a name: a container view over all VMs, then their names. */
static char *
find_vm_by_name (struct vs_session *s, const char *name)
{
  CLEANUP_FREE char *args = NULL;
  CLEANUP_FREE char *ename = xml_escape (name);
  CLEANUP_FREE char *view = NULL;
  xmlDoc *doc;
  xmlNode *ret;
  char *found = NULL;
  int matches = 0;

  if (s->view_manager == NULL) {
    log_error ("%s: the server has no ViewManager, use vm=MOREF", s->server);
    return NULL;
  }
  if (asprintf (&args,
                "<container type=\"Folder\">%s</container><type>VirtualMachine</type>"
                "<recursive>true</recursive>",
                s->root_folder) == -1)
    return NULL;
  if (soap_call (s, s->server, "CreateContainerView", "ViewManager", s->view_manager, args,
                 true, &doc, &ret, NULL) == -1)
    return NULL;
  view = xml_text (ret);
  xmlFreeDoc (doc);
  if (view == NULL || *view == '\0') {
    log_error ("%s: CreateContainerView: the server returned no view", s->server);
    return NULL;
  }
  /* What the server sends goes back into requests escaped, like everything else. */
  CLEANUP_FREE char *eview = xml_escape (view);
  free (args);
  args = NULL;
  if (eview == NULL ||
      asprintf (
          &args,
          "<specSet><propSet><type>VirtualMachine</type><pathSet>name</pathSet></propSet>"
          "<objectSet><obj type=\"ContainerView\">%s</obj><skip>true</skip>"
          "<selectSet xsi:type=\"TraversalSpec\"><name>view</name>"
          "<type>ContainerView</type><path>view</path><skip>false</skip></selectSet>"
          "</objectSet></specSet><options></options>",
          eview) == -1)
    return NULL;

  const char *method = "RetrievePropertiesEx";
  CLEANUP_FREE char *cargs = strdup (args);
  while (cargs) {
    if (soap_call (s, s->server, method, "PropertyCollector", s->property_collector, cargs,
                   true, &doc, &ret, NULL) == -1)
      break;
    for (xmlNode *o = xml_child (ret, "objects"); o; o = xml_next (o, "objects")) {
      CLEANUP_FREE char *n = xml_text (vs_prop (o, "name"));
      if (n && ename && strcmp (n, name) == 0) {
        matches++;
        if (found == NULL)
          found = xml_child_text (o, "obj");
      }
    }
    CLEANUP_FREE char *token = xml_child_text (ret, "token");
    CLEANUP_FREE char *etoken = token ? xml_escape (token) : NULL;
    xmlFreeDoc (doc);
    free (cargs);
    cargs = NULL;
    if (etoken && asprintf (&cargs, "<token>%s</token>", etoken) == -1)
      cargs = NULL;
    method = "ContinueRetrievePropertiesEx";
  }
  /* Best effort: the view is released with the session anyway. */
  if (soap_call (s, s->server, "DestroyView", "ContainerView", view, NULL, true, &doc, &ret,
                 NULL) == 0)
    xmlFreeDoc (doc);

  if (matches == 0)
    log_error ("%s: no VM named \"%s\"", s->server, name);
  else if (matches > 1) {
    log_error ("%s: %d VMs are named \"%s\"; use vm=MOREF or vm-uuid=", s->server, matches,
               name);
    free (found);
    found = NULL;
  }
  return found;
}

static char *
find_vm_by_uuid (struct vs_session *s, const char *uuid)
{
  CLEANUP_FREE char *euuid = xml_escape (uuid);

  /* BIOS uuid first, then instance uuid, as CDI does. */
  for (int instance = 0; euuid && instance <= 1; instance++) {
    CLEANUP_FREE char *args = NULL;
    xmlDoc *doc;
    xmlNode *ret;
    if (asprintf (&args,
                  "<uuid>%s</uuid><vmSearch>true</vmSearch>"
                  "<instanceUuid>%s</instanceUuid>",
                  euuid, instance ? "true" : "false") == -1)
      return NULL;
    if (soap_call (s, s->server, "FindByUuid", "SearchIndex", s->search_index, args, true,
                   &doc, &ret, NULL) == -1)
      return NULL;
    char *ref = xml_text (ret);
    xmlFreeDoc (doc);
    if (ref && *ref)
      return ref;
    free (ref);
  }
  log_error ("%s: no VM has the BIOS or instance uuid %s", s->server, uuid);
  return NULL;
}

static const char *const vm_paths[] = { "name",
                                        "parent",
                                        "config.uuid",
                                        "config.instanceUuid",
                                        "config.changeTrackingEnabled",
                                        "config.hardware.device",
                                        "config.hardware.numCPU",
                                        "config.hardware.memoryMB",
                                        "config.firmware",
                                        "runtime.host",
                                        "guest.toolsRunningStatus",
                                        "config.guestId",
                                        "runtime.powerState",
                                        "snapshot",
                                        NULL };

/* Ethernet cards are the devices with a MAC address. */
static int
parse_nics (xmlNode *devices, nic_vector *nics)
{
  for (xmlNode *d = xml_child (devices, NULL); d; d = xml_next (d, NULL)) {
    xmlNode *mac = xml_child (d, "macAddress");
    xmlNode *backing;
    struct vs_nic nic;

    if (mac == NULL)
      continue;
    backing = xml_child (d, "backing");
    nic = (struct vs_nic){
      .label = xml_child_text (xml_child (d, "deviceInfo"), "label"),
      .type = xml_type (d),
      .mac = xml_text (mac),
      .network = xml_child_text (backing, "deviceName"),
    };
    nic.network_id = xml_child_text (backing, "network");
    if (nic.network == NULL) /* distributed port group */
      nic.network = xml_child_text (xml_child (backing, "port"), "portgroupKey");
    if (nic.network_id == NULL && nic.network)
      nic.network_id = xml_child_text (xml_child (backing, "port"), "portgroupKey");
    if (nic_vector_append (nics, nic) == -1) {
      free (nic.label);
      free (nic.type);
      free (nic.mac);
      free (nic.network);
      free (nic.network_id);
      return -1;
    }
  }
  return 0;
}

static int
read_vm (struct vs_session *s, const char *ref, const char *datacenter, struct vs_vm *vm,
         struct vs_fault *fault)
{
  xmlDoc *doc;
  xmlNode *obj, *snap;
  CLEANUP_FREE char *cbt = NULL;

  if (vs_retrieve (s, "VirtualMachine", ref, vm_paths, &doc, &obj, fault) == -1)
    return -1;
  vm->moref = strdup (ref);
  vm->name = xml_text (vs_prop (obj, "name"));
  vm->uuid = xml_text (vs_prop (obj, "config.uuid"));
  vm->instance_uuid = xml_text (vs_prop (obj, "config.instanceUuid"));
  vm->power_state = xml_text (vs_prop (obj, "runtime.powerState"));
  vm->host = xml_text (vs_prop (obj, "runtime.host"));
  CLEANUP_FREE char *tools = xml_text (vs_prop (obj, "guest.toolsRunningStatus"));
  vm->tools_running = tools && strcmp (tools, "guestToolsRunning") == 0;
  cbt = xml_text (vs_prop (obj, "config.changeTrackingEnabled"));
  vm->cbt_enabled = cbt && strcmp (cbt, "true") == 0;
  vm->guest_id = xml_text (vs_prop (obj, "config.guestId"));
  vm->firmware = xml_text (vs_prop (obj, "config.firmware"));
  CLEANUP_FREE char *cpus = xml_text (vs_prop (obj, "config.hardware.numCPU"));
  CLEANUP_FREE char *mem = xml_text (vs_prop (obj, "config.hardware.memoryMB"));
  vm->cpus = cpus ? strtoul (cpus, NULL, 10) : 0;
  vm->memory_mb = mem ? strtoull (mem, NULL, 10) : 0;
  if (parse_nics (vs_prop (obj, "config.hardware.device"), &vm->nics) == -1) {
    log_error ("%s: out of memory", ref);
    goto err;
  }
  snap = vs_prop (obj, "snapshot");
  if (snap &&
      collect_snapshots (xml_child (snap, "rootSnapshotList"), &vm->snapshots) == -1) {
    log_error ("%s: cannot read the snapshot tree", ref);
    goto err;
  }
  if (vs_parse_disks (vs_prop (obj, "config.hardware.device"), &vm->disks) == -1)
    goto err;
  if (vm->disks.len == 0) {
    log_error ("%s (%s): the VM has no virtual disks", ref, vm->name ? vm->name : "?");
    goto err;
  }
  if (datacenter && check_datacenter (s, ref, vs_prop (obj, "parent"), datacenter) == -1)
    goto err;
  vm->dc_path =
      datacenter ? strdup (datacenter) : find_dc_path (s, ref, vs_prop (obj, "parent"));
  if (vm->dc_path == NULL)
    goto err;
  xmlFreeDoc (doc);
  return 0;

err:
  xmlFreeDoc (doc);
  return -1;
}

int
vs_find_vm (struct vs_session *s, const char *which, bool by_uuid, const char *datacenter,
            struct vs_vm *vm)
{
  CLEANUP_FREE char *ref = NULL;
  struct vs_fault fault = { 0 };
  int r;

  memset (vm, 0, sizeof *vm);
  if (by_uuid)
    ref = find_vm_by_uuid (s, which);
  else if (strchr (which, '/')) {
    /* An inventory path, as govc writes it: DC0/vm/folder/name. */
    CLEANUP_FREE char *type = NULL;
    ref = find_by_inventory_path (s, which, &type);
    if (ref && (type == NULL || strcmp (type, "VirtualMachine") != 0)) {
      log_error ("%s: vm=%s is a %s, not a VM", s->server, which, type ? type : "?");
      return -1;
    }
    if (ref == NULL && s->search_index) /* the call itself reports its errors */
      log_error ("%s: no VM at the inventory path \"%s\" (like DC0/vm/FOLDER/NAME)",
                 s->server, which);
  } else {
    /* A moref first; if no such object, a name. */
    r = read_vm (s, which, datacenter, vm, &fault);
    if (r == 0)
      return 0;
    bool not_found = fault.type && (strcmp (fault.type, "ManagedObjectNotFound") == 0 ||
                                    strcmp (fault.type, "InvalidArgument") == 0);
    if (fault.type && !not_found)
      log_error ("%s: RetrievePropertiesEx: %s: %s", which, fault.type,
                 fault.message ? fault.message : "");
    vs_fault_reset (&fault);
    vs_vm_free (vm);
    if (!not_found)
      return -1;
    ref = find_vm_by_name (s, which);
  }
  if (ref == NULL)
    return -1;
  if (read_vm (s, ref, datacenter, vm, NULL) == -1) {
    vs_vm_free (vm);
    return -1;
  }
  return 0;
}

void
vs_vm_free (struct vs_vm *vm)
{
  free (vm->moref);
  free (vm->name);
  free (vm->uuid);
  free (vm->instance_uuid);
  free (vm->power_state);
  free (vm->host);
  free (vm->guest_id);
  free (vm->firmware);
  free (vm->dc_path);
  for (size_t i = 0; i < vm->nics.len; i++) {
    free (vm->nics.ptr[i].label);
    free (vm->nics.ptr[i].type);
    free (vm->nics.ptr[i].mac);
    free (vm->nics.ptr[i].network);
    free (vm->nics.ptr[i].network_id);
  }
  nic_vector_reset (&vm->nics);
  for (size_t i = 0; i < vm->snapshots.len; i++) {
    free (vm->snapshots.ptr[i].moref);
    free (vm->snapshots.ptr[i].name);
    free (vm->snapshots.ptr[i].description);
  }
  snapshot_vector_reset (&vm->snapshots);
  disk_vector_free (&vm->disks);
  memset (vm, 0, sizeof *vm);
}

int
vs_snapshot_disks (struct vs_session *s, const struct vs_vm *vm, const char *snap,
                   disk_vector *disks)
{
  static const char *const paths[] = { "config.hardware.device", NULL };
  xmlDoc *doc;
  xmlNode *obj;
  int r;

  if (vs_retrieve (s, "VirtualMachineSnapshot", snap, paths, &doc, &obj, NULL) == -1) {
    log_error ("%s: cannot read the disks of snapshot %s", vm->moref, snap);
    return -1;
  }
  r = vs_parse_disks (vs_prop (obj, "config.hardware.device"), disks);
  xmlFreeDoc (doc);
  return r;
}
