/* No-follow path helpers. */
#define _GNU_SOURCE
#include "pathwalk.h"

#include <errno.h>
#include <stdint.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

int fsn_write_all(int fd, const void *buf, size_t n) {
  const char *p = buf;
  while (n > 0) {
    ssize_t w = write(fd, p, n);
    if (w < 0) {
      if (errno == EINTR) continue;
      return -1;
    }
    p += w;
    n -= (size_t)w;
  }
  return 0;
}

int fsn_read_all(int fd, void *buf, size_t n, size_t *got) {
  char *p = buf;
  size_t total = 0;
  while (total < n) {
    ssize_t r = read(fd, p + total, n - total);
    if (r < 0) {
      if (errno == EINTR) continue;
      return -1;
    }
    if (r == 0) break;
    total += (size_t)r;
  }
  *got = total;
  return 0;
}

char *fsn_dirname(const char *path, const char **base) {
  size_t len = strlen(path);
  while (len > 1 && path[len - 1] == '/') len--;
  const char *slash = NULL;
  for (size_t i = len; i > 0; i--)
    if (path[i - 1] == '/') { slash = path + i - 1; break; }
  if (!slash) {
    *base = path;
    return strdup(".");
  }
  *base = slash + 1;
  size_t dlen = slash == path ? 1 : (size_t)(slash - path);
  char *d = malloc(dlen + 1);
  if (!d) return NULL;
  memcpy(d, path, dlen);
  d[dlen] = 0;
  return d;
}

/* Opens every component of rel but the last as a directory, no-follow;
 * returns that directory's fd (a dup of dirfd when rel has one component). */
