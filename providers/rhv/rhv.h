/* SPDX-License-Identifier: Apache-2.0 */
/* ferry: the RHV / oVirt provider — engine REST API (SSO token, inventory, image
 * transfers, incremental backups) and the ovirt-imageio data path.
 *
 * One rhv_engine talks to one engine at https://ENGINE/ovirt-engine/api: JSON answers
 * (every scalar a string), XML bodies for POSTs, the OAuth token as a Bearer header,
 * logged in again on 401.  Each disk read is an image transfer: a ticket on an imageio
 * server (the host's transfer_url, or the engine's proxy_url) read with ranged GETs through
 * its own HTTP pool.
 *
 * THREAD MODEL: every function may be called from any thread; re-login is serialised by
 * the engine's login lock.  A transfer's pool is thread-safe; its fields are set when it
 * is started and changed only under the source's per-disk lock.
 */
#ifndef FERRY_RHV_H
#define FERRY_RHV_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include <jansson.h>

#include "common/http.h"
#include "providers/provider.h"
#include "providers/source.h"

struct rhv_engine;

struct rhv_config {
  const char *url; /* https://ENGINE/ovirt-engine/api */
  const char *user;
  const char *password; /* copied; wiped at close */
  const char *cacert;
  const char *thumbprint; /* pins the engine's certificate: API and imageio proxy */
  bool sslverify;
  unsigned connections;
  struct source_timeouts timeouts; /* the user's, for every HTTP pool */
};

/* A disk as the engine describes it. */
struct rhv_disk {
  char *id;
  char *alias;
  char *format;         /* raw | cow */
  char *status;         /* ok | locked | illegal */
  char *storage_type;   /* image | lun | managed_block_storage */
  char *backup;         /* none | incremental */
  char *storage_domain; /* the first storage domain's id */
  char *interface;      /* from the attachment: virtio, virtio_scsi, ... */
  uint64_t provisioned_size;
  uint64_t actual_size; /* bytes the volumes take on storage; 0 when not given */
  bool bootable;
};
DEFINE_VECTOR_TYPE (rhv_disk_vector, struct rhv_disk);

struct rhv_vm {
  char *id;
  char *name;
  char *status; /* down | up | suspended | ... */
  char *host;   /* the host id it runs on, or NULL */
  rhv_disk_vector disks;
};

/* An extent of an imageio /extents answer. */
struct rhv_extent {
  uint64_t start;
  uint64_t length;
  bool zero;
  bool hole;
  bool dirty;
};
DEFINE_VECTOR_TYPE (rhv_extent_vector, struct rhv_extent);

/* An image transfer (download) and the imageio connection serving it. */
struct rhv_transfer {
  char *id;
  char *disk_id;
  char *backup_id;   /* the backup it reads, or NULL */
  char *snapshot_id; /* the disk snapshot it reads, or NULL */
  char *url;         /* the imageio base used (https://HOST:PORT) */
  char *path;        /* /images/TICKET */
  struct http_pool *pool;
  unsigned max_readers;
  unsigned inactivity_timeout; /* s the engine lets the ticket idle (0 = forever) */
  bool open;                   /* created and neither finalized nor cancelled */
};

/* json.c: pure parsing (unit-tested). */
const char *rhv_json_str (json_t *obj, const char *key);
/* KEY as a number given as a string ("46137344") or a JSON integer; -1 if neither. */
int rhv_json_u64 (json_t *obj, const char *key, uint64_t *out);
/* KEY as "true"/"false" or a JSON boolean; DEF when missing. */
bool rhv_json_bool (json_t *obj, const char *key, bool def);
/* The list in a collection {"vm": [...]} or a follow {"disk_attachments":
 * {"disk_attachment":
 * [...]}}: KEY's array (or KEY.ITEM's); an empty array when missing (borrowed or static).
 */
json_t *rhv_json_list (json_t *obj, const char *key, const char *item);
/* "reason: detail" of an engine fault (JSON or XML), the "error_description"/"error" of an
 * SSO error, or the first line of BODY; malloc'd.
 */
