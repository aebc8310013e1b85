/* SPDX-License-Identifier: Apache-2.0 */
/* ferry: what a conversion-only plan's target holds (convert.h) — a raw disk.img, a block
 * device, or a VMDK descriptor with its one flat extent (the datastore's files cloned on
 * the storage array).  For a VMDK, the flat extent is the raw image that conversion
 * works on; sparse and multi-extent disks are refused, since qemu's overlay needs a raw
 * backing file.
 */
#include <ctype.h>
#include <stdarg.h>
#include <strings.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <linux/fs.h>

#include "common/cleanup.h"
#include "common/log.h"
#include "convert.h"

#define DESCRIPTOR_MAX 65536

static char *why_printf (const char *fs, ...) __attribute__ ((format (printf, 1, 2)));

static char *
why_printf (const char *fs, ...)
{
  va_list args;
  char *s;

  va_start (args, fs);
  if (vasprintf (&s, fs, args) == -1)
    s = NULL;
  va_end (args);
  return s;
}

/* The value of KEY = "VALUE" (or KEY=VALUE) on LINE, malloc'd; NULL if LINE is not KEY. */
static char *
descriptor_value (const char *line, const char *key)
{
  size_t n = strlen (key), len;

  if (strncmp (line, key, n) != 0)
    return NULL;
  line += n;
  while (*line == ' ' || *line == '\t')
    line++;
  if (*line++ != '=')
    return NULL;
  while (*line == ' ' || *line == '\t')
    line++;
  len = strlen (line);
  while (len > 0 && isspace ((unsigned char)line[len - 1]))
    len--;
  if (len >= 2 && line[0] == '"' && line[len - 1] == '"')
    line++, len -= 2;
  return strndup (line, len);
}

int
convert_vmdk_parse (const char *text, struct convert_vmdk *v, char **why)
{
  CLEANUP_FREE char *copy = NULL, *create_type = NULL, *parent = NULL;
  char *line, *save = NULL;
  int extents = 0;

  *v = (struct convert_vmdk){ 0 };
  *why = NULL;
  if (strncmp (text, "KDMV", 4) == 0 || strncmp (text, "COWD", 4) == 0) {
    *why = why_printf ("a sparse VMDK (binary header %.4s), not a descriptor with a flat "
                       "extent: convert it to raw first",
                       text);
    return -1;
  }
  if (strstr (text, "# Disk DescriptorFile") == NULL &&
      strstr (text, "createType") == NULL) {
    *why = why_printf ("not a VMDK descriptor (no \"# Disk DescriptorFile\")");
    return -1;
  }
  copy = strdup (text);
  if (copy == NULL)
    return -1;
  for (line = strtok_r (copy, "\r\n", &save); line; line = strtok_r (NULL, "\r\n", &save)) {
    char access[16], type[16], file[PATH_MAX];
    unsigned long long sectors, offset = 0;
    char *val;
    int n;

    while (*line == ' ' || *line == '\t')
      line++;
    if (*line == '#' || *line == '\0')
      continue;
    if ((val = descriptor_value (line, "createType")) != NULL) {
      free (create_type);
      create_type = val;
    } else if ((val = descriptor_value (line, "parentCID")) != NULL) {
      free (parent);
      parent = val;
    } else if ((val = descriptor_value (line, "ddb.uuid")) != NULL) {
      free (v->uuid);
      v->uuid = val;
    } else if (sscanf (line, "%15s %llu %15s \"%4095[^\"]\"%n", access, &sectors, type,
                       file, &n) == 4 &&
               (strcmp (access, "RW") == 0 || strcmp (access, "RDONLY") == 0 ||
                strcmp (access, "NOACCESS") == 0)) {
      extents++;
      if (sscanf (line + n, "%llu", &offset) != 1)
        offset = 0;
      if (extents > 1)
        continue;
      if (strcmp (access, "RW") != 0) {
        *why = why_printf ("its extent \"%s\" is %s, not RW", file, access);
        goto err;
      }
      if (strcmp (type, "FLAT") != 0 && strcmp (type, "VMFS") != 0) {
        *why = why_printf ("its extent \"%s\" is %s: only a FLAT or VMFS extent (raw) can "
                           "back the conversion",
                           file, type);
        goto err;
      }
      if (offset != 0) {
        *why = why_printf ("its extent \"%s\" starts at sector %llu: only offset 0 is "
                           "supported",
                           file, offset);
        goto err;
      }
      v->extent = strdup (file);
      v->size = (uint64_t)sectors * 512;
    }
  }
  if (create_type == NULL ||
      (strcmp (create_type, "monolithicFlat") != 0 && strcmp (create_type, "vmfs") != 0)) {
    *why = why_printf ("createType \"%s\": only monolithicFlat and vmfs (one flat extent) "
                       "are supported",
                       create_type ? create_type : "(none)");
    goto err;
  }
  if (parent && strcasecmp (parent, "ffffffff") != 0) {
    *why =
        why_printf ("parentCID %s: a child (snapshot delta) disk, not a base disk", parent);
    goto err;
  }
  if (extents != 1 || v->extent == NULL) {
    *why = why_printf ("%d extents: exactly one flat extent is supported", extents);
    goto err;
  }
  if (strchr (v->extent, '/')) {
    *why = why_printf ("its extent \"%s\" is not in the descriptor's directory", v->extent);
    goto err;
  }
  return 0;

err:
  free (v->extent);
  free (v->uuid);
  *v = (struct convert_vmdk){ 0 };
  return -1;
}