static int open_parent(int dirfd, const char *rel, const char **last, fsn_err *err) {
  int cur = fcntl(dirfd, F_DUPFD_CLOEXEC, 0);
  if (cur < 0) return fsn_fail_errno(err, errno, "dup"), -1;
  const char *p = rel;
  for (;;) {
    const char *slash = strchr(p, '/');
    if (!slash) { *last = p; return cur; }
    size_t n = (size_t)(slash - p);
    char name[256];
    if (n == 0 || n >= sizeof name) {
      close(cur);
      return fsn_fail(err, "EUNSAFE", "'%s': bad path component", rel), -1;
    }
    memcpy(name, p, n);
    name[n] = 0;
    int next = openat(cur, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    int e = errno;
    close(cur);
    if (next < 0) {
      if (e == ELOOP || e == ENOTDIR)
        return fsn_fail(err, "EUNSAFE", "'%s': component '%s' is not a directory", rel, name), -1;
      return fsn_fail_errno(err, e, "'%s'", rel), -1;
    }
    cur = next;
    p = slash + 1;
  }
}

static int unsafe_kind(int dirfd, const char *name, const char *what, fsn_err *err) {
  struct stat st;
  if (fstatat(dirfd, name, &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISLNK(st.st_mode))
    return fsn_fail(err, "EUNSAFE", "'%s': is a symbolic link", what);
  return fsn_fail(err, "EUNSAFE", "'%s': not a regular file", what);
}

int fsn_open_regular(int dirfd, const char *path, const char *what, fsn_err *err) {
  int parent = AT_FDCWD;
  const char *name = path;
  if (dirfd != AT_FDCWD) {
    parent = open_parent(dirfd, path, &name, err);
    if (parent < 0) return -1;
  }
  int fd = openat(parent, name, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
  int e = errno;
  int rc = fd;
  if (fd < 0) {
    if (e == ELOOP) rc = unsafe_kind(parent, name, what, err);
    else rc = fsn_fail_errno(err, e, "open '%s'", what);
  } else {
    struct stat st;
    if (fstat(fd, &st) != 0) {
      rc = fsn_fail_errno(err, errno, "stat '%s'", what);
      close(fd);
    } else if (!S_ISREG(st.st_mode)) {
      rc = S_ISDIR(st.st_mode) ? fsn_fail(err, "EISDIR", "'%s': is a directory", what)
                               : fsn_fail(err, "EUNSAFE", "'%s': not a regular file", what);
      close(fd);
    }
  }
  if (parent != AT_FDCWD) close(parent);
  return rc;
}

int fsn_create_beneath(int dirfd, const char *rel, mode_t mode, fsn_err *err) {
  const char *name;
  int parent = open_parent(dirfd, rel, &name, err);
  if (parent < 0) return -1;
  int fd = openat(parent, name, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, mode);
  int e = errno;
  close(parent);
  if (fd < 0) return fsn_fail_errno(err, e, "create '%s'", rel);
  return fd;
}

int fsn_mkdir_beneath(int dirfd, const char *rel, mode_t mode, fsn_err *err) {
  const char *name;
  int parent = open_parent(dirfd, rel, &name, err);
  if (parent < 0) return -1;
  int rc = mkdirat(parent, name, mode);
  int e = errno;
  close(parent);
  if (rc != 0) return fsn_fail_errno(err, e, "mkdir '%s'", rel);
  return 0;
}

int fsn_fsync_beneath(int dirfd, const char *rel, fsn_err *err) {
  const char *name;
  int parent = open_parent(dirfd, rel, &name, err);
  if (parent < 0) return -1;
  int fd = openat(parent, name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
  int e = errno;
  close(parent);
  if (fd < 0) return fsn_fail_errno(err, e, "open '%s'", rel);
  int rc = fsync(fd);
  e = errno;
  close(fd);
  if (rc != 0) return fsn_fail_errno(err, e, "fsync '%s'", rel);
  return 0;
}

int fsn_fsync_dir(const char *path, fsn_err *err) {
  int fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return fsn_fail_errno(err, errno, "open directory '%s'", path);
  int rc = fsync(fd);
  int e = errno;
  close(fd);
  /* Some filesystems (NFS, CIFS) refuse directory fsync; that is not data loss. */
  if (rc != 0 && e != EINVAL) return fsn_fail_errno(err, e, "fsync directory '%s'", path);
  return 0;
}

int fsn_fsync_parent(const char *path, fsn_err *err) {
  const char *base;
  char *dir = fsn_dirname(path, &base);
  if (!dir) return fsn_fail(err, "ENOMEM", "out of memory");
  int rc = fsn_fsync_dir(dir, err);
  free(dir);
  return rc;
}

/* The directories holding a and b made durable, the shared one once: a
 * rename within one directory (the usual publication) needs one device
 * flush, not two. Identity is the directory's inode, not its spelling. */
int fsn_fsync_parents(const char *a, const char *b, fsn_err *err) {
  const char *base;
  char *da = fsn_dirname(a, &base);
  if (!da) return fsn_fail(err, "ENOMEM", "out of memory");
  char *db = fsn_dirname(b, &base);
  if (!db) {
    free(da);
    return fsn_fail(err, "ENOMEM", "out of memory");
  }
  struct stat sa, sb;
  int same = strcmp(da, db) == 0 ||
             (stat(da, &sa) == 0 && stat(db, &sb) == 0 && sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino);
  int rc = fsn_fsync_dir(da, err);
  if (rc == 0 && !same) rc = fsn_fsync_dir(db, err);
  free(da);
  free(db);
  return rc;
}

/* {=== directory entries ===} */

/* The kernel's linux_dirent64. */
struct kdirent {
  uint64_t ino;
  int64_t off;
  unsigned short reclen;
  unsigned char type;
  char name[];
};

/* As glibc's readdir: 32 KiB per read, on the heap (a walk recurses). */
#define DIR_BUF 32768

struct fsn_dir {
  int fd;
  size_t pos, len;
  char buf[DIR_BUF] __attribute__((aligned(8)));
};

fsn_dir *fsn_dir_open(int fd) {
  fsn_dir *d = malloc(sizeof *d);
  if (!d) {
    errno = ENOMEM;
    return NULL;
  }
  d->fd = fd;
  d->pos = d->len = 0;
  return d;
}

const char *fsn_dir_next(fsn_dir *d) {
  for (;;) {
    if (d->pos >= d->len) {
      long n;
      do n = syscall(SYS_getdents64, d->fd, d->buf, sizeof d->buf);
      while (n < 0 && errno == EINTR);
      if (n < 0) return NULL;
      if (n == 0) {
        errno = 0;
        return NULL;
      }
      d->len = (size_t)n;
      d->pos = 0;
    }
    struct kdirent *e = (struct kdirent *)(d->buf + d->pos);
    d->pos += e->reclen;
    if (e->name[0] == '.' && (!e->name[1] || (e->name[1] == '.' && !e->name[2]))) continue;
    return e->name;
  }
}

void fsn_dir_close(fsn_dir *d) { free(d); }
