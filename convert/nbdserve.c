/* SPDX-License-Identifier: Apache-2.0 */
/* ferry: read-only NBD exports on localhost TCP ports, served in-process (convert.h).
 *
 * The preflight inspection hands a VM's disks to virt-v2v-inspector, which takes an NBD
 * disk only as localhost + a TCP port (guest-lab.md), one port per disk.  The bytes come
 * from the caller's read callback (ferry's source at its snapshot), so nothing is copied
 * and only what the inspector reads is fetched.
 *
 * The protocol is the fixed newstyle handshake's small core: NBD_OPT_GO / NBD_OPT_INFO /
 * NBD_OPT_EXPORT_NAME for the one (default) export, NBD_OPT_ABORT, NBD_OPT_LIST; every
 * other option is answered NBD_REP_ERR_UNSUP, so clients fall back to simple replies and
 * no metadata contexts.  Transmission: NBD_CMD_READ and NBD_CMD_DISC; a write, trim or
 * zero gets EPERM (the export is read-only), anything else EINVAL.
 *
 * THREAD MODEL: one accept thread polls every listening socket and a stop pipe; each
 * connection gets its own thread, which serves its requests one at a time.  The read
 * callback may thus run in several threads at once.  convert_nbd_stop shuts every
 * connection down and joins all threads.
 */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <endian.h>

#include "common/log.h"
#include "convert.h"

#define NBD_MAGIC 0x4e42444d41474943ULL /* "NBDMAGIC" */
#define NBD_IHAVEOPT 0x49484156454F5054ULL
#define NBD_REP_MAGIC 0x3e889045565a9ULL
#define NBD_REQUEST_MAGIC 0x25609513U
#define NBD_SIMPLE_REPLY_MAGIC 0x67446698U

#define NBD_FLAG_FIXED_NEWSTYLE 1
#define NBD_FLAG_NO_ZEROES 2
#define NBD_FLAG_C_NO_ZEROES 2
#define NBD_FLAG_HAS_FLAGS 1
#define NBD_FLAG_READ_ONLY 2
#define NBD_FLAG_CAN_MULTI_CONN 256

#define NBD_OPT_EXPORT_NAME 1
#define NBD_OPT_ABORT 2
#define NBD_OPT_LIST 3
#define NBD_OPT_INFO 6
#define NBD_OPT_GO 7
#define NBD_REP_ACK 1
#define NBD_REP_SERVER 2
#define NBD_REP_INFO 3
#define NBD_REP_ERR_UNSUP 0x80000001U
#define NBD_REP_ERR_INVALID 0x80000003U
#define NBD_INFO_EXPORT 0

#define NBD_CMD_READ 0
#define NBD_CMD_WRITE 1
#define NBD_CMD_DISC 2
#define NBD_CMD_TRIM 4
#define NBD_CMD_WRITE_ZEROES 6

#define NBD_EPERM 1
#define NBD_EIO 5
#define NBD_EINVAL 22

#define MAX_OPTION 4096
#define MAX_READ (32 * 1024 * 1024)
#define MAX_CONNECTIONS 64

struct conn {
  struct convert_nbd *srv;
  size_t disk;
  int fd;
  pthread_t thread;
  bool done;
};

struct convert_nbd {
  size_t n;
  uint64_t *sizes;
  int *listen_fds;
  int *ports;
  convert_read_fn read;
  void *opaque;
  int stop_pipe[2];
  pthread_t acceptor;
  bool acceptor_started;
  pthread_mutex_t lock; /* conns, nr_conns, bytes */
  struct conn *conns[MAX_CONNECTIONS];
  size_t nr_conns;
  uint64_t bytes;
};

static int
read_full (int fd, void *buf, size_t count)
{
  char *p = buf;

  while (count > 0) {
    ssize_t r = read (fd, p, count);
    if (r == -1 && errno == EINTR)
      continue;
    if (r <= 0)
      return -1;
    p += r;
    count -= r;
  }
  return 0;
}

static int
write_full (int fd, const void *buf, size_t count)
{
  const char *p = buf;

  while (count > 0) {
    ssize_t r = send (fd, p, count, MSG_NOSIGNAL);
    if (r == -1 && errno == EINTR)
      continue;
    if (r <= 0)
      return -1;
    p += r;
    count -= r;
  }
  return 0;
}

