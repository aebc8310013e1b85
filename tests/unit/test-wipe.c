/* SPDX-License-Identifier: Apache-2.0 */
/* ferry: no copy of a secret stays in freed memory after libcurl sent it or jansson
 * parsed it.
 *
 * A real POST of a Login-like body through common/http.c to a one-shot HTTP server on
 * 127.0.0.1, and a parse of a token answer with jansson; the caller wipes its own copies,
 * as soap.c and rhv/engine.c do, and then every private writable mapping of the process
 * (heap, thread arenas, stacks) is searched for the secret.  libcurl copies a small POST
 * body into its request buffer and jansson copies strings: without the wiping allocator
 * that common/http.c installs in both, the secret is found in their freed blocks.
 *
 * The secret is never in the program as text: it is made at run time and searched for
 * through a mask, so that the search itself leaves no copy.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>
#include <jansson.h>

#include "common/http.h"
#include "common/util.h"

#define SECRET_LEN 24
#define MASK 0x5a

static char masked[SECRET_LEN]; /* the secret XOR MASK */

static void
make_secret (char *out)
{
  for (size_t i = 0; i < SECRET_LEN; i++) {
    out[i] = (char)('a' + (rand () % 26));
    masked[i] = (char)(out[i] ^ MASK);
  }
  out[SECRET_LEN] = '\0';
}

static bool
matches_at (const unsigned char *p)
{
  for (size_t i = 0; i < SECRET_LEN; i++)
    if ((p[i] ^ MASK) != (unsigned char)masked[i])
      return false;
  return true;
}

/* How many copies of the secret the private writable mappings hold. */
static unsigned
copies_in_memory (void)
{
  FILE *maps = fopen ("/proc/self/maps", "r");
  char line[512];
  unsigned n = 0;

  assert_non_null (maps);
  while (fgets (line, sizeof line, maps)) {
    unsigned long start, end;
    char perms[5];
    if (sscanf (line, "%lx-%lx %4s", &start, &end, perms) != 3 ||
        strcmp (perms, "rw-p") != 0)
      continue;
    for (const unsigned char *p = (const unsigned char *)start;
         p + SECRET_LEN <= (const unsigned char *)end; p++)
      if ((*p ^ MASK) == (unsigned char)masked[0] && matches_at (p))
        n++;
  }
  fclose (maps);
  return n;
}

/* One HTTP exchange: read the request (wiped afterwards), answer 200. */
static void *
serve_once (void *arg)
{
  int lfd = *(int *)arg, fd = accept (lfd, NULL, NULL);
  char buf[4096];
  size_t got = 0;
  static const char answer[] = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";

  if (fd == -1)
    return NULL;
  /* The request ends with its body, which ends with "END". */
  while (got < sizeof buf) {
    ssize_t r = read (fd, buf + got, sizeof buf - got);
    if (r <= 0)
      break;
    got += (size_t)r;
    if (got >= 3 && memcmp (buf + got - 3, "END", 3) == 0)
      break;
  }
  explicit_bzero (buf, sizeof buf);
  if (write (fd, answer, sizeof answer - 1) < 0)
    perror ("write");
  close (fd);
  return NULL;
}

static void
test_curl_post_wiped (void **state)
{
  struct sockaddr_in sa = { .sin_family = AF_INET,
                            .sin_addr.s_addr = htonl (INADDR_LOOPBACK) };
  socklen_t salen = sizeof sa;
  int lfd = socket (AF_INET, SOCK_STREAM, 0);
  char url[64], *body;
  struct http_response resp;
  pthread_t server;
  (void)state;

  assert_true (lfd >= 0);
  assert_int_equal (bind (lfd, (struct sockaddr *)&sa, sizeof sa), 0);
  assert_int_equal (listen (lfd, 1), 0);
  assert_int_equal (getsockname (lfd, (struct sockaddr *)&sa, &salen), 0);
  snprintf (url, sizeof url, "http://127.0.0.1:%d", ntohs (sa.sin_port));
  struct http_config config = { .base_url = url, .connections = 1, .sslverify = true };
  struct http_pool *pool = http_pool_new (&config);
  assert_non_null (pool);

  body = malloc (256);
  assert_non_null (body);
  strcpy (body, "<Login><password>");
  make_secret (body + strlen (body));
  strcpy (body + strlen ("<Login><password>") + SECRET_LEN, "</password></Login>END");
  assert_int_equal (copies_in_memory (), 1);
  assert_int_equal (pthread_create (&server, NULL, serve_once, &lfd), 0);
  assert_int_equal (http_post (pool, "/sdk", NULL, body, strlen (body), true, &resp), 0);
  assert_int_equal (resp.status, 200);
  http_response_reset (&resp);
  pthread_join (server, NULL);
  explicit_bzero (body, 256);
  free (body);
  http_pool_free (pool);
  close (lfd);
  assert_int_equal (copies_in_memory (), 0);
}

static void
test_jansson_wiped (void **state)
{
  struct http_config config = { .base_url = "http://127.0.0.1",
                                .connections = 1,
                                .sslverify = true };
  char *text = malloc (128), *token;
  json_t *j;
  (void)state;

  /* The pool installs the allocators, as every provider makes one before parsing. */
  http_pool_free (http_pool_new (&config));
  assert_non_null (text);
  /* Past the first 16 bytes, which malloc's free lists overwrite, as in a real token. */
  strcpy (text, "{\"access_token\": \"eyJhbGciOiJSUzI1NiJ9.");
  make_secret (text + strlen (text));
  strcat (text, "\", \"token_type\": \"bearer\"}");
  j = json_loads (text, 0, NULL);
  explicit_bzero (text, 128);
  free (text);
  assert_non_null (j);
  token = strdup (json_string_value (json_object_get (j, "access_token")));
  json_decref (j);
  assert_int_equal (copies_in_memory (), 1); /* ours */
  explicit_bzero (token, strlen (token));
  free (token);
  assert_int_equal (copies_in_memory (), 0);
}

static void
test_realloc_wiped (void **state)
{
  char *p = malloc (64), *q;
  (void)state;

  assert_non_null (p);
  memset (p, 'x', 24);
  make_secret (p + 24);
  q = wiping_realloc (p, 1 << 20); /* moves the block */
  assert_non_null (q);
  assert_true (matches_at ((unsigned char *)q + 24));
  assert_int_equal (copies_in_memory (), 1);
  wiping_free (q);
  assert_int_equal (copies_in_memory (), 0);
}

int
main (void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test (test_curl_post_wiped),
    cmocka_unit_test (test_jansson_wiped),
    cmocka_unit_test (test_realloc_wiped),
  };
  srand ((unsigned)getpid ());
  return cmocka_run_group_tests (tests, NULL, NULL);
}
