/* SPDX-License-Identifier: Apache-2.0 */
/* ferry: the libvirt XML that virt-v2v reads the source VM from (-i libvirtxml).
 *
 * A domain of type vmware, so that virt-v2v treats the guest as coming from VMware: its
 * name, memory, vCPUs and firmware, each disk as an NBD export on localhost (virt-v2v
 * 2.2 accepts an NBD disk only as <host name='localhost' port='N'/>; a unix socket or
 * 127.0.0.1 is silently dropped), on a paravirtual SCSI controller, and each NIC with its
 * MAC and model.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "common/log.h"
#include "common/util.h"
#include "convert.h"

/* S with XML's special characters escaped, written to FP. */
static void
put_escaped (FILE *fp, const char *s)
{
  char *e = xml_escape (s);

  fputs (e ? e : "", fp);
  free (e);
}

/* vSphere's device type -> libvirt's NIC model. */
static const char *
nic_model (const char *type)
{
  if (type == NULL)
    return "vmxnet3";
  if (strcmp (type, "VirtualE1000") == 0)
    return "e1000";
  if (strcmp (type, "VirtualE1000e") == 0)
    return "e1000e";
  if (strcmp (type, "VirtualPCNet32") == 0)
    return "pcnet";
  return "vmxnet3";
}

char *
convert_libvirt_xml (json_t *desc, const int *ports, size_t nr_ports)
{
  const char *name = json_string_value (json_object_get (desc, "name"));
  const char *firmware = json_string_value (json_object_get (desc, "firmware"));
  json_t *disks = json_object_get (desc, "disks"), *nics = json_object_get (desc, "nics");
  json_int_t cpus = json_integer_value (json_object_get (desc, "cpus"));
  json_int_t memory_mb = json_integer_value (json_object_get (desc, "memoryMB"));
  char *buf = NULL;
  size_t len = 0, i;
  json_t *e;
  FILE *fp;

  if (name == NULL || !json_is_array (disks) || json_array_size (disks) != nr_ports ||
      nr_ports == 0) {
    log_error ("%s: libvirt XML: the description needs a name and its %zu disks",
               name ? name : "VM", nr_ports);
    return NULL;
  }
  fp = open_memstream (&buf, &len);
  if (fp == NULL) {
    log_error ("%s: libvirt XML: %m", name);
    return NULL;
  }
  fputs ("<domain type='vmware'>\n  <name>", fp);
  put_escaped (fp, name);
  fputs ("</name>\n", fp);
  fprintf (fp, "  <memory unit='KiB'>%lld</memory>\n",
           (long long)(memory_mb > 0 ? memory_mb : 1024) * 1024);
  fprintf (fp, "  <vcpu>%lld</vcpu>\n", (long long)(cpus > 0 ? cpus : 1));
  fprintf (fp, "  <os%s>\n    <type arch='x86_64'>hvm</type>\n  </os>\n",
           firmware && strcmp (firmware, "efi") == 0 ? " firmware='efi'" : "");
  fputs ("  <devices>\n", fp);
  json_array_foreach (disks, i, e)
  {
    /* sda ... sdz, sdaa ...: the names only order the disks. */
    char dev[8];
    if (i < 26)
      snprintf (dev, sizeof dev, "sd%c", (char)('a' + i));
    else
      snprintf (dev, sizeof dev, "sd%c%c", (char)('a' + i / 26 - 1), (char)('a' + i % 26));
    fprintf (fp,
             "    <disk type='network' device='disk'>\n"
             "      <driver name='qemu' type='raw'/>\n"
             "      <source protocol='nbd'><host name='localhost' port='%d'/></source>\n"
             "      <target dev='%s' bus='scsi'/>\n"
             "    </disk>\n",
             ports[i], dev);
  }
  fputs ("    <controller type='scsi' index='0' model='vmpvscsi'/>\n", fp);
  json_array_foreach (nics, i, e)
  {
    const char *mac = json_string_value (json_object_get (e, "mac"));
    const char *net = json_string_value (json_object_get (e, "network"));
    fputs ("    <interface type='bridge'>\n", fp);
    if (mac) {
      fputs ("      <mac address='", fp);
      put_escaped (fp, mac);
      fputs ("'/>\n", fp);
    }
    fputs ("      <source bridge='", fp);
    put_escaped (fp, net ? net : "VM Network");
    fputs ("'/>\n", fp);
    fprintf (fp, "      <model type='%s'/>\n    </interface>\n",
             nic_model (json_string_value (json_object_get (e, "type"))));
  }
  fputs ("  </devices>\n</domain>\n", fp);
  if (fclose (fp) == EOF) {
    log_error ("%s: libvirt XML: %m", name);
    free (buf);
    return NULL;
  }
  return buf;
}
