/* SPDX-License-Identifier: Apache-2.0 */
/* ferry: a small typed growable vector.
 *
 *   DEFINE_VECTOR_TYPE (extent_vector, struct extent);
 *   extent_vector v = empty_vector;
 *   if (extent_vector_append (&v, e) == -1) ...
 *   for (size_t i = 0; i < v.len; i++) ... v.ptr[i] ...
 *   extent_vector_reset (&v);
 *
 * append/reserve return -1 with errno = ENOMEM on failure and leave the vector unchanged.
 */
#ifndef FERRY_VECTOR_H
#define FERRY_VECTOR_H

#include <errno.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

int generic_vector_reserve (void **ptr, size_t *cap, size_t len, size_t n, size_t itemsize);

#define DEFINE_VECTOR_TYPE(name, type)                                                     \
  typedef struct {                                                                         \
    type *ptr;                                                                             \
    size_t len;                                                                            \
    size_t cap;                                                                            \
  } name;                                                                                  \
                                                                                           \
  static inline __attribute__ ((__unused__)) int name##_reserve (name *v, size_t n)        \
  {                                                                                        \
    return generic_vector_reserve ((void **)&v->ptr, &v->cap, v->len, n, sizeof (type));   \
  }                                                                                        \
                                                                                           \
  static inline __attribute__ ((__unused__)) int name##_append (name *v, type elem)        \
  {                                                                                        \
    if (v->len >= v->cap && name##_reserve (v, 1) == -1)                                   \
      return -1;                                                                           \
    v->ptr[v->len++] = elem;                                                               \
    return 0;                                                                              \
  }                                                                                        \
                                                                                           \
  static inline __attribute__ ((__unused__)) void name##_reset (name *v)                   \
  {                                                                                        \
    free (v->ptr);                                                                         \
    v->ptr = NULL;                                                                         \
    v->len = v->cap = 0;                                                                   \
  }

#define empty_vector                                                                       \
  {                                                                                        \
    .ptr = NULL, .len = 0, .cap = 0                                                        \
  }

#endif /* FERRY_VECTOR_H */
