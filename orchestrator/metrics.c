/* SPDX-License-Identifier: Apache-2.0 */
/* ferry: Prometheus metrics over HTTPS (metrics.h). */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include "common/log.h"
#include "metrics.h"

struct metrics {
  int fd;
  int stop_pipe[2];
  int port;
  SSL_CTX *ctx;
  struct progress *progress;
  char *owner_uid;
  pthread_t thread;
};

/* ---- the document ---- */

/* A label value with \, " and newline escaped, as the text format wants. */
static void
put_label (FILE *out, const char *s)
{
  for (; s && *s; s++) {
    if (*s == '\\' || *s == '"')
      fputc ('\\', out), fputc (*s, out);
    else if (*s == '\n')
      fputs ("\\n", out);
    else
      fputc (*s, out);
  }
}

static void
header (FILE *out, const char *name, const char *type, const char *help)
{
  fprintf (out, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

struct totals {
  FILE *out;
  const char *metric; /* the per-disk metric being written, or NULL */
  uint64_t done, total;
  double rate;
  unsigned disks;
};

static void
disk_line (void *data, const struct progress_info *d)
{
  struct totals *t = data;
  double v;

  if (t->metric == NULL) {
    t->done += d->done;
    t->total += d->total;
    t->disks++;
    if (d->active)
      t->rate += d->rate;
    return;
  }
  if (strcmp (t->metric, "ferry_disk_bytes_done") == 0)
    v = d->done;
  else if (strcmp (t->metric, "ferry_disk_bytes_total") == 0)
    v = d->total;
  else if (strcmp (t->metric, "ferry_disk_zero_bytes") == 0)
    v = d->zero_bytes;
  else if (strcmp (t->metric, "ferry_disk_rate_bytes_per_second") == 0)
    v = d->rate;
  else
    v = d->active;
  fprintf (t->out, "%s{vm=\"", t->metric);
  put_label (t->out, d->vm);
  fputs ("\",disk=\"", t->out);
  put_label (t->out, d->disk);
  fprintf (t->out, "\",round=\"%u\"} %.0f\n", d->round, v);
}

static void
vm_line (void *data, const struct progress_vm *vm)
{
  struct totals *t = data;

  fprintf (t->out, "%s{vm=\"", t->metric);
  put_label (t->out, vm->name);
  if (strcmp (t->metric, "ferry_vm_state") == 0) {
    fputs ("\",state=\"", t->out);
    put_label (t->out, vm->state);
    fputs ("\"} 1\n", t->out);
  } else if (strcmp (t->metric, "ferry_vm_round") == 0)
    fprintf (t->out, "\"} %u\n", vm->round);
  else if (strcmp (t->metric, "ferry_vm_change_rate_bytes_per_second") == 0)
    fprintf (t->out, "\"} %.0f\n", vm->change_rate);
  else
    fprintf (t->out, "\"} %.3f\n", vm->predicted_downtime);
}

void
metrics_write (FILE *out, struct progress *p, const char *owner_uid)
{
  static const char *const disk_metrics[][2] = {
    { "ferry_disk_bytes_done",
      "Bytes fetched so far in the disk's current (or last) round" },
    { "ferry_disk_bytes_total", "Bytes to fetch in the disk's current (or last) round" },
    { "ferry_disk_zero_bytes", "Known-zero bytes written locally, not fetched" },
    { "ferry_disk_rate_bytes_per_second", "Fetch rate of the disk's round" },
    { "ferry_disk_active", "1 while the disk's round runs" },
  };
  static const char *const vm_metrics[][3] = {
    { "ferry_vm_round", "gauge", "The VM's current or last round" },
    { "ferry_vm_state", "gauge", "The VM's state (the state label; value 1)" },
    { "ferry_vm_predicted_downtime_seconds", "gauge",
      "Predicted downtime of a cutover now, from the last round" },
    { "ferry_vm_change_rate_bytes_per_second", "gauge",
      "The guest's write rate measured between rounds" },
  };
  struct totals t = { .out = out };
  double percent;

  progress_foreach (p, disk_line, NULL, &t);
  /* Percent of the bytes to fetch in the transfers running now (or that ran last). */
  if (t.total > 0)
    percent = 100.0 * t.done / t.total;
  else
    percent = t.disks > 0 ? 100 : 0;
  if (percent > 100)
    percent = 100;

  header (out, "kubevirt_cdi_import_progress_total", "counter",
          "The import progress in percentage");
  fputs ("kubevirt_cdi_import_progress_total{ownerUID=\"", out);
  put_label (out, owner_uid);
  fprintf (out, "\"} %.2f\n", percent);
  header (out, "ferry_populator_progress", "counter",
          "Progress of volume population in percentage");
  fputs ("ferry_populator_progress{ownerUID=\"", out);
  put_label (out, owner_uid);
  fprintf (out, "\"} %.2f\n", percent);
  header (out, "ferry_rate_bytes_per_second", "gauge",
          "Fetch rate of all the transfers running now");
  fprintf (out, "ferry_rate_bytes_per_second %.0f\n", t.rate);

  for (size_t i = 0; i < sizeof disk_metrics / sizeof disk_metrics[0]; i++) {
    header (out, disk_metrics[i][0], "gauge", disk_metrics[i][1]);
    t.metric = disk_metrics[i][0];
    progress_foreach (p, disk_line, NULL, &t);
  }
  for (size_t i = 0; i < sizeof vm_metrics / sizeof vm_metrics[0]; i++) {
    header (out, vm_metrics[i][0], vm_metrics[i][1], vm_metrics[i][2]);
    t.metric = vm_metrics[i][0];
    progress_foreach (p, NULL, vm_line, &t);
  }
}

/* ---- TLS ---- */

static void
log_ssl_error (const char *what)
{
  char buf[256] = "unknown error";
  unsigned long e = ERR_get_error ();

  if (e)
    ERR_error_string_n (e, buf, sizeof buf);
  log_error ("metrics: %s: %s", what, buf);
  ERR_clear_error ();
}

/* A context with a fresh self-signed certificate (ECDSA P-256, CN=ferry, 10 years). */
static SSL_CTX *
make_context (void)
{
  EVP_PKEY *key = EVP_EC_gen ("P-256");
  X509 *cert = X509_new ();
  SSL_CTX *ctx = NULL;
  X509_NAME *name;
  unsigned char serial[16];
  FILE *rnd;

  if (key == NULL || cert == NULL) {
    log_ssl_error ("making the key");
    goto out;
  }
  rnd = fopen ("/dev/urandom", "re");
  if (rnd == NULL || fread (serial, 1, sizeof serial, rnd) != sizeof serial) {
    log_error ("metrics: /dev/urandom: %m");
    if (rnd)
      fclose (rnd);
    goto out;
  }
  fclose (rnd);
  serial[0] &= 0x7f; /* positive */
  BIGNUM *bn = BN_bin2bn (serial, sizeof serial, NULL);
  X509_set_version (cert, 2);
  BN_to_ASN1_INTEGER (bn, X509_get_serialNumber (cert));
  BN_free (bn);
  X509_gmtime_adj (X509_getm_notBefore (cert), -3600);
  X509_gmtime_adj (X509_getm_notAfter (cert), 10L * 365 * 24 * 3600);
  X509_set_pubkey (cert, key);
  name = X509_get_subject_name (cert);
  X509_NAME_add_entry_by_txt (name, "CN", MBSTRING_ASC, (const unsigned char *)"ferry", -1,
                              -1, 0);
  X509_set_issuer_name (cert, name);
  if (X509_sign (cert, key, EVP_sha256 ()) == 0) {
    log_ssl_error ("signing the certificate");
    goto out;
  }
  ctx = SSL_CTX_new (TLS_server_method ());
  if (ctx == NULL || SSL_CTX_set_min_proto_version (ctx, TLS1_2_VERSION) != 1 ||
      SSL_CTX_use_certificate (ctx, cert) != 1 || SSL_CTX_use_PrivateKey (ctx, key) != 1) {
    log_ssl_error ("TLS context");
    SSL_CTX_free (ctx);
    ctx = NULL;
  }

out:
  X509_free (cert);
  EVP_PKEY_free (key);
  return ctx;
}

/* ---- the server ---- */

static void
serve_one (struct metrics *m, int fd)
{
  struct timeval tv = { .tv_sec = 5 };
  char req[4096];
  size_t len = 0;
  char *body = NULL, *head = NULL;
  size_t body_len = 0;
  SSL *ssl;

  setsockopt (fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  setsockopt (fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  ssl = SSL_new (m->ctx);
  if (ssl == NULL || SSL_set_fd (ssl, fd) != 1 || SSL_accept (ssl) != 1) {
    ERR_clear_error (); /* a client that is not TLS, or gave up: not our error */
    goto out;
  }
  while (len < sizeof req - 1) {
    int n = SSL_read (ssl, req + len, sizeof req - 1 - len);
    if (n <= 0)
      goto out;
    len += n;
    req[len] = '\0';
    if (strstr (req, "\r\n\r\n") || strstr (req, "\n\n"))
      break;
  }
  req[len] = '\0';
  bool get = strncmp (req, "GET ", 4) == 0, head_only = strncmp (req, "HEAD ", 5) == 0;
  const char *path = req + (get ? 4 : head_only ? 5 : 0);
  bool found = (get || head_only) &&
               (strncmp (path, "/metrics ", 9) == 0 || strncmp (path, "/metrics?", 9) == 0);
  FILE *fp = open_memstream (&body, &body_len);
  if (fp == NULL)
    goto out;
  if (found)
    metrics_write (fp, m->progress, m->owner_uid);
  else
    fputs ("not found: ferry serves /metrics\n", fp);
  fclose (fp);
  int hl = asprintf (&head,
                     "HTTP/1.1 %s\r\n"
                     "Content-Type: %s\r\n"
                     "Content-Length: %zu\r\n"
                     "Connection: close\r\n\r\n",
                     found                ? "200 OK"
                     : (get || head_only) ? "404 Not Found"
                                          : "405 Method Not Allowed",
                     found ? "text/plain; version=0.0.4; charset=utf-8" : "text/plain",
                     body_len);
  if (hl > 0 && SSL_write (ssl, head, hl) == hl && !head_only && body_len > 0)
    SSL_write (ssl, body, body_len);
  SSL_shutdown (ssl);

out:
  ERR_clear_error ();
  free (head);
  free (body);
  SSL_free (ssl);
  close (fd);
}

static void *
server_thread (void *arg)
{
  struct metrics *m = arg;

  for (;;) {
    struct pollfd pfd[2] = { { .fd = m->fd, .events = POLLIN },
                             { .fd = m->stop_pipe[0], .events = POLLIN } };
    if (poll (pfd, 2, -1) == -1) {
      if (errno == EINTR)
        continue;
      log_error ("metrics: poll: %m");
      return NULL;
    }
    if (pfd[1].revents)
      return NULL;
    if (pfd[0].revents & POLLIN) {
      int fd = accept4 (m->fd, NULL, NULL, SOCK_CLOEXEC);
      if (fd >= 0)
        serve_one (m, fd);
    }
  }
}

/* Listen on ADDRESS:PORT; the port bound in *BOUND. */
static int
listen_on (const char *address, const char *port, int *bound)
{
  struct addrinfo hints = { .ai_family = AF_UNSPEC,
                            .ai_socktype = SOCK_STREAM,
                            .ai_flags = AI_PASSIVE | AI_NUMERICSERV | AI_NUMERICHOST },
                  *res, *ai;
  struct sockaddr_storage ss;
  socklen_t sl = sizeof ss;
  int fd = -1, err, one = 1;

  err = getaddrinfo (address, port, &hints, &res);
  if (err) {
    log_error ("metrics: address %s port %s: %s", address, port, gai_strerror (err));
    return -1;
  }
  for (ai = res; ai; ai = ai->ai_next) {
    fd = socket (ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, ai->ai_protocol);
    if (fd == -1)
      continue;
    setsockopt (fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind (fd, ai->ai_addr, ai->ai_addrlen) == 0 && listen (fd, 16) == 0)
      break;
    err = errno;
    close (fd);
    fd = -1;
    errno = err;
  }
  freeaddrinfo (res);
  if (fd == -1) {
    log_error ("metrics: cannot listen on %s port %s: %m", address, port);
    return -1;
  }
  getsockname (fd, (struct sockaddr *)&ss, &sl);
  *bound = ntohs (ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
                                           : ((struct sockaddr_in *)&ss)->sin_port);
  return fd;
}

struct metrics *
metrics_start (const char *address, const char *port, struct progress *p,
               const char *owner_uid)
{
  struct metrics *m = calloc (1, sizeof *m);
  sigset_t all, old;
  char *end;

  if (m == NULL) {
    log_error ("metrics: calloc: %m");
    return NULL;
  }
  m->fd = m->stop_pipe[0] = m->stop_pipe[1] = -1;
  if (address == NULL || *address == '\0')
    address = "0.0.0.0";
  errno = 0;
  long n = strtol (port, &end, 10);
  if (*port == '\0' || *end || errno || n < 0 || n > 65535) {
    log_error ("metrics: port %s: expected a number from 0 to 65535", port);
    goto err;
  }
  m->progress = p;
  m->owner_uid = strdup (owner_uid ? owner_uid : "");
  m->ctx = make_context ();
  if (m->owner_uid == NULL || m->ctx == NULL)
    goto err;
  m->fd = listen_on (address, port, &m->port);
  if (m->fd == -1)
    goto err;
  if (pipe2 (m->stop_pipe, O_CLOEXEC) == -1) {
    log_error ("metrics: pipe: %m");
    goto err;
  }
  /* No signals in the server thread: they belong to the run's signal thread, and a
   * client that hangs up makes a write fail with EPIPE instead of killing ferry.
   */
  sigfillset (&all);
  pthread_sigmask (SIG_BLOCK, &all, &old);
  int e = pthread_create (&m->thread, NULL, server_thread, m);
  pthread_sigmask (SIG_SETMASK, &old, NULL);
  if (e) {
    log_error ("metrics: pthread_create: %s", strerror (e));
    goto err;
  }
  log_info ("metrics on https://%s:%d/metrics", address, m->port);
  return m;

err:
  if (m->fd != -1)
    close (m->fd);
  if (m->stop_pipe[0] != -1)
    close (m->stop_pipe[0]), close (m->stop_pipe[1]);
  SSL_CTX_free (m->ctx);
  free (m->owner_uid);
  free (m);
  return NULL;
}

int
metrics_port (const struct metrics *m)
{
  return m->port;
}

void
metrics_stop (struct metrics *m)
{
  if (m == NULL)
    return;
  if (write (m->stop_pipe[1], "x", 1) != 1)
    log_error ("metrics: stop: %m");
  pthread_join (m->thread, NULL);
  close (m->stop_pipe[0]);
  close (m->stop_pipe[1]);
  close (m->fd);
  SSL_CTX_free (m->ctx);
  free (m->owner_uid);
  free (m);
}
