/* SPDX-License-Identifier: Apache-2.0 */
/* ferry: the preflight inspection — virt-v2v-inspector over a VM's disks (convert.h).
 *
 * virt-v2v-inspector takes the same input as the conversion (-i libvirtxml, the disks as
 * NBD exports on localhost ports) and goes through virt-v2v's own steps up to the point
 * where it would write: it opens the guest, inspects it and checks what the conversion
 * would check.  So a guest virt-v2v cannot convert fails here in virt-v2v's own words
 * ("inspection could not detect the source guest", an unsupported OS, a guest too full
 * to convert, ...), before any copy.  On success its XML (-O) says what the guest is.
 *
 * Its machine-readable stdout (JSON messages and N/M progress) goes to the caller's
 * progress and, with its stderr, to WORK/inspection.log.  The children run with
 * convert_child_env (the KVM probe: TCG where KVM is unusable).
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <jansson.h>
#include <libxml/parser.h>
#include <libxml/tree.h>

#include "common/cleanup.h"
#include "common/log.h"
#include "common/util.h"
#include "children.h"
#include "convert.h"

#define ERROR_MAX 2048

/* The element's text, trimmed, malloc'd (NULL when empty). */
static char *
node_text (xmlNode *n)
{
  xmlChar *c = xmlNodeGetContent (n);
  char *s = NULL;

  if (c) {
    const char *p = (const char *)c;
    size_t len;
    while (*p == ' ' || *p == '\n' || *p == '\t')
      p++;
    len = strlen (p);
    while (len > 0 && (p[len - 1] == ' ' || p[len - 1] == '\n' || p[len - 1] == '\t'))
      len--;
    if (len)
      s = strndup (p, len);
    xmlFree (c);
  }
  return s;
}

static bool
leaf (xmlNode *n)
{
  for (xmlNode *c = n->children; c; c = c->next)
    if (c->type == XML_ELEMENT_NODE)
      return false;
  return true;
}

/* <operatingsystem>'s leaf elements as strings (numbers as numbers); nested lists (the
 * mountpoints, applications) are left out.
 */
static json_t *
os_json (xmlNode *os)
{
  json_t *o = json_object ();

  for (xmlNode *c = os->children; c; c = c->next) {
    if (c->type != XML_ELEMENT_NODE || !leaf (c))
      continue;
    CLEANUP_FREE char *t = node_text (c);
    char *end;
    long long v;
    if (t == NULL)
      continue;
    errno = 0;
    v = strtoll (t, &end, 10);
    if (*end == '\0' && errno == 0 && strstr ((const char *)c->name, "version"))
      json_object_set_new (o, (const char *)c->name, json_integer (v));
    else
      json_object_set_new (o, (const char *)c->name, json_string (t));
  }
  return o;
}

/* virt-v2v-inspector's XML -> {"os": {...}, "firmware": ..., "disks": [...]}; NULL when
 * it does not parse.
 */
json_t *
convert_parse_inspection (const char *xml, size_t len)
{
  xmlDoc *doc = xmlReadMemory (xml, len, "inspection.xml", NULL,
                               XML_PARSE_NONET | XML_PARSE_NOERROR | XML_PARSE_NOWARNING);
  xmlNode *root = doc ? xmlDocGetRootElement (doc) : NULL;
  json_t *r, *disks;

  if (root == NULL || strcmp ((const char *)root->name, "v2v-inspection") != 0) {
    xmlFreeDoc (doc);
    return NULL;
  }
  r = json_object ();
  disks = json_array ();
  for (xmlNode *c = root->children; c; c = c->next) {
    if (c->type != XML_ELEMENT_NODE)
      continue;
    if (strcmp ((const char *)c->name, "operatingsystem") == 0)
      json_object_set_new (r, "os", os_json (c));
    else if (strcmp ((const char *)c->name, "firmware") == 0) {
      xmlChar *type = xmlGetProp (c, (const xmlChar *)"type");
      CLEANUP_FREE char *t = node_text (c);
      const char *fw = type ? (const char *)type : t;
      if (fw)
        json_object_set_new (r, "firmware", json_string (fw));
      xmlFree (type);
    } else if (strcmp ((const char *)c->name, "disks") == 0) {
      for (xmlNode *d = c->children; d; d = d->next) {
        if (d->type != XML_ELEMENT_NODE || strcmp ((const char *)d->name, "disk") != 0)
          continue;
        json_t *jd = json_object ();
        for (xmlNode *f = d->children; f; f = f->next) {
          CLEANUP_FREE char *t = f->type == XML_ELEMENT_NODE ? node_text (f) : NULL;
          if (t && strcmp ((const char *)f->name, "virtual-size") == 0)
            json_object_set_new (jd, "virtualSize", json_integer (strtoll (t, NULL, 10)));
          else if (t && strcmp ((const char *)f->name, "allocated") == 0)
            json_object_set_new (jd, "estimatedAllocated",
                                 json_integer (strtoll (t, NULL, 10)));
        }
        json_array_append_new (disks, jd);
      }
    }
  }
  json_object_set_new (r, "disks", disks);
  xmlFreeDoc (doc);
  return r;
}