/* The VMDK descriptors in DIR (small text files named *.vmdk, not the flat extents). */
static int
find_descriptor (const char *dir, char **found, char **why)
{
  DIR *d = opendir (dir);
  struct dirent *e;
  int n = 0;

  *found = NULL;
  if (d == NULL) {
    *why = why_printf ("%s: %s", dir, strerror (errno));
    return -1;
  }
  while ((e = readdir (d)) != NULL) {
    size_t len = strlen (e->d_name);
    if (len < 5 || strcmp (e->d_name + len - 5, ".vmdk") != 0 ||
        (len > 10 && strcmp (e->d_name + len - 10, "-flat.vmdk") == 0))
      continue;
    n++;
    if (*found == NULL && asprintf (found, "%s/%s", dir, e->d_name) == -1)
      *found = NULL;
  }
  closedir (d);
  if (n == 1 && *found)
    return 0;
  *why = n == 0
             ? why_printf ("%s holds neither disk.img nor a VMDK descriptor", dir)
             : why_printf ("%s holds %d VMDK descriptors: name one in the plan's targets",
                           dir, n);
  free (*found);
  *found = NULL;
  return -1;
}

static int
load_descriptor (const char *path, struct convert_target *t, char **why)
{
  char buf[DESCRIPTOR_MAX + 1];
  struct convert_vmdk v;
  struct stat st;
  ssize_t n;
  int fd = open (path, O_RDONLY | O_CLOEXEC);

  if (fd == -1) {
    *why = why_printf ("%s: %s", path, strerror (errno));
    return -1;
  }
  n = read (fd, buf, DESCRIPTOR_MAX);
  close (fd);
  if (n < 0) {
    *why = why_printf ("%s: %s", path, strerror (errno));
    return -1;
  }
  buf[n] = '\0';
  if (n == DESCRIPTOR_MAX || memchr (buf, '\0', n)) {
    *why = strncmp (buf, "KDMV", 4) == 0
               ? why_printf ("%s: a sparse VMDK (binary), not a descriptor with a flat "
                             "extent: convert it to raw first",
                             path)
               : why_printf ("%s: not a VMDK descriptor (binary or larger than %d bytes)",
                             path, DESCRIPTOR_MAX);
    return -1;
  }
  if (convert_vmdk_parse (buf, &v, why) == -1) {
    char *w = why_printf ("%s: %s", path, *why ? *why : "out of memory");
    free (*why);
    *why = w;
    return -1;
  }
  t->descriptor = strdup (path);
  t->uuid = v.uuid;
  t->size = v.size;
  const char *slash = strrchr (path, '/');
  if (asprintf (&t->raw, "%.*s%s", slash ? (int)(slash - path + 1) : 0, path, v.extent) ==
      -1)
    t->raw = NULL;
  free (v.extent);
  if (t->raw == NULL || t->descriptor == NULL)
    return -1;
  if (stat (t->raw, &st) == -1) {
    *why = why_printf ("%s: its flat extent %s: %s", path, t->raw, strerror (errno));
    return -1;
  }
  if (!S_ISREG (st.st_mode) || (uint64_t)st.st_size < t->size) {
    *why =
        why_printf ("%s: its flat extent %s holds %" PRIu64 " bytes, the descriptor says "
                    "%" PRIu64,
                    path, t->raw, (uint64_t)st.st_size, t->size);
    return -1;
  }
  return 0;
}

int
convert_find_target (const char *path, bool block, struct convert_target *t, char **why)
{
  struct stat st;

  *t = (struct convert_target){ 0 };
  *why = NULL;
  if (block) {
    int fd = open (path, O_RDONLY | O_CLOEXEC);
    if (fd == -1 || ioctl (fd, BLKGETSIZE64, &t->size) == -1) {
      *why = why_printf ("%s: %s", path, strerror (errno));
      if (fd != -1)
        close (fd);
      return -1;
    }
    close (fd);
    t->raw = strdup (path);
    t->block = true;
    return t->raw ? 0 : -1;
  }
  /* PATH is DIR/disk.img; a DIR of the plan may also be the descriptor itself. */
  if (stat (path, &st) == 0) {
    t->raw = strdup (path);
    t->size = st.st_size;
    return t->raw ? 0 : -1;
  }
  CLEANUP_FREE char *dir = strdup (path);
  CLEANUP_FREE char *descriptor = NULL;
  char *slash = dir ? strrchr (dir, '/') : NULL;
  if (dir == NULL)
    return -1;
  if (slash)
    *slash = '\0';
  if (stat (dir, &st) == 0 && S_ISREG (st.st_mode))
    return load_descriptor (dir, t, why);
  if (find_descriptor (dir, &descriptor, why) == -1)
    return -1;
  return load_descriptor (descriptor, t, why);
}

void
convert_target_free (struct convert_target *t)
{
  free (t->raw);
  free (t->descriptor);
  free (t->uuid);
  *t = (struct convert_target){ 0 };
}

bool
convert_same_uuid (const char *a, const char *b)
{
  /* "60 00 C2 9a ..." (a descriptor's ddb.uuid) or "6000C29a-..." (vSphere's): hex. */
  while (*a || *b) {
    while (*a && !isxdigit ((unsigned char)*a))
      a++;
    while (*b && !isxdigit ((unsigned char)*b))
      b++;
    if (tolower ((unsigned char)*a) != tolower ((unsigned char)*b))
      return false;
    if (*a)
      a++, b++;
  }
  return true;
}
