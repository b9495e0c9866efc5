/*
 * The benchmark's SCGI-to-CGI wrapper, as socket's users put one between
 * socket and their CGI: read the SCGI netstring header from fd 0 with
 * read(2) exactly (never a byte of the body, which must stay on fd 0 for
 * the CGI), set each variable, then exec the CGI (argv[1...]) with stdin
 * and stdout unchanged. Not stdio: its buffering would swallow the body.
 * Usage: scgi-wrapper /path/to/cgi [args...]
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define MAX_HEADER (1 << 20)

static void fail(const char *why) {
  fprintf(stderr, "scgi-wrapper: %s\n", why);
  exit(1);
}

static int read_byte(char *c) {
  for (;;) {
    ssize_t n = read(0, c, 1);
    if (n == 1) return 1;
    if (n == 0) return 0;
    if (errno != EINTR) return -1;
  }
}

static void read_exactly(char *buf, size_t len) {
  size_t got = 0;
  while (got < len) {
    ssize_t n = read(0, buf + got, len - got);
    if (n > 0) {
      got += (size_t)n;
    } else if (n == 0) {
      fail("connection ended inside the header");
    } else if (errno != EINTR) {
      fail("read failed");
    }
  }
}

int main(int argc, char **argv) {
  if (argc < 2) fail("usage: scgi-wrapper CGI [ARGS...]");
  size_t len = 0;
  char c;
  int digits = 0;
  for (;;) {
    if (read_byte(&c) != 1) fail("no netstring length");
    if (c == ':') break;
    if (c < '0' || c > '9' || ++digits > 7) fail("bad netstring length");
    len = len * 10 + (size_t)(c - '0');
  }
  if (digits == 0 || len > MAX_HEADER) fail("bad netstring length");
  char *header = malloc(len + 1);
  if (!header) fail("out of memory");
  read_exactly(header, len + 1); /* the header and the ',' that ends it */
  if (header[len] != ',') fail("netstring not ended by ','");
  /* name\0value\0 pairs */
  size_t at = 0;
  while (at < len) {
    const char *name = header + at;
    size_t nlen = strnlen(name, len - at);
    if (at + nlen >= len) fail("variable name not terminated");
    const char *value = name + nlen + 1;
    size_t vlen = strnlen(value, len - at - nlen - 1);
    if (at + nlen + 1 + vlen >= len) fail("variable value not terminated");
    if (setenv(name, value, 1) != 0) fail("setenv failed");
    at += nlen + 1 + vlen + 1;
  }
  if (!getenv("GATEWAY_INTERFACE")) setenv("GATEWAY_INTERFACE", "CGI/1.1", 1);
  execv(argv[1], argv + 1);
  fail("cannot execute the CGI");
  return 1;
}