/* Discard COUNT bytes (a write's payload, an option's data we do not read). */
static int
skip (int fd, uint64_t count)
{
  char buf[4096];

  while (count > 0) {
    size_t n = count < sizeof buf ? count : sizeof buf;
    if (read_full (fd, buf, n) == -1)
      return -1;
    count -= n;
  }
  return 0;
}

static int
option_reply (int fd, uint32_t option, uint32_t type, const void *data, uint32_t len)
{
  struct __attribute__ ((packed)) {
    uint64_t magic;
    uint32_t option, type, len;
  } h = { htobe64 (NBD_REP_MAGIC), htobe32 (option), htobe32 (type), htobe32 (len) };

  if (write_full (fd, &h, sizeof h) == -1)
    return -1;
  return len ? write_full (fd, data, len) : 0;
}

static uint16_t
export_flags (void)
{
  return NBD_FLAG_HAS_FLAGS | NBD_FLAG_READ_ONLY | NBD_FLAG_CAN_MULTI_CONN;
}

/* The handshake: 1 when the client entered transmission, 0 when it went away cleanly
 * (NBD_OPT_ABORT), -1 on a protocol or I/O error.
 */
static int
handshake (struct conn *c)
{
  uint64_t size = c->srv->sizes[c->disk];
  struct __attribute__ ((packed)) {
    uint64_t magic, opt;
    uint16_t flags;
  } hello = { htobe64 (NBD_MAGIC), htobe64 (NBD_IHAVEOPT),
              htobe16 (NBD_FLAG_FIXED_NEWSTYLE | NBD_FLAG_NO_ZEROES) };
  uint32_t cflags;

  if (write_full (c->fd, &hello, sizeof hello) == -1 ||
      read_full (c->fd, &cflags, sizeof cflags) == -1)
    return -1;
  cflags = be32toh (cflags);
  for (;;) {
    struct __attribute__ ((packed)) {
      uint64_t magic;
      uint32_t option, len;
    } o;
    if (read_full (c->fd, &o, sizeof o) == -1 || be64toh (o.magic) != NBD_IHAVEOPT)
      return -1;
    uint32_t option = be32toh (o.option), len = be32toh (o.len);
    if (len > MAX_OPTION)
      return -1;
    char data[MAX_OPTION];
    if (read_full (c->fd, data, len) == -1)
      return -1;
    switch (option) {
      case NBD_OPT_EXPORT_NAME: {
        struct __attribute__ ((packed)) {
          uint64_t size;
          uint16_t flags;
        } r = { htobe64 (size), htobe16 (export_flags ()) };
        char zeroes[124] = { 0 };
        if (write_full (c->fd, &r, sizeof r) == -1)
          return -1;
        if (!(cflags & NBD_FLAG_C_NO_ZEROES) &&
            write_full (c->fd, zeroes, sizeof zeroes) == -1)
          return -1;
        return 1;
      }
      case NBD_OPT_ABORT:
        option_reply (c->fd, option, NBD_REP_ACK, NULL, 0);
        return 0;
      case NBD_OPT_LIST: {
        uint32_t zero = 0; /* one export, the default "" */
        if (option_reply (c->fd, option, NBD_REP_SERVER, &zero, sizeof zero) == -1 ||
            option_reply (c->fd, option, NBD_REP_ACK, NULL, 0) == -1)
          return -1;
        break;
      }
      case NBD_OPT_INFO:
      case NBD_OPT_GO: {
        struct __attribute__ ((packed)) {
          uint16_t type;
          uint64_t size;
          uint16_t flags;
        } info = { htobe16 (NBD_INFO_EXPORT), htobe64 (size), htobe16 (export_flags ()) };
        uint32_t name_len;
        if (len < 6 || (memcpy (&name_len, data, 4), be32toh (name_len) > len - 6)) {
          if (option_reply (c->fd, option, NBD_REP_ERR_INVALID, NULL, 0) == -1)
            return -1;
          break;
        }
        /* Any export name is this disk's export. */
        if (option_reply (c->fd, option, NBD_REP_INFO, &info, sizeof info) == -1 ||
            option_reply (c->fd, option, NBD_REP_ACK, NULL, 0) == -1)
          return -1;
        if (option == NBD_OPT_GO)
          return 1;
        break;
      }
      default:
        if (option_reply (c->fd, option, NBD_REP_ERR_UNSUP, NULL, 0) == -1)
          return -1;
    }
  }
}

