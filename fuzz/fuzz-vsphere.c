/* SPDX-License-Identifier: Apache-2.0 */
/* ferry: fuzz target — a whole conversation with a hostile vSphere server.
 *
 * The provider's HTTP seam is replaced (-Wl,--wrap, fuzz-vsphere.wrap): http_post answers
 * each SOAP call with the next answer of the input, so the real soap_call, re-login,
 * RetrievePropertiesEx, inventory walk, task polling and the QueryChangedDiskAreas window
 * loop all run on what the fuzzer writes.
 *
 * Input: one letter choosing the operation (see ops[] below), an optional newline, then
 * the server's answers separated by a line "====".  An answer "!" is a transport failure;
 * when the answers run out, every further call fails the same way.
 *
 * Built with FUZZ_ONLY_CBT (fuzz-cbt) the input starts instead with a line
 * "CAPACITY CHANGEID" and every answer goes to vs_query_changed on that disk; a success
 * must give sorted, disjoint areas inside the disk.
 */
#include <inttypes.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/http.h"
#include "providers/vsphere/soap.h"

#include "fuzz/fuzz.h"

#define SEPARATOR "\n====\n"

/* The script of answers: the rest of the input. */
static const char *script;
static size_t script_len;
static unsigned generation;
static int pool_token;

int __wrap_http_post (struct http_pool *pool, const char *path, const char *const *headers,
                      const char *body, size_t len, bool idempotent,
                      struct http_response *resp);
struct http_pool *__wrap_http_pool_new (const struct http_config *config);
void __wrap_http_pool_free (struct http_pool *pool);
void __wrap_http_pool_set_cookie (struct http_pool *pool, const char *cookie);
unsigned __wrap_http_pool_generation (struct http_pool *pool);
void __wrap_sleep_ms (long ms);

int
__wrap_http_post (struct http_pool *pool, const char *path, const char *const *headers,
                  const char *body, size_t len, bool idempotent, struct http_response *resp)
{
  const char *end;
  size_t n;

  memset (resp, 0, sizeof *resp);
  if (script == NULL)
    return -1;
  end = memmem (script, script_len, SEPARATOR, strlen (SEPARATOR));
  n = end ? (size_t)(end - script) : script_len;
  resp->body = fuzz_strndup ((const uint8_t *)script, n);
  resp->len = n;
  if (end) {
    script_len -= n + strlen (SEPARATOR);
    script = end + strlen (SEPARATOR);
  } else
    script = NULL;
  if (strcmp (resp->body, "!") == 0) {
    http_response_reset (resp);
    return -1;
  }
  resp->status = strstr (resp->body, "Fault>") ? 500 : 200;
  resp->set_cookie = strdup ("vmware_soap_session=\"fuzz\"");
  return 0;
}

struct http_pool *
__wrap_http_pool_new (const struct http_config *config)
{
  return (struct http_pool *)&pool_token;
}

void
__wrap_http_pool_free (struct http_pool *pool)
{}

void
__wrap_http_pool_set_cookie (struct http_pool *pool, const char *cookie)
{
  generation++;
}

unsigned
__wrap_http_pool_generation (struct http_pool *pool)
{
  return generation;
}

void
__wrap_sleep_ms (long ms)
{}

int
LLVMFuzzerInitialize (int *argc, char ***argv)
{
  fuzz_quiet ();
  return 0;
}

/* A session as vs_open leaves it, without the two calls it makes. */
static struct vs_session *
canned_session (void)
{
  struct vs_session *s = calloc (1, sizeof *s);

  if (s == NULL)
    abort ();
  pthread_mutex_init (&s->login_lock, NULL);
  s->pool = (struct http_pool *)&pool_token;
  s->server = strdup ("vcenter.example");
  s->user = strdup ("administrator@vsphere.local");
  s->password = strdup ("secret");
  s->session_manager = strdup ("SessionManager");
  s->property_collector = strdup ("propertyCollector");
  s->search_index = strdup ("SearchIndex");
  s->root_folder = strdup ("group-d1");
  s->view_manager = strdup ("ViewManager");
  strcpy (s->soap_action, "urn:vim25/8.0.1.0");
  s->logged_in = true;
  return s;
}

static struct provider_disk canned_disk = {
  .key = (char *)"2000",
  .label = (char *)"Hard disk 1",
  .file_name = (char *)"[datastore1] vm/vm.vmdk",
  .datastore = (char *)"datastore1",
  .change_id = (char *)"52 3c 86 5a 0b 3d 2e 55-a5 9c 0f 8c 1b 6e 4d 2a/12",
  .export_name = (char *)"2000-hard-disk-1",
  .capacity = 8 * 1024 * 1024,
};
static struct vs_vm canned_vm = { .moref = (char *)"vm-42", .name = (char *)"seed-vm" };

