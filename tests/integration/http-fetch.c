/* SPDX-License-Identifier: Apache-2.0 */
/* ferry: test driver for common/http.c.
 *
 *   http-fetch [OPTIONS] URL-BASE PATH SIZE OUT
 *
 * Copies PATH (SIZE bytes) from the server at URL-BASE into OUT with parallel
 * http_get_range calls, N threads taking 1 MiB chunks from a locked cursor, then prints
 * the pool's stats as "requests=N retries=N bytes=N reauths=N".  Used by
 * tests/integration/test-http-tls.sh.
 *
 * With --post BODY it POSTs BODY (not idempotent) to PATH instead and prints the answer as
 * "status=N set_cookie=C body=B" (SIZE and OUT are then ignored).
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/log.h"
#include "common/http.h"

#define CHUNK (1024 * 1024)

static struct http_pool *pool;
static const char *path;
static uint64_t size;
static int out_fd;
static const char *reauth_cookie;
static const char *post_body;

static pthread_mutex_t cursor_lock = PTHREAD_MUTEX_INITIALIZER;
static uint64_t cursor;
static bool failed;

static int
reauth (void *opaque, unsigned generation)
{
  (void)opaque;
  fprintf (stderr, "http-fetch: reauth (generation %u)\n", generation);
  http_pool_set_cookie (pool, reauth_cookie);
  return 0;
}

static void *
worker (void *arg)
{
  char *buf = malloc (CHUNK);

  (void)arg;
  if (buf == NULL) {
    perror ("malloc");
    failed = true;
    return NULL;
  }
  for (;;) {
    uint64_t offset;
    size_t n;

    pthread_mutex_lock (&cursor_lock);
    offset = cursor;
    n = offset < size && !failed ? (size - offset < CHUNK ? size - offset : CHUNK) : 0;
    cursor += n;
    pthread_mutex_unlock (&cursor_lock);
    if (n == 0)
      break;
    if (http_get_range (pool, path, buf, n, offset) == -1 ||
        pwrite (out_fd, buf, n, offset) != (ssize_t)n) {
      pthread_mutex_lock (&cursor_lock);
      failed = true;
      pthread_mutex_unlock (&cursor_lock);
      break;
    }
  }
  free (buf);
  return NULL;
}

static void
usage (int status)
{
  fprintf (
      status ? stderr : stdout,
      "usage: http-fetch [--cacert F] [--thumbprint T] [--no-verify] [--connections N]\n"
      "                  [--cookie C] [--reauth-cookie C] [--max-retries N]\n"
      "                  [--backoff-ms MS] [--budget-ms MS] [--connect-timeout S]\n"
      "                  [--control-timeout S] [--low-speed-time S] [--max-body N]\n"
      "                  [--no-head] [--debug] [--post BODY]\n"
      "                  URL-BASE PATH SIZE OUT\n");
  exit (status);
}

int
main (int argc, char *argv[])
{
  enum {
    OPT_CACERT = 256,
    OPT_THUMB,
    OPT_NOVERIFY,
    OPT_CONN,
    OPT_COOKIE,
    OPT_REAUTH,
    OPT_RETRIES,
    OPT_BACKOFF,
    OPT_BUDGET,
    OPT_CONNECT_TIMEOUT,
    OPT_CONTROL_TIMEOUT,
    OPT_LOW_SPEED_TIME,
    OPT_MAX_BODY,
    OPT_NOHEAD,
    OPT_DEBUG,
    OPT_POST,
    OPT_HELP
  };
  static const struct option long_options[] = {
    { "cacert", required_argument, NULL, OPT_CACERT },
    { "thumbprint", required_argument, NULL, OPT_THUMB },
    { "no-verify", no_argument, NULL, OPT_NOVERIFY },
    { "connections", required_argument, NULL, OPT_CONN },
    { "cookie", required_argument, NULL, OPT_COOKIE },
    { "reauth-cookie", required_argument, NULL, OPT_REAUTH },
    { "max-retries", required_argument, NULL, OPT_RETRIES },
    { "backoff-ms", required_argument, NULL, OPT_BACKOFF },
    { "budget-ms", required_argument, NULL, OPT_BUDGET },
    { "connect-timeout", required_argument, NULL, OPT_CONNECT_TIMEOUT },
    { "control-timeout", required_argument, NULL, OPT_CONTROL_TIMEOUT },
    { "low-speed-time", required_argument, NULL, OPT_LOW_SPEED_TIME },
    { "max-body", required_argument, NULL, OPT_MAX_BODY },
    { "no-head", no_argument, NULL, OPT_NOHEAD },
    { "debug", no_argument, NULL, OPT_DEBUG },
    { "post", required_argument, NULL, OPT_POST },
    { "help", no_argument, NULL, OPT_HELP },
    { NULL, 0, NULL, 0 },
  };
  struct http_config config = {
    .sslverify = true,
    .connections = 4,
    .connect_timeout = 10,
    .control_timeout = 60,
    .data_timeout = 60,
    .backoff_ms = 10,
  };
  const char *cookie = NULL;
  bool head = true;
  struct http_stats stats;
  pthread_t *threads;
  uint64_t head_size;
  unsigned i;
  int c;

  while ((c = getopt_long (argc, argv, "", long_options, NULL)) != -1) {
    switch (c) {
      case OPT_CACERT:
        config.cacert = optarg;
        break;
      case OPT_THUMB:
        config.thumbprint = optarg;
        break;
      case OPT_NOVERIFY:
        config.sslverify = false;
        break;
      case OPT_CONN:
        config.connections = atoi (optarg);
        break;
      case OPT_COOKIE:
        cookie = optarg;
        break;
      case OPT_REAUTH:
        reauth_cookie = optarg;
        config.reauth = reauth;
        break;
      case OPT_RETRIES:
        config.max_retries = atoi (optarg);
        break;
      case OPT_BACKOFF:
        config.backoff_ms = atoi (optarg);
        break;
      case OPT_BUDGET:
        config.retry_budget_ms = atoi (optarg);
        break;
      case OPT_CONNECT_TIMEOUT:
        config.connect_timeout = atoi (optarg);
        break;
      case OPT_CONTROL_TIMEOUT:
        config.control_timeout = atoi (optarg);
        break;
      case OPT_LOW_SPEED_TIME:
        config.low_speed_time = atoi (optarg);
        break;
      case OPT_MAX_BODY:
        config.max_body = strtoull (optarg, NULL, 10);
        break;
      case OPT_NOHEAD:
        head = false;
        break;
      case OPT_DEBUG:
        ferry_debug_http = 1;
        break;
      case OPT_POST:
        post_body = optarg;
        break;
      case OPT_HELP:
        usage (0);
        break;
      default:
        usage (2);
    }
  }
  if (argc - optind != 4 || config.connections < 1)
    usage (2);
  config.base_url = argv[optind];
  path = argv[optind + 1];
  size = strtoull (argv[optind + 2], NULL, 10);

  if (post_body) {
    struct http_response resp;
    const char *const headers[] = { "Content-Type: text/xml; charset=utf-8", NULL };
    int r;

    pool = http_pool_new (&config);
    if (pool == NULL)
      exit (1);
    r = http_post (pool, path, headers, post_body, strlen (post_body), false, &resp);
    if (r == 0)
      printf ("status=%ld set_cookie=%s body=%s\n", resp.status,
              resp.set_cookie ? resp.set_cookie : "(none)", resp.body);
    http_response_reset (&resp);
    http_pool_stats (pool, &stats);
    printf ("requests=%" PRIu64 " retries=%" PRIu64 "\n", stats.requests, stats.retries);
    http_pool_free (pool);
    exit (r == 0 ? 0 : 1);
  }

  out_fd = open (argv[optind + 3], O_WRONLY | O_CREAT | O_TRUNC, 0644);
  if (out_fd == -1 || ftruncate (out_fd, size) == -1) {
    perror (argv[optind + 3]);
    exit (1);
  }

  pool = http_pool_new (&config);
  if (pool == NULL)
    exit (1);
  if (cookie)
    http_pool_set_cookie (pool, cookie);

  if (head) {
    if (http_head_size (pool, path, &head_size) == -1)
      exit (1);
    if (head_size != size) {
      fprintf (stderr, "http-fetch: HEAD says %" PRIu64 " bytes, expected %" PRIu64 "\n",
               head_size, size);
      exit (1);
    }
  }

  threads = calloc (config.connections, sizeof *threads);
  if (threads == NULL) {
    perror ("calloc");
    exit (1);
  }
  for (i = 0; i < config.connections; i++) {
    errno = pthread_create (&threads[i], NULL, worker, NULL);
    if (errno) {
      perror ("pthread_create");
      exit (1);
    }
  }
  for (i = 0; i < config.connections; i++)
    pthread_join (threads[i], NULL);
  free (threads);

  http_pool_stats (pool, &stats);
  printf ("requests=%" PRIu64 " retries=%" PRIu64 " bytes=%" PRIu64 " reauths=%" PRIu64
          "\n",
          stats.requests, stats.retries, stats.bytes, stats.reauths);
  http_pool_free (pool);
  if (close (out_fd) == -1) {
    perror ("close");
    exit (1);
  }
  exit (failed ? 1 : 0);
}
