/* Temporary directories and files of the fuzz targets. */
#define _XOPEN_SOURCE 700
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fuzz.h"

void fz_die(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  fputs("fuzz finding: ", stderr);
  vfprintf(stderr, fmt, ap);
  fputc('\n', stderr);
  va_end(ap);
  abort();
}

static char tmpdir[256];

static void cleanup(void) {
  if (tmpdir[0]) fz_rmtree(tmpdir);
}

/* libFuzzer ends a run with _Exit (no atexit) and a finding with abort, so
 * a directory outlives its process: each is named by its pid, and the next
 * target to start removes those whose process is gone. */
static void remove_stale(const char *base) {
  DIR *d = opendir(base);
  if (!d) return;
  struct dirent *de;
  while ((de = readdir(d)) != NULL) {
    char *end;
    if (strncmp(de->d_name, "fleetsnap-fuzz-", 15) != 0) continue;
    long pid = strtol(de->d_name + 15, &end, 10);
    if (*end || pid <= 0) continue;
    /* EPERM is a live process of someone else's. Our own pid is a dead
     * process's directory: pids are reused. */
    int alive = kill((pid_t)pid, 0) == 0 || errno != ESRCH;
    if (alive && pid != (long)getpid()) continue;
    char path[512];
    snprintf(path, sizeof path, "%s/%s", base, de->d_name);
    struct stat st;
    if (lstat(path, &st) == 0 && S_ISDIR(st.st_mode) && st.st_uid == getuid()) fz_rmtree(path);
  }
  closedir(d);
}

const char *fz_tmpdir(void) {
  if (tmpdir[0]) return tmpdir;
  const char *base = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : getenv("TMPDIR");
  if (!base || !*base) base = "/tmp";
  remove_stale(base);
  snprintf(tmpdir, sizeof tmpdir, "%s/fleetsnap-fuzz-%ld", base, (long)getpid());
  if (mkdir(tmpdir, 0700) != 0) fz_die("mkdir %s: %s", tmpdir, strerror(errno));
  atexit(cleanup);
  return tmpdir;
}

static int rm_one(const char *path, const struct stat *st, int type, struct FTW *ftw) {
  (void)st;
  (void)ftw;
  int rc = type == FTW_DP ? rmdir(path) : unlink(path);
  if (rc != 0 && errno != ENOENT) fz_die("cannot remove %s: %s", path, strerror(errno));
  return 0;
}

void fz_rmtree(const char *path) {
  struct stat st;
  if (lstat(path, &st) != 0) return;
  if (nftw(path, rm_one, 16, FTW_DEPTH | FTW_PHYS) != 0)
    fz_die("cannot remove %s: %s", path, strerror(errno));
}

void fz_write_file(const char *path, const void *data, size_t size) {
  int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) fz_die("open %s: %s", path, strerror(errno));
  const char *p = data;
  while (size > 0) {
    ssize_t n = write(fd, p, size);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) fz_die("write %s: %s", path, strerror(errno));
    p += n;
    size -= (size_t)n;
  }
  close(fd);
}