/* How long the inspector may go on after "Converting ... to run on KVM" before it is
 * stopped: the choice of the conversion (where an unsupported OS fails) follows that
 * message at once.
 */
#define CONVERT_GRACE 10.0

struct inspector {
  struct convert_inspect_params *p;
  json_t *warnings;
  json_t *facts;     /* i_KEY = VALUE lines of virt-v2v's -v output */
  char *error;       /* its first error message */
  double converting; /* when the conversion began (monotonic), 0 before */
};

/* One line of the inspector's stdout: "N/M" progress or a JSON message. */
static void
stdout_line (struct inspector *in, const char *line)
{
  struct convert_inspect_params *p = in->p;
  unsigned long long done, total;
  int n = 0;

  if (sscanf (line, "%llu/%llu%n", &done, &total, &n) == 2 && line[n] == '\0') {
    if (p->progress && total > 0)
      p->progress (p->opaque, 100.0 * done / total, NULL);
    return;
  }
  if (line[0] != '{')
    return;
  json_t *j = json_loads (line, 0, NULL);
  const char *type = json_string_value (json_object_get (j, "type"));
  const char *msg = json_string_value (json_object_get (j, "message"));
  if (type && msg) {
    if (strcmp (type, "error") == 0 && in->error == NULL)
      in->error = strdup (msg);
    else if (strcmp (type, "warning") == 0) {
      json_array_append_new (in->warnings, json_string (msg));
      if (p->progress) {
        char w[1024];
        snprintf (w, sizeof w, "warning: %s", msg);
        p->progress (p->opaque, -1, w);
      }
    } else if (strcmp (type, "message") == 0) {
      if (strncmp (msg, "Converting ", 11) == 0 && in->converting == 0)
        in->converting = time_monotonic ();
      if (p->progress)
        p->progress (p->opaque, -1, msg);
    }
  }
  json_decref (j);
}

/* One line of its stderr (-v): what inspection found, "i_root = /dev/sda1". */
static void
stderr_line (struct inspector *in, const char *line)
{
  char key[64];
  int n = 0;

  if (sscanf (line, "i_%63[a-z_] = %n", key, &n) == 1 && n > 0 &&
      json_object_get (in->facts, key) == NULL)
    json_object_set_new (in->facts, key, json_string (line + n));
}

struct stream {
  int fd;
  char buf[8192];
  size_t len;
  void (*line) (struct inspector *, const char *);
};

/* Read what is there, hand complete lines on; -1 at end of stream. */
static int
drain (struct inspector *in, struct stream *st, int log_fd)
{
  ssize_t n = read (st->fd, st->buf + st->len, sizeof st->buf - 1 - st->len);
  char *start = st->buf, *nl;

  if (n == -1 && errno == EINTR)
    return 0;
  if (n <= 0)
    return -1;
  if (write (log_fd, st->buf + st->len, n) != n)
    log_debug ("inspection.log: short write: %m");
  st->len += n;
  st->buf[st->len] = '\0';
  while ((nl = strchr (start, '\n')) != NULL) {
    *nl = '\0';
    st->line (in, start);
    start = nl + 1;
  }
  st->len -= start - st->buf;
  memmove (st->buf, start, st->len);
  if (st->len == sizeof st->buf - 1) /* a line longer than the buffer: dropped */
    st->len = 0;
  return 0;
}

