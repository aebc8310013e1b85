/* SPDX-License-Identifier: Apache-2.0 */
/* ferry: Kubernetes resource quantities as byte counts ("10Gi", "1500M", "1e9"), as CDI
 * passes a DataVolume's requested size in IMPORTER_IMAGE_SIZE.
 */
#ifndef FERRY_QUANTITY_H
#define FERRY_QUANTITY_H

#include <stdint.h>

/* Parse S strictly as Kubernetes does: a number (digits, optionally with a fraction, an
 * optional '+'), then a binary suffix (Ki Mi Gi Ti Pi Ei), a decimal one (m k M G T P E),
 * an exponent (e3, E-2, e+9) or nothing.  A fraction of a byte rounds up, as Kubernetes'
 * Quantity.Value does.  0 with *BYTES set; -1 with *WHY (a static string: "not a number",
 * "negative", "too large", ...) and nothing reported.
 */
int quantity_parse (const char *s, uint64_t *bytes, const char **why);

#endif /* FERRY_QUANTITY_H */
