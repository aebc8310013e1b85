/* ferry: read-ahead for sequential readers of an immutable disk (see readahead.c). */
#ifndef FERRY_READAHEAD_H
#define FERRY_READAHEAD_H

#include <stdint.h>

/* Reads [offset, offset+count) of the disk from the source; reports its own errors. */
typedef int (*readahead_read_fn) (void *opaque, void *buf, uint32_t count, uint64_t offset);

struct readahead;

struct readahead *readahead_new (readahead_read_fn read, void *opaque, uint64_t size);
void readahead_free (struct readahead *ra);
int readahead_pread (struct readahead *ra, void *buf, uint32_t count, uint64_t offset);
void readahead_stats (struct readahead *ra, uint64_t *chunks, uint64_t *hits,
                      uint64_t *direct);

#endif /* FERRY_READAHEAD_H */