/* Run the inspector, its output into LOG_FD; its exit status (128+signal), -1 if it
 * could not run.  With !FULL it is stopped CONVERT_GRACE seconds into the conversion
 * (*STOPPED set): everything before (open, inspect, free space, the choice of the
 * conversion) has passed by then.
 */
static int
run_inspector (struct inspector *in, const char *xml_path, const char *out_path, int log_fd,
               bool full, bool *stopped)
{
  const char *const argv[] = { "virt-v2v-inspector",
                               "-v",
                               "--machine-readable",
                               "-i",
                               "libvirtxml",
                               xml_path,
                               "-O",
                               out_path,
                               NULL };
  struct stream out = { .line = stdout_line }, err = { .line = stderr_line };
  int ws;
  bool killed = false;
  pid_t pid;

  *stopped = false;
  pid = child_spawn_piped (argv, &out.fd, &err.fd);
  if (pid == -1)
    return -1;
  while (out.fd >= 0 || err.fd >= 0) {
    struct pollfd pfd[2] = { { out.fd, POLLIN, 0 }, { err.fd, POLLIN, 0 } };
    if (!killed && in->p->cancel && *in->p->cancel) {
      log_info ("stopping virt-v2v-inspector (pid %ld)", (long)pid);
      kill (-pid, SIGTERM);
      killed = true;
    }
    if (!killed && !full && in->error == NULL && in->converting > 0 &&
        time_monotonic () - in->converting >= CONVERT_GRACE) {
      kill (-pid, SIGTERM);
      killed = *stopped = true;
    }
    if (poll (pfd, 2, 1000) <= 0)
      continue;
    for (int i = 0; i < 2; i++) {
      struct stream *st = i ? &err : &out;
      if (st->fd >= 0 && (pfd[i].revents & (POLLIN | POLLHUP | POLLERR)) &&
          drain (in, st, log_fd) == -1) {
        close (st->fd);
        st->fd = -1;
      }
    }
  }
  while (waitpid (pid, &ws, 0) == -1)
    if (errno != EINTR)
      return -1;
  kill (-pid, SIGKILL); /* its appliance, if anything is left */
  return WIFEXITED (ws) ? WEXITSTATUS (ws) : 128 + WTERMSIG (ws);
}

/* S on one line: runs of blanks and newlines become one space; bounded. */
static void
one_line (char *s)
{
  char *w = s;
  bool space = false;

  for (char *r = s; *r; r++) {
    if (*r == '\n' || *r == ' ' || *r == '\t')
      space = true;
    else {
      if (space && w > s)
        *w++ = ' ';
      space = false;
      *w++ = *r;
    }
  }
  *w = '\0';
  if (w - s > ERROR_MAX)
    strcpy (s + ERROR_MAX - 4, "...");
}

/* What inspection found (virt-v2v's i_* lines) as the result's "os" and "firmware", in
 * the names of the inspector's XML.
 */
static void
facts_to_result (json_t *facts, json_t *r)
{
  static const char *const keys[][2] = {
    { "type", "name" },
    { "root", "root" },
    { "distro", "distro" },
    { "osinfo", "osinfo" },
    { "arch", "arch" },
    { "major_version", "major_version" },
    { "minor_version", "minor_version" },
    { "product_name", "product_name" },
    { "package_format", "package_format" },
  };
  const char *fw = json_string_value (json_object_get (facts, "firmware"));
  json_t *os = json_object ();

  for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++) {
    const char *v = json_string_value (json_object_get (facts, keys[i][0]));
    if (v == NULL)
      continue;
    if (strstr (keys[i][0], "version"))
      json_object_set_new (os, keys[i][1], json_integer (strtoll (v, NULL, 10)));
    else
      json_object_set_new (os, keys[i][1], json_string (v));
  }
  json_object_set_new (r, "os", os);
  if (fw)
    json_object_set_new (r, "firmware",
                         json_string (strncasecmp (fw, "UEFI", 4) == 0   ? "uefi"
                                      : strncasecmp (fw, "BIOS", 4) == 0 ? "bios"
                                                                         : fw));
}