char *rhv_fault_message (const char *body);
int rhv_parse_disk (json_t *disk, struct rhv_disk *out);
/* A VM with ?follow=disk_attachments.disk (or its attachments in ATTACHMENTS). */
int rhv_parse_vm (json_t *vm, struct rhv_vm *out);
/* An imageio /extents answer: the whole image, in order, contiguous from 0. */
int rhv_parse_extents (const char *body, rhv_extent_vector *out, char **why);
/* https://ENGINE[:PORT]/PREFIX/api -> base "https://ENGINE[:PORT]", api "/PREFIX/api",
 * sso "/PREFIX/sso/oauth/token", logout "/PREFIX/services/sso-logout".
 */
int rhv_parse_url (const char *url, char **base, char **api, char **sso, char **logout);
void rhv_disk_free (struct rhv_disk *disk);
void rhv_vm_free (struct rhv_vm *vm);

/* engine.c */
struct rhv_engine *rhv_engine_open (const struct rhv_config *config);
void rhv_engine_close (struct rhv_engine *e);
const char *rhv_engine_url (const struct rhv_engine *e);
/* VERB PATH (under the API prefix) with an XML BODY or NULL.  Returns the HTTP status
 * (with *OUT the parsed JSON of a 2xx answer, *FAULT the server's words otherwise), or -1
 * when there was no answer (reported).  A 401 logs in again and repeats once.
 */
long rhv_call (struct rhv_engine *e, const char *verb, const char *path, const char *body,
               json_t **out, char **fault);
/* The same, reporting anything but a 2xx as "WHAT: VERB PATH: HTTP N: words". */
int rhv_call_ok (struct rhv_engine *e, const char *what, const char *verb, const char *path,
                 const char *body, json_t **out);
/* <action/> or <NAME><CHILD>VALUE</CHILD>...</NAME> built with libxml2 (escaped); pairs
 * of CHILD, VALUE end with NULL; a CHILD "@id" sets the root's id attribute.
 */
char *rhv_xml (const char *root, ...) __attribute__ ((sentinel));
void rhv_engine_stats (struct rhv_engine *e, char *buf, size_t len);

/* inventory.c */
int rhv_find_vm (struct rhv_engine *e, const char *id_or_name, struct rhv_vm *vm);
int rhv_vm_status (struct rhv_engine *e, struct rhv_vm *vm);
char *rhv_storage_domain_name (struct rhv_engine *e, const char *sd_id);
/* The disk snapshot of DISK_ID that is SNAPSHOT (a disk snapshot id) or belongs to it (a
 * VM snapshot id), in *OUT (malloc'd): 1 found, 0 none, -1 (reported).
 */
int rhv_disk_snapshot (struct rhv_engine *e, const char *disk_id, const char *snapshot,
                       const char *what, char **out);

/* transfer.c: start (of the disk, of one of its disk snapshots, or of a backup's disk)
 * polls until transferring and connects to imageio (transfer_url,
 * then proxy_url); finish finalizes (OK) or cancels, polls until it is over and closes
 * the pool.  Both report their errors.
 */
int rhv_transfer_start (struct rhv_engine *e, const struct rhv_config *config,
                        const char *disk_id, const char *backup_id, const char *snapshot_id,
                        const char *what, struct rhv_transfer *t);
int rhv_transfer_finish (struct rhv_engine *e, struct rhv_transfer *t, bool ok,
                         const char *what);
/* Is the transfer transferring (1), over (0), stuck in another phase such as paused
 * (2), or unknown (-1, reported)? */
int rhv_transfer_alive (struct rhv_engine *e, struct rhv_transfer *t, const char *what);
void rhv_transfer_free (struct rhv_transfer *t);

/* Backups: start (full when FROM is NULL) and wait until ready; *MODES gets each disk's
 * backup_mode ("full"/"incremental") in the order of DISK_IDS.
 */
int rhv_backup_start (struct rhv_engine *e, const struct rhv_vm *vm, const char *from,
                      const char *const *disk_ids, size_t n, char **backup_id,
                      char **to_checkpoint, char **modes);
int rhv_backup_finalize (struct rhv_engine *e, const struct rhv_vm *vm,
                         const char *backup_id);
/* Is CHECKPOINT one of the VM's checkpoints (1), not (0), or -1 (reported)? */
int rhv_checkpoint_exists (struct rhv_engine *e, const struct rhv_vm *vm,
                           const char *checkpoint);

/* imageio.c */
int rhv_imageio_options (struct http_pool *pool, const char *path, unsigned *max_readers,
                         bool *extents);
int rhv_imageio_extents (struct http_pool *pool, const char *path, const char *context,
                         rhv_extent_vector *out);

#endif /* FERRY_RHV_H */
