/* SPDX-License-Identifier: Apache-2.0 */
/* ferry cdi-import: CDI's VDDK importer contract, without VDDK.
 *
 * CDI (containerized-data-importer) starts an importer pod per DataVolume, or per
 * checkpoint of a multi-stage (warm) import, with its IMPORTER_* environment and the PVC
 * mounted at /data (filesystem: the disk goes to /data/disk.img) or attached at
 * /dev/cdi-block-volume (block).  ferry reads the same variables (ferry.pod, "CDI
 * IMPORTER CONTRACT"), copies the disk through the provider and the disk cache — the
 * whole disk as of IMPORTER_CURRENT_CHECKPOINT, or, for a delta stage, only the areas
 * changed since IMPORTER_PREVIOUS_CHECKPOINT — writes CDI's termination message
 * ({"message": "Import Complete", "vddkInfo": {"Version": ..., "Host": ...}} or
 * {"message": "Unable to ...: why"}) and serves CDI's progress metric on port 8443.
 *
 * State between stages: each stage is a new pod on the same PVC, so what ferry needs lives
 * on the PVC (filesystem mode: /data/.ferry/, the cache metadata and the changeId of each
 * checkpoint copied) or comes from the checkpoints (a changeId as
 * IMPORTER_PREVIOUS_CHECKPOINT; block mode has no room for state).
 *
 * THREAD MODEL: the main thread; copies run worker threads (diskcache's, or this file's
 * for a delta copy); signals set a flag that makes source reads fail.
 */
#ifndef FERRY_CDI_H
#define FERRY_CDI_H

#include <stdint.h>

#include "progress.h"
#include "providers/source.h"

/* Run an import from the environment.  Exit status: 0, 1 (failed: bad input, the source
 * refused), 75 (cancelled by a signal, network or server errors).  The termination
 * message goes to TERMINATION_LOG, else /dev/termination-log when it exists.
 */
int cdi_import (struct progress *p, const char *metrics_address, const char *metrics_port,
                const char *termination_log, const char *version);

/* For cdi.c: copy the areas of disk I of SRC changed since CHANGE_ID over TARGET (which
 * holds the disk as of CHANGE_ID) with WORKERS threads (at most CDI_DELTA_MAX_WORKERS),
 * reporting progress to P; the bytes read in *FETCHED.  0 done; 1 (nothing reported) when
 * the source cannot answer for CHANGE_ID; -1 on errors (reported).
 */
#define CDI_DELTA_MAX_WORKERS 16
int cdi_copy_delta (struct source *src, size_t i, const char *change_id, const char *target,
                    struct progress *p, unsigned workers, uint64_t *fetched);

#endif /* FERRY_CDI_H */
