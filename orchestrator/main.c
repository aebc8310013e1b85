/* SPDX-License-Identifier: Apache-2.0 */
/* ferry: the command line — ferry COMMAND PLAN [OPTIONS]; see ferry.pod. */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>
#include <linux/fs.h>

#include "common/cleanup.h"
#include "common/log.h"
#include "common/util.h"
#include "cdi.h"
#include "conversion.h"
#include "journal.h"
#include "kube.h"
#include "metrics.h"
#include "migrate.h"
#include "plan.h"
#include "progress.h"
#include "termlog.h"
#include "validate.h"
#include "verify.h"

#define FERRY_VERSION "0.2"

static void
usage (FILE *fp)
{
  fprintf (
      fp, "Usage: ferry COMMAND ARG [OPTIONS]\n"
          "\n"
          "Migrate VMs from vSphere into KubeVirt PVC targets, cold or warm, from a plan\n"
          "(see ferry(1) and ferry-plan.md).\n"
          "\n"
          "Commands:\n"
          "  validate PLAN [--json] [--inspect]\n"
          "                            report every problem of the plan, touching nothing\n"
          "  migrate PLAN              run the plan to the end (resumes after a crash)\n"
          "  precopy PLAN              one warm round for every VM not yet cut over\n"
          "  cutover PLAN [--at TIME]  ask the running migrate to cut over (or do it now)\n"
          "  status PLAN [--json]      state, rounds and predicted downtime per VM\n"
          "  cancel PLAN               stop the running migrate cleanly\n"
          "  convert PLAN --vm NAME    convert a verified VM's disks again (no copy)\n"
          "  digest FILE [--size N]    the digest ferry records for a disk image\n"
          "  kube PLAN                 the Kubernetes objects that run the plan, one Job\n"
          "                            per shard (YAML for kubectl apply)\n"
          "  cdi-import                CDI's VDDK importer contract, from $IMPORTER_*\n"
          "\n"
          "Options:\n"
          "  --progress=auto|tty|json|none  live display on a terminal, JSON lines on\n"
          "                            stdout otherwise (default auto; $FERRY_PROGRESS)\n"
          "  --json                    machine-readable output (validate, status)\n"
          "  --at TIME                 RFC 3339 time for cutover\n"
          "  --vm NAME                 the VM (its target name) for convert\n"
          "  --shard-by=host|datastore|vm  kube: a Job per ESXi host (default),\n"
          "                            datastore (a VM's first disk's) or VM\n"
          "  --image=IMG               kube: the image (default localhost/ferry:latest)\n"
          "  --namespace=NS            kube: the namespace of the objects\n"
          "  --secret=NAME             kube: the Secret (default: source.secret's name)\n"
          "  --output=FILE             kube: write there instead of stdout\n"
          "  --metrics-port=N          Prometheus metrics over HTTPS on port N while\n"
          "                            migrate runs ($FERRY_METRICS_PORT; 0: any port)\n"
          "  --metrics-address=ADDR    listen address (default 0.0.0.0;\n"
          "                            $FERRY_METRICS_ADDRESS)\n"
          "  --termination-log=PATH    a JSON result (< 4096 bytes) written at exit\n"
          "                            ($FERRY_TERMINATION_LOG)\n"
          "  --inspect                 validate: inspect each guest too (virt-v2v)\n"
          "  --no-inspect              migrate: no preflight inspection of the guests\n"
          "  -v, --verbose             debug messages (SOAP calls, retries)\n"
          "  --help, --version\n"
          "\n"
          "Exit status: 0 success, 1 failure (or plan not ready), 2 usage error,\n"
          "75 retryable (cancelled by a signal, network or server errors, plan locked).\n"
          "\n"
          "Examples:\n"
          "  ferry validate plan.json\n"
          "  ferry validate plan.json --inspect\n"
          "  ferry migrate plan.json\n"
          "  ferry status plan.json --json\n"
          "  ferry cutover plan.json --at 2026-12-01T02:00:00+01:00\n"
          "  ferry digest /pvc/web01-disk0/disk.img\n"
          "  ferry kube plan.json --namespace=migration --output=wave-1.yaml\n");
}

