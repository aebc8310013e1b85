/* SPDX-License-Identifier: Apache-2.0 */
/* ferry: Kubernetes resource quantities as byte counts (quantity.h).
 *
 * The grammar (k8s.io/apimachinery's resource.Quantity):
 *   quantity ::= ["+"] number suffix
 *   number   ::= digits | digits "." digits | digits "." | "." digits
 *   suffix   ::= "" | Ki | Mi | Gi | Ti | Pi | Ei | m | k | M | G | T | P | E
 *              | ("e" | "E") ["+" | "-"] digits
 * "E" alone is exa; followed by a sign or a digit it starts an exponent.  The value is
 * kept exact (digits as an integer, a power of ten, a power of two) until the end, then
 * rounded up to whole bytes; it must fit an int64 as Kubernetes' does.
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "quantity.h"

#define MAX_DIGITS 19    /* significant digits: below 10^19 fits a uint64 */
#define MAX_EXPONENT 400 /* beyond this, every exponent counts as this + 1 */

/* The suffix at S (the whole rest of the string): its power of ten and of two, or -1. */
static int
parse_suffix (const char *s, int *pow10, int *pow2)
{
  static const char units[] = "kMGTPE";
  const char *u;

  *pow10 = *pow2 = 0;
  if (*s == '\0')
    return 0;
  if (strcmp (s, "m") == 0) {
    *pow10 = -3;
    return 0;
  }
  if ((*s == 'e' || *s == 'E') && s[1] != '\0' && strchr ("+-0123456789", s[1])) {
    bool neg = s[1] == '-';
    const char *d = s + 1 + (s[1] == '-' || s[1] == '+');
    int n = 0;
    if (*d == '\0' || strspn (d, "0123456789") != strlen (d))
      return -1;
    for (; *d; d++)
      if ((n = n * 10 + (*d - '0')) > MAX_EXPONENT)
        n = MAX_EXPONENT + 1; /* enough to overflow, or to round up to 1 */
    *pow10 = neg ? -n : n;
    return 0;
  }
  u = s[0] == 'K' ? units : strchr (units, s[0]); /* "Ki", not "ki"; "k", not "K" */
  if (u == NULL || (s[1] != '\0' && strcmp (s + 1, "i") != 0) ||
      (s[0] == 'K' && s[1] == '\0') || (s[0] == 'k' && s[1] == 'i'))
    return -1;
  if (s[1] == 'i')
    *pow2 = 10 * (int)(u - units + 1);
  else
    *pow10 = 3 * (int)(u - units + 1);
  return 0;
}

int
quantity_parse (const char *s, uint64_t *bytes, const char **why)
{
  unsigned __int128 v = 0;
  int pow10 = 0, pow2 = 0, suffix10, sig = 0, zeros = 0;
  bool digits = false, point = false, rem = false;
  const char *p = s;

  *why = "not a number";
  if (s == NULL)
    return -1;
  if (*p == '-') {
    *why = "negative";
    return -1;
  }
  if (*p == '+')
    p++;
  /* V the significant digits as an integer, times 10^POW10: leading zeros are dropped,
   * trailing ones only counted (ZEROS), so "1.000000000000000000000Gi" is not too precise.
   */
  for (; (*p >= '0' && *p <= '9') || (*p == '.' && !point); p++) {
    if (*p == '.') {
      point = true;
      continue;
    }
    digits = true;
    if (point)
      pow10--;
    if (*p == '0') {
      zeros += v != 0;
      continue;
    }
    for (; zeros >= 0; zeros--) {
      if (++sig > MAX_DIGITS) {
        *why = "too many digits";
        return -1;
      }
      v = v * 10 + (zeros ? 0 : *p - '0');
    }
    zeros = 0;
  }
  pow10 += zeros;
  if (!digits)
    return -1;
  if (parse_suffix (p, &suffix10, &pow2) == -1) {
    *why = "not a quantity's suffix (Ki Mi Gi Ti Pi Ei, k M G T P E, m, or an exponent "
           "such as e9)";
    return -1;
  }
  pow10 += suffix10;
  *why = "too large";
  for (; v && pow10 > 0; pow10--)
    if ((v *= 10) > INT64_MAX)
      return -1;
  if (pow10 == 0 && v > (unsigned __int128)INT64_MAX >> pow2)
    return -1;
  v <<= pow2; /* below 2^124: V < 10^19 < 2^64 when POW10 < 0, and POW2 <= 60 */
  for (; v && pow10 < 0; pow10++) {
    rem |= v % 10 != 0;
    v /= 10;
  }
  v += rem; /* a fraction of a byte is a byte */
  if (v > INT64_MAX)
    return -1;
  *bytes = v;
  return 0;
}
