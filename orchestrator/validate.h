/* SPDX-License-Identifier: Apache-2.0 */
/* ferry: ferry validate (validate.c). */
#ifndef FERRY_VALIDATE_H
#define FERRY_VALIDATE_H

#include <stdbool.h>

#include "plan.h"

/* Check the plan at PLAN_PATH and print its concerns (JSON with JSON_OUT): 0 when it is
 * ready (no Critical concern), 1 when not.  With INSPECT, each VM's guest is inspected
 * too (inspection.h): its OS and whether virt-v2v can convert it.
 */
int validate_plan (const char *plan_path, bool json_out, bool inspect);

#endif /* FERRY_VALIDATE_H */