static int
simple_reply (int fd, uint64_t handle, uint32_t error)
{
  struct __attribute__ ((packed)) {
    uint32_t magic, error;
    uint64_t handle;
  } r = { htobe32 (NBD_SIMPLE_REPLY_MAGIC), htobe32 (error), handle };

  return write_full (fd, &r, sizeof r);
}

static void
transmission (struct conn *c)
{
  struct convert_nbd *s = c->srv;
  uint64_t size = s->sizes[c->disk];
  char *buf = malloc (MAX_READ);

  while (buf) {
    struct __attribute__ ((packed)) {
      uint32_t magic;
      uint16_t flags, type;
      uint64_t handle, offset;
      uint32_t length;
    } rq;
    if (read_full (c->fd, &rq, sizeof rq) == -1 || be32toh (rq.magic) != NBD_REQUEST_MAGIC)
      break;
    uint16_t type = be16toh (rq.type);
    uint64_t offset = be64toh (rq.offset);
    uint32_t length = be32toh (rq.length);
    if (type == NBD_CMD_DISC)
      break;
    if (type == NBD_CMD_WRITE) {
      if (skip (c->fd, length) == -1 || simple_reply (c->fd, rq.handle, NBD_EPERM) == -1)
        break;
      continue;
    }
    if (type == NBD_CMD_TRIM || type == NBD_CMD_WRITE_ZEROES) {
      if (simple_reply (c->fd, rq.handle, NBD_EPERM) == -1)
        break;
      continue;
    }
    if (type != NBD_CMD_READ || length > MAX_READ || offset > size ||
        length > size - offset) {
      if (simple_reply (c->fd, rq.handle, NBD_EINVAL) == -1)
        break;
      continue;
    }
    if (s->read (s->opaque, c->disk, buf, length, offset) == -1) {
      if (simple_reply (c->fd, rq.handle, NBD_EIO) == -1)
        break;
      continue;
    }
    pthread_mutex_lock (&s->lock);
    s->bytes += length;
    pthread_mutex_unlock (&s->lock);
    if (simple_reply (c->fd, rq.handle, 0) == -1 || write_full (c->fd, buf, length) == -1)
      break;
  }
  free (buf);
}

static void *
conn_thread (void *arg)
{
  struct conn *c = arg;

  if (handshake (c) == 1)
    transmission (c);
  shutdown (c->fd, SHUT_RDWR);
  __atomic_store_n (&c->done, true, __ATOMIC_RELEASE);
  return NULL;
}

/* Join and free the connections that ended (called with the lock held). */
static void
reap (struct convert_nbd *s, bool all)
{
  size_t k = 0;

  for (size_t i = 0; i < s->nr_conns; i++) {
    struct conn *c = s->conns[i];
    if (all || __atomic_load_n (&c->done, __ATOMIC_ACQUIRE)) {
      if (all)
        shutdown (c->fd, SHUT_RDWR);
      pthread_join (c->thread, NULL);
      close (c->fd);
      free (c);
    } else
      s->conns[k++] = c;
  }
  s->nr_conns = k;
}

static void *
accept_thread (void *arg)
{
  struct convert_nbd *s = arg;
  struct pollfd *fds = calloc (s->n + 1, sizeof *fds);

  if (fds == NULL)
    return NULL;
  fds[0] = (struct pollfd){ s->stop_pipe[0], POLLIN, 0 };
  for (size_t i = 0; i < s->n; i++)
    fds[i + 1] = (struct pollfd){ s->listen_fds[i], POLLIN, 0 };
  for (;;) {
    if (poll (fds, s->n + 1, -1) == -1) {
      if (errno == EINTR)
        continue;
      log_error ("NBD exports: poll: %m");
      break;
    }
    if (fds[0].revents)
      break;
    for (size_t i = 0; i < s->n; i++) {
      if (!(fds[i + 1].revents & POLLIN))
        continue;
      int fd = accept4 (s->listen_fds[i], NULL, NULL, SOCK_CLOEXEC);
      if (fd == -1)
        continue;
      struct conn *c = calloc (1, sizeof *c);
      pthread_mutex_lock (&s->lock);
      reap (s, false);
      if (c == NULL || s->nr_conns == MAX_CONNECTIONS) {
        pthread_mutex_unlock (&s->lock);
        close (fd);
        free (c);
        continue;
      }
      *c = (struct conn){ .srv = s, .disk = i, .fd = fd };
      if (pthread_create (&c->thread, NULL, conn_thread, c) != 0) {
        close (fd);
        free (c);
      } else
        s->conns[s->nr_conns++] = c;
      pthread_mutex_unlock (&s->lock);
    }
  }
  free (fds);
  return NULL;
}