static void
quiet_debug (const char *msg)
{}

static int
cmd_digest (const char *file, const char *size_arg)
{
  char hex[65];
  uint64_t size;
  struct stat st;

  if (size_arg) {
    char *end;
    errno = 0;
    size = strtoull (size_arg, &end, 10);
    if (errno || *end || *size_arg < '0' || *size_arg > '9') {
      fprintf (stderr, "ferry: --size %s: expected a number of bytes\n", size_arg);
      return 2;
    }
  } else {
    int fd = open (file, O_RDONLY | O_CLOEXEC);
    if (fd == -1 || fstat (fd, &st) == -1) {
      fprintf (stderr, "ferry: %s: %m\n", file);
      if (fd != -1)
        close (fd);
      return 1;
    }
    size = st.st_size;
    if (S_ISBLK (st.st_mode) && ioctl (fd, BLKGETSIZE64, &size) == -1) {
      fprintf (stderr, "ferry: %s: BLKGETSIZE64: %m\n", file);
      close (fd);
      return 1;
    }
    close (fd);
  }
  if (verify_digest (file, size, hex, NULL) == -1)
    return 1;
  printf ("%s  %s\n", hex, file);
  return 0;
}

static double
num (json_t *obj, const char *key)
{
  return json_number_value (json_object_get (obj, key));
}

/* A cutover now: the measured shutdown and a final round of what changed since the last
 * round's snapshot; 0 once verified.
 */
static double
predicted_downtime (json_t *vm)
{
  const char *state = json_string_value (json_object_get (vm, "state"));
  double final = journal_predict_final_round (vm, (double)time (NULL));

  if (vm == NULL || final < 0 || conversion_state (state))
    return 0;
  return final + num (vm, "shutdownSeconds");
}

static int
cmd_status (const struct plan *plan, bool json_out)
{
  json_t *root = journal_read (plan->state_dir), *out = json_array ();
  json_t *vms = json_object_get (root, "vms");
  pid_t runner = journal_runner (plan->state_dir);

  if (root == NULL) {
    fprintf (stderr, "ferry: plan %s has not run yet (no journal in %s)\n", plan->name,
             plan->state_dir);
    json_decref (out);
    return 1;
  }
  for (size_t i = 0; i < plan->vms.len; i++) {
    const char *name = plan_vm_label (&plan->vms.ptr[i]);
    json_t *vm = json_object_get (vms, name), *rounds = json_object_get (vm, "rounds");
    uint64_t copied = 0;
    size_t r;
    json_t *e;
    json_array_foreach (rounds, r, e)
    {
      copied += json_integer_value (json_object_get (e, "bytesFetched"));
    }
    json_array_append_new (
        out,
        json_pack ("{s:s, s:s, s:i, s:I, s:I, s:f, s:f, s:O?}", "name", name, "state",
                   vm ? json_string_value (json_object_get (vm, "state")) : "pending",
                   "round", (int)json_integer_value (json_object_get (vm, "round")),
                   "bytesCopied", (json_int_t)copied, "bytesToCopy",
                   (json_int_t)json_integer_value (json_object_get (vm, "bytesToCopy")),
                   "changeRate", num (vm, "changeRate"), "predictedDowntimeSeconds",
                   predicted_downtime (vm), "error", json_object_get (vm, "error")));
  }
  if (json_out) {
    json_t *doc = json_pack ("{s:s, s:b, s:o}", "plan", plan->name, "running", runner != 0,
                             "vms", out);
    json_dumpf (doc, stdout, JSON_INDENT (2));
    putchar ('\n');
    json_decref (doc);
  } else {
    size_t i;
    json_t *e;
    printf ("plan %s: %s\n", plan->name, runner ? "running" : "not running");
    printf ("%-20s %-13s %5s %14s %12s %10s\n", "VM", "STATE", "ROUND", "COPIED",
            "CHANGE B/S", "DOWNTIME");
    json_array_foreach (out, i, e)
    {
      json_t *err = json_object_get (e, "error");
      printf ("%-20s %-13s %5d %14" JSON_INTEGER_FORMAT " %12.0f %9.1fs%s%s\n",
              json_string_value (json_object_get (e, "name")),
              json_string_value (json_object_get (e, "state")),
              (int)json_integer_value (json_object_get (e, "round")),
              json_integer_value (json_object_get (e, "bytesCopied")),
              num (e, "changeRate"), num (e, "predictedDowntimeSeconds"),
              json_is_string (err) ? "  " : "",
              json_is_string (err) ? json_string_value (err) : "");
    }
    json_decref (out);
  }
  json_decref (root);
  return 0;
}