json_t *
convert_inspect (struct convert_inspect_params *p)
{
  const char *name = json_string_value (json_object_get (p->description, "name"));
  CLEANUP_FREE char *xml = NULL, *xml_path = NULL, *out_path = NULL, *log_path = NULL;
  CLEANUP_FREE char *out = NULL;
  struct inspector in = { .p = p, .warnings = json_array (), .facts = json_object () };
  json_t *r = NULL, *parsed;
  double t0 = time_monotonic ();
  size_t out_len = 0;
  int log_fd = -1, status;
  bool stopped;

  if (name == NULL)
    name = "VM";
  if (asprintf (&xml_path, "%s/inspect.xml", p->work_dir) == -1 ||
      asprintf (&out_path, "%s/inspection.xml", p->work_dir) == -1 ||
      asprintf (&log_path, "%s/inspection.log", p->work_dir) == -1) {
    log_error ("%s: inspection: out of memory", name);
    goto out;
  }
  convert_child_env (); /* the KVM probe */
  xml = convert_libvirt_xml (p->description, p->ports, p->nr_disks);
  if (xml == NULL)
    goto out;
  if (write_file_atomic (xml_path, xml, strlen (xml)) == -1) {
    log_error ("%s: %s: %m", name, xml_path);
    goto out;
  }
  unlink (out_path);
  log_fd = open (log_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (log_fd == -1) {
    log_error ("%s: %s: %m", name, log_path);
    goto out;
  }
  log_info ("%s: inspecting the guest with virt-v2v-inspector%s (log %s)", name,
            convert_uses_tcg () ? " under TCG" : "", log_path);
  status = run_inspector (&in, xml_path, out_path, log_fd, p->full, &stopped);
  if (status == -1) {
    log_error ("%s: virt-v2v-inspector could not run: %m", name);
    goto out;
  }
  if (p->cancel && *p->cancel) {
    log_error ("%s: inspection: cancelled", name);
    goto out;
  }
  r = json_pack ("{s:b, s:b, s:f, s:b, s:s, s:O}", "convertible", status == 0 || stopped,
                 "full", !stopped, "seconds", time_monotonic () - t0, "tcg",
                 convert_uses_tcg (), "log", log_path, "warnings", in.warnings);
  facts_to_result (in.facts, r);
  if (stopped)
    goto out;
  if (status != 0) {
    char *msg = NULL;
    if (in.error)
      one_line (in.error);
    if (asprintf (&msg, "virt-v2v-inspector failed (exit %d): %s", status,
                  in.error ? in.error : "no message; see the log") == -1)
      msg = NULL;
    json_object_set_new (r, "error", msg ? json_string (msg) : json_null ());
    free (msg);
    goto out;
  }
  FILE *fp = fopen (out_path, "re");
  if (fp) {
    out = malloc (1 << 20);
    out_len = out ? fread (out, 1, (1 << 20) - 1, fp) : 0;
    fclose (fp);
  }
  parsed = out ? convert_parse_inspection (out, out_len) : NULL;
  if (parsed == NULL) {
    json_object_set_new (r, "convertible", json_false ());
    json_object_set_new (
        r, "error", json_string ("virt-v2v-inspector succeeded but wrote no readable XML"));
    goto out;
  }
  /* The XML's OS fields over the facts (the same names); the facts keep the root. */
  json_object_update (json_object_get (r, "os"), json_object_get (parsed, "os"));
  json_object_del (parsed, "os");
  json_object_update (r, parsed);
  json_decref (parsed);

out:
  if (log_fd >= 0)
    close (log_fd);
  json_decref (in.warnings);
  json_decref (in.facts);
  free (in.error);
  return r;
}