/* Check what vs_query_changed promises on success. */
static void
query_changed (struct vs_session *s, const struct vs_vm *vm, const char *snap,
               const struct provider_disk *disk, const char *change_id)
{
  extent_vector areas = empty_vector;
  struct vs_fault fault = { 0 };

  if (vs_query_changed (s, vm, snap, disk, change_id, &areas, &fault) == 0) {
    for (size_t i = 0; i < areas.len; i++) {
      const struct extent *e = &areas.ptr[i];
      if (e->length > disk->capacity || e->offset > disk->capacity - e->length)
        abort ();
      if (i > 0 && e->offset < areas.ptr[i - 1].offset + areas.ptr[i - 1].length)
        abort ();
    }
  }
  vs_fault_reset (&fault);
  free (areas.ptr);
}

#ifndef FUZZ_ONLY_CBT
static void
find_vm (struct vs_session *s, const char *which, bool by_uuid, const char *datacenter)
{
  struct vs_vm vm;

  if (vs_find_vm (s, which, by_uuid, datacenter, &vm) == 0) {
    if (vm.disks.len == 0 || vm.dc_path == NULL)
      abort ();
    /* Go on as the provider does: the disks at the newest snapshot, then CBT. */
    const char *snap =
        vm.snapshots.len ? vm.snapshots.ptr[vm.snapshots.len - 1].moref : "snapshot-1";
    disk_vector disks = empty_vector;
    if (vs_snapshot_disks (s, &vm, snap, &disks) == 0 && disks.len > 0)
      query_changed (s, &vm, snap, &disks.ptr[0],
                     disks.ptr[0].change_id ? disks.ptr[0].change_id : "*");
    disk_vector_free (&disks);
  }
  vs_vm_free (&vm);
}
#endif

#ifndef FUZZ_ONLY_CBT
static void
run_op (unsigned op)
{
  struct vs_session *s;
  char *r = NULL;

  if (op == 0) {
    const struct vs_config config = { .server = "vcenter.example",
                                      .user = "administrator@vsphere.local",
                                      .password = "secret" };
    s = vs_open (&config);
    if (s)
      find_vm (s, "vm-42", false, "dc1");
    vs_close (s);
    return;
  }
  s = canned_session ();
  switch (op) {
    case 1:
      find_vm (s, "vm-42", false, NULL);
      break;
    case 2:
      find_vm (s, "seed-vm", false, "dc1");
      break;
    case 3:
      find_vm (s, "42 23 5a 9c-0b 3d", true, NULL);
      break;
    case 4:
      query_changed (s, &canned_vm, "snapshot-7", &canned_disk, "*");
      break;
    case 5:
      if (vs_create_snapshot (s, &canned_vm, "ferry-1", "<precopy & more>", &r) == 0 &&
          r == NULL)
        abort ();
      free (r);
      break;
    case 6:
      vs_remove_snapshot (s, &canned_vm, "snapshot-7");
      break;
    case 7:
      vs_enable_cbt (s, &canned_vm);
      break;
    case 8:
      vs_power_off (s, &canned_vm);
      break;
    case 9:
      vs_shutdown_guest (s, &canned_vm);
      break;
    case 10:
      free (vs_power_state (s, &canned_vm));
      break;
  }
  s->logged_in = false; /* no Logout: the script is what this op was given */
  vs_close (s);
}
#define NR_OPS 11
#endif

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
  char *input = fuzz_strndup (data, size);
  char *nl;

  generation = 0;
#ifdef FUZZ_ONLY_CBT
  struct provider_disk disk = canned_disk;
  char *change_id = NULL, *end;

  nl = strchr (input, '\n');
  script = nl ? nl + 1 : NULL;
  script_len = nl ? size - (nl + 1 - input) : 0;
  if (nl)
    *nl = '\0';
  disk.capacity = strtoull (input, &end, 10);
  while (*end == ' ')
    end++;
  change_id = *end ? end : (char *)"*";
  if (disk.capacity > 0) {
    struct vs_session *s = canned_session ();
    query_changed (s, &canned_vm, "snapshot-7", &disk, change_id);
    s->logged_in = false;
    vs_close (s);
  }
#else
  if (size > 0) {
    unsigned op = (uint8_t)(input[0] - 'a') % NR_OPS;
    nl = input + 1;
    if (*nl == '\n')
      nl++;
    script = nl;
    script_len = size - (nl - input);
    run_op (op);
  }
#endif
  script = NULL;
  free (input);
  return 0;
}