/* Wait (up to TIMEOUT seconds) until nobody runs the plan. */
static bool
wait_runner_gone (const char *state_dir, unsigned timeout)
{
  double deadline = time_monotonic () + timeout;

  while (journal_runner (state_dir) != 0) {
    if (time_monotonic () >= deadline)
      return false;
    sleep_ms (100);
  }
  return true;
}

static int
cmd_cancel (const struct plan *plan)
{
  pid_t pid = journal_runner (plan->state_dir);

  if (pid == 0) {
    printf ("plan %s: no ferry is running it\n", plan->name);
    return 0;
  }
  if (kill (pid, SIGTERM) == -1) {
    fprintf (stderr, "ferry: plan %s: cannot signal pid %ld: %m\n", plan->name, (long)pid);
    return 1;
  }
  fprintf (stderr, "ferry: plan %s: asked pid %ld to stop; waiting\n", plan->name,
           (long)pid);
  if (!wait_runner_gone (plan->state_dir, 600)) {
    fprintf (stderr, "ferry: plan %s: pid %ld is still running after 600 s\n", plan->name,
             (long)pid);
    return 1;
  }
  printf ("plan %s: stopped; ferry migrate resumes it\n", plan->name);
  return 0;
}

static int
cmd_cutover (struct plan *plan, const char *at, struct progress *progress)
{
  time_t when = time (NULL);
  CLEANUP_FREE char *file = journal_path (plan->state_dir, "cutover");
  char buf[32];
  pid_t pid;

  if (at && plan_parse_time (at, &when) == -1) {
    fprintf (stderr,
             "ferry: --at %s: expected an RFC 3339 time such as "
             "2026-12-01T02:00:00+01:00\n",
             at);
    return 2;
  }
  /* Make sure the directory exists before writing the request. */
  struct journal *j = journal_open (plan->state_dir, plan->name, false);
  if (j == NULL)
    return 1;
  journal_close (j);
  snprintf (buf, sizeof buf, "%lld\n", (long long)when);
  if (file == NULL || write_file_atomic (file, buf, strlen (buf)) == -1) {
    fprintf (stderr, "ferry: %s: %m\n", file ? file : plan->state_dir);
    return 1;
  }
  pid = journal_runner (plan->state_dir);
  if (pid) {
    printf ("plan %s: asked the running ferry (pid %ld) to cut over%s%s\n", plan->name,
            (long)pid, at ? " at " : " now", at ? at : "");
    return 0;
  }
  return migrate_run (plan, at ? RUN_MIGRATE : RUN_CUTOVER, progress);
}

static enum progress_mode
parse_progress (const char *s)
{
  if (s == NULL || strcmp (s, "auto") == 0)
    return isatty (STDERR_FILENO) ? PROGRESS_TTY : PROGRESS_JSON;
  if (strcmp (s, "tty") == 0)
    return PROGRESS_TTY;
  if (strcmp (s, "json") == 0)
    return PROGRESS_JSON;
  if (strcmp (s, "none") == 0)
    return PROGRESS_NONE;
  return (enum progress_mode) - 1;
}

/* An option's value, or the environment's when the option was not given. */
static const char *
opt_or_env (const char *opt, const char *env)
{
  const char *e = getenv (env);
  return opt ? opt : e && *e ? e : NULL;
}

/* Write the termination log (if asked for) and give STATUS back. */
static int
finish (const char *termination_log, const char *cmd, const struct plan *plan, int status)
{
  if (termination_log)
    termlog_write (termination_log, cmd ? cmd : "ferry", plan, status);
  return status;
}

