/*
 * This machine's cost of starting a program: fork(2), execv("/bin/true"),
 * waitpid(2), N times one after another (argv[1], default 2000); prints the
 * mean milliseconds per start. Every fork-based server (tcpserver, socat,
 * fcgiwrap, uWSGI's CGI plugin, socket's workers running a CGI) pays it per
 * request, so ratios against them move with it from machine to machine.
 */
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

int main(int argc, char **argv) {
  long n = argc > 1 ? strtol(argv[1], NULL, 10) : 2000;
  if (n < 1) n = 1;
  char *const child[] = {"/bin/true", NULL};
  struct timespec t0, t1;
  clock_gettime(CLOCK_MONOTONIC, &t0);
  for (long i = 0; i < n; i++) {
    pid_t pid = fork();
    if (pid < 0) {
      perror("fork");
      return 1;
    }
    if (pid == 0) {
      execv(child[0], child);
      _exit(127);
    }
    int status;
    if (waitpid(pid, &status, 0) < 0 || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
      fprintf(stderr, "fork-exec: /bin/true failed\n");
      return 1;
    }
  }
  clock_gettime(CLOCK_MONOTONIC, &t1);
  double ms = (t1.tv_sec - t0.tv_sec) * 1e3 + (t1.tv_nsec - t0.tv_nsec) / 1e6;
  printf("%.4f\n", ms / n);
  return 0;
}