/* A socket listening on 127.0.0.1, on a port the kernel chose (no race with others). */
static int
listen_local (int *port)
{
  struct sockaddr_in sa = { .sin_family = AF_INET,
                            .sin_addr.s_addr = htonl (INADDR_LOOPBACK) };
  socklen_t len = sizeof sa;
  int fd = socket (AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

  if (fd == -1 || bind (fd, (struct sockaddr *)&sa, sizeof sa) == -1 ||
      listen (fd, 16) == -1 || getsockname (fd, (struct sockaddr *)&sa, &len) == -1) {
    log_error ("NBD export on localhost: %m");
    if (fd != -1)
      close (fd);
    return -1;
  }
  *port = ntohs (sa.sin_port);
  return fd;
}

struct convert_nbd *
convert_nbd_serve (const uint64_t *sizes, size_t n, convert_read_fn read, void *opaque)
{
  struct convert_nbd *s = calloc (1, sizeof *s);

  if (s == NULL)
    goto nomem;
  s->n = n;
  s->read = read;
  s->opaque = opaque;
  s->stop_pipe[0] = s->stop_pipe[1] = -1;
  pthread_mutex_init (&s->lock, NULL);
  s->sizes = calloc (n, sizeof *s->sizes);
  s->listen_fds = calloc (n, sizeof *s->listen_fds);
  s->ports = calloc (n, sizeof *s->ports);
  if (s->sizes == NULL || s->listen_fds == NULL || s->ports == NULL)
    goto nomem;
  for (size_t i = 0; i < n; i++)
    s->listen_fds[i] = -1;
  memcpy (s->sizes, sizes, n * sizeof *sizes);
  for (size_t i = 0; i < n; i++) {
    s->listen_fds[i] = listen_local (&s->ports[i]);
    if (s->listen_fds[i] == -1)
      goto fail;
  }
  if (pipe2 (s->stop_pipe, O_CLOEXEC) == -1) {
    log_error ("NBD exports: pipe: %m");
    goto fail;
  }
  if (pthread_create (&s->acceptor, NULL, accept_thread, s) != 0) {
    log_error ("NBD exports: cannot start a thread");
    goto fail;
  }
  s->acceptor_started = true;
  return s;

nomem:
  log_error ("NBD exports: out of memory");
fail:
  convert_nbd_stop (s);
  return NULL;
}

int
convert_nbd_port (const struct convert_nbd *s, size_t i)
{
  return s->ports[i];
}

uint64_t
convert_nbd_bytes_served (struct convert_nbd *s)
{
  uint64_t b;

  pthread_mutex_lock (&s->lock);
  b = s->bytes;
  pthread_mutex_unlock (&s->lock);
  return b;
}

void
convert_nbd_stop (struct convert_nbd *s)
{
  if (s == NULL)
    return;
  if (s->acceptor_started) {
    if (write (s->stop_pipe[1], "x", 1) != 1)
      log_debug ("NBD exports: stop pipe: %m");
    pthread_join (s->acceptor, NULL);
  }
  /* The acceptor is gone: nobody else touches conns now (and the connections' threads
   * may need the lock to finish).
   */
  reap (s, true);
  for (size_t i = 0; s->listen_fds && i < s->n; i++)
    if (s->listen_fds[i] >= 0)
      close (s->listen_fds[i]);
  for (int i = 0; i < 2; i++)
    if (s->stop_pipe[i] >= 0)
      close (s->stop_pipe[i]);
  pthread_mutex_destroy (&s->lock);
  free (s->sizes);
  free (s->listen_fds);
  free (s->ports);
  free (s);
}
