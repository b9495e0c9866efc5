/*
 * The benchmark's CGI program: reads the request body (CONTENT_LENGTH
 * bytes of stdin, as a CGI must), then answers "hello" in one write(2).
 */
#include <errno.h>
#include <stdlib.h>
#include <unistd.h>

int main(void) {
  const char *cl = getenv("CONTENT_LENGTH");
  long left = cl ? strtol(cl, NULL, 10) : 0;
  char buf[65536];
  while (left > 0) {
    ssize_t n = read(0, buf, left < (long)sizeof buf ? (size_t)left : sizeof buf);
    if (n > 0) left -= n;
    else if (n == 0 || errno != EINTR) break;
  }
  static const char answer[] = "Content-Type: text/plain\r\n\r\nhello\n";
  size_t off = 0;
  while (off < sizeof answer - 1) {
    ssize_t n = write(1, answer + off, sizeof answer - 1 - off);
    if (n > 0) off += (size_t)n;
    else if (errno != EINTR) return 1;
  }
  return 0;
}