int
main (int argc, char *argv[])
{
  enum {
    OPT_PROGRESS = 256,
    OPT_JSON,
    OPT_AT,
    OPT_SIZE,
    OPT_VM,
    OPT_HELP,
    OPT_VERSION,
    OPT_METRICS_PORT,
    OPT_METRICS_ADDRESS,
    OPT_TERMINATION_LOG,
    OPT_SHARD_BY,
    OPT_IMAGE,
    OPT_NAMESPACE,
    OPT_OUTPUT,
    OPT_SECRET,
    OPT_INSPECT,
    OPT_NO_INSPECT
  };
  static const struct option long_options[] = {
    { "progress", required_argument, NULL, OPT_PROGRESS },
    { "json", no_argument, NULL, OPT_JSON },
    { "at", required_argument, NULL, OPT_AT },
    { "size", required_argument, NULL, OPT_SIZE },
    { "vm", required_argument, NULL, OPT_VM },
    { "metrics-port", required_argument, NULL, OPT_METRICS_PORT },
    { "metrics-address", required_argument, NULL, OPT_METRICS_ADDRESS },
    { "termination-log", required_argument, NULL, OPT_TERMINATION_LOG },
    { "inspect", no_argument, NULL, OPT_INSPECT },
    { "no-inspect", no_argument, NULL, OPT_NO_INSPECT },
    { "verbose", no_argument, NULL, 'v' },
    { "help", no_argument, NULL, OPT_HELP },
    { "version", no_argument, NULL, OPT_VERSION },
    { "shard-by", required_argument, NULL, OPT_SHARD_BY },
    { "image", required_argument, NULL, OPT_IMAGE },
    { "namespace", required_argument, NULL, OPT_NAMESPACE },
    { "output", required_argument, NULL, OPT_OUTPUT },
    { "secret", required_argument, NULL, OPT_SECRET },
    { NULL, 0, NULL, 0 },
  };
  const char *progress_arg = getenv ("FERRY_PROGRESS"), *at = NULL, *size = NULL;
  const char *vm = NULL, *metrics_port_arg = NULL, *metrics_address = NULL;
  const char *termination_log = NULL;
  struct metrics *metrics = NULL;
  bool json_out = false, verbose = false;
  struct kube_options kube = { .shard_by = SHARD_BY_HOST };
  bool inspect = false, no_inspect = false;
  enum progress_mode mode;
  const char *cmd, *arg;
  struct plan *plan;
  struct progress *progress;
  int c, r;

  while ((c = getopt_long (argc, argv, "v", long_options, NULL)) != -1) {
    switch (c) {
      case OPT_PROGRESS:
        progress_arg = optarg;
        break;
      case OPT_JSON:
        json_out = true;
        break;
      case OPT_AT:
        at = optarg;
        break;
      case OPT_SIZE:
        size = optarg;
        break;
      case OPT_VM:
        vm = optarg;
        break;
      case OPT_SHARD_BY:
        if (kube_parse_shard_by (optarg, &kube.shard_by) == -1) {
          fprintf (stderr, "ferry: --shard-by=%s: expected host, datastore or vm\n",
                   optarg);
          return 2;
        }
        break;
      case OPT_IMAGE:
        kube.image = optarg;
        break;
      case OPT_NAMESPACE:
        kube.namespace = optarg;
        break;
      case OPT_OUTPUT:
        kube.output = optarg;
        break;
      case OPT_SECRET:
        kube.secret = optarg;
        break;
      case OPT_METRICS_PORT:
        metrics_port_arg = optarg;
        break;
      case OPT_METRICS_ADDRESS:
        metrics_address = optarg;
        break;
      case OPT_TERMINATION_LOG:
        termination_log = optarg;
        break;
      case OPT_INSPECT:
        inspect = true;
        break;
      case OPT_NO_INSPECT:
        no_inspect = true;
        break;
      case 'v':
        verbose = true;
        break;
      case OPT_HELP:
        usage (stdout);
        return 0;
      case OPT_VERSION:
        printf ("ferry %s\n", FERRY_VERSION);
        return 0;
      default:
        usage (stderr);
        return finish (opt_or_env (termination_log, "FERRY_TERMINATION_LOG"), NULL, NULL,
                       2);
    }
  }
  termination_log = opt_or_env (termination_log, "FERRY_TERMINATION_LOG");
  metrics_port_arg = opt_or_env (metrics_port_arg, "FERRY_METRICS_PORT");
  metrics_address = opt_or_env (metrics_address, "FERRY_METRICS_ADDRESS");
  cmd = optind < argc ? argv[optind] : NULL;
  mode = parse_progress (progress_arg);
  if ((int)mode == -1) {
    fprintf (stderr, "ferry: --progress=%s: expected auto, tty, json or none\n",
             progress_arg);
    return finish (termination_log, cmd, NULL, 2);
  }
  if (verbose)
    ferry_debug_soap = ferry_debug_http = ferry_debug_stats = 1;
  else
    log_set_handlers (NULL, quiet_debug);
  termlog_capture_errors ();
  if (cmd && strcmp (cmd, "cdi-import") == 0 && argc - optind == 1) {
    /* CDI writes its own termination message (cdi.h) to /dev/termination-log. */
    progress = progress_new (mode);
    if (progress == NULL)
      return 1;
    r = cdi_import (progress, metrics_address, metrics_port_arg, termination_log,
                    FERRY_VERSION);
    progress_free (progress);
    return r;
  }
  if (argc - optind != 2) {
    usage (stderr);
    return finish (termination_log, cmd, NULL, 2);
  }
  arg = argv[optind + 1];

  if (strcmp (cmd, "digest") == 0)
    return finish (termination_log, cmd, NULL, cmd_digest (arg, size));
  if (strcmp (cmd, "validate") == 0)
    return finish (termination_log, cmd, NULL, validate_plan (arg, json_out, inspect));
  if (strcmp (cmd, "kube") == 0)
    return finish (termination_log, cmd, NULL, kube_run (arg, &kube));
  if (strcmp (cmd, "migrate") != 0 && strcmp (cmd, "precopy") != 0 &&
      strcmp (cmd, "cutover") != 0 && strcmp (cmd, "status") != 0 &&
      strcmp (cmd, "cancel") != 0 && strcmp (cmd, "convert") != 0) {
    fprintf (stderr, "ferry: unknown command \"%s\" (see ferry --help)\n", cmd);
    return finish (termination_log, cmd, NULL, 2);
  }
  if (strcmp (cmd, "convert") == 0 && vm == NULL) {
    fprintf (stderr, "ferry: convert needs --vm NAME\n");
    return finish (termination_log, cmd, NULL, 2);
  }
  plan = plan_load (arg);
  if (plan == NULL)
    return finish (termination_log, cmd, NULL, 1);
  if (no_inspect)
    plan->preflight_inspection = false;
  if (strcmp (cmd, "status") == 0)
    r = cmd_status (plan, json_out);
  else if (strcmp (cmd, "cancel") == 0)
    r = cmd_cancel (plan);
  else {
    progress = progress_new (mode);
    if (progress == NULL) {
      plan_free (plan);
      return finish (termination_log, cmd, NULL, 1);
    }
    /* Not for a cutover that only asks the running migrate (which serves them). */
    if (metrics_port_arg && strcmp (metrics_port_arg, "off") != 0 &&
        (strcmp (cmd, "cutover") != 0 || journal_runner (plan->state_dir) == 0)) {
      metrics =
          metrics_start (metrics_address, metrics_port_arg, progress, getenv ("OWNER_UID"));
      if (metrics == NULL) {
        progress_free (progress);
        plan_free (plan);
        return finish (termination_log, cmd, NULL, 1);
      }
    }
    if (strcmp (cmd, "cutover") == 0)
      r = cmd_cutover (plan, at, progress);
    else if (strcmp (cmd, "convert") == 0)
      r = conversion_command (plan, vm, progress);
    else
      r = migrate_run (plan, strcmp (cmd, "precopy") == 0 ? RUN_PRECOPY : RUN_MIGRATE,
                       progress);
    termlog_capture_errors (); /* the run restored the default handler */
    metrics_stop (metrics);
    progress_free (progress);
  }
  r = finish (termination_log, cmd, plan, r);
  plan_free (plan);
  return r;
}
