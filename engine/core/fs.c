/* Durable writes, create-only publication, directory publication. */
#define _GNU_SOURCE
#include "fs.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include "pathwalk.h"

static const char *key_or_base(const char *key, const char *path) {
  if (key) return key;
  const char *slash = strrchr(path, '/');
  return slash ? slash + 1 : path;
}

/* Writes data into a new exclusive temp sibling of path, fsynced and closed.
 * The temp name is returned in tmp (caller unlinks it on failure). */
static int write_temp(const char *path, const void *data, size_t len, mode_t mode,
                      char *tmp, size_t tmpcap, fsn_err *err) {
  const char *base;
  char *dir = fsn_dirname(path, &base);
  if (!dir) return fsn_fail(err, "ENOMEM", "out of memory");
  if (!*base) {
    free(dir);
    return fsn_fail(err, "EINVAL", "write '%s': no file name", path);
  }
  int fd = -1;
  for (int attempt = 0; attempt < 64 && fd < 0; attempt++) {
    uint64_t r = 0;
    if (getrandom(&r, sizeof r, 0) != (ssize_t)sizeof r) r = (uint64_t)attempt;
    int n = snprintf(tmp, tmpcap, "%s/.%s.fsn-tmp-%ld-%016llx", dir, base,
                     (long)getpid(), (unsigned long long)r);
    if (n < 0 || (size_t)n >= tmpcap) {
      free(dir);
      return fsn_fail(err, "ENAMETOOLONG", "write '%s': name too long", path);
    }
    fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, mode);
    if (fd < 0 && errno != EEXIST) {
      int e = errno;
      free(dir);
      tmp[0] = 0;
      return fsn_fail_errno(err, e, "write '%s'", path);
    }
  }
  free(dir);
  if (fd < 0) {
    tmp[0] = 0;
    return fsn_fail(err, "EEXIST", "write '%s': no free temp name", path);
  }
  int rc = 0;
  if (fsn_write_all(fd, data, len) != 0) rc = fsn_fail_errno(err, errno, "write '%s'", path);
  else if (fsync(fd) != 0) rc = fsn_fail_errno(err, errno, "fsync '%s'", path);
  /* A failed close can report a deferred write error: it fails the write. */
  if (close(fd) != 0 && rc == 0) rc = fsn_fail_errno(err, errno, "close '%s'", path);
  return rc;
}

int fsn_write_replace(const char *path, const void *data, size_t len, mode_t mode,
                      fsn_failpoints *fp, const char *key, fsn_err *err) {
  char tmp[4200];
  const char *k = key_or_base(key, path);
  fsn_failpoint_hit(fp, "before-write", k);
  if (write_temp(path, data, len, mode, tmp, sizeof tmp, err) != 0) {
    if (tmp[0]) unlink(tmp);
    return -1;
  }
  fsn_failpoint_hit(fp, "before-rename", k);
  if (rename(tmp, path) != 0) {
    int e = errno;
    unlink(tmp);
    return fsn_fail_errno(err, e, "replace '%s'", path);
  }
  if (fsn_fsync_parent(path, err) != 0) return -1;
  fsn_failpoint_hit(fp, "after-rename", k);
  return 0;
}

/* Compares the existing file at path with data; 1 equal, 0 different. */
static int same_content(const char *path, const void *data, size_t len, fsn_err *err) {
  int fd = fsn_open_regular(AT_FDCWD, path, path, err);
  if (fd < 0) return -1;
  struct stat st;
  int rc = 0;
  if (fstat(fd, &st) != 0) {
    rc = fsn_fail_errno(err, errno, "stat '%s'", path);
  } else if ((uint64_t)st.st_size == (uint64_t)len) {
    char *buf = malloc(len ? len : 1);
    size_t got = 0;
    if (!buf) rc = fsn_fail(err, "ENOMEM", "out of memory");
    else if (fsn_read_all(fd, buf, len, &got) != 0)
      rc = fsn_fail_errno(err, errno, "read '%s'", path);
    else if (got == len && memcmp(buf, data, len) == 0) {
      /* The earlier writer may have died before its fsync. */
      rc = fsync(fd) == 0 ? 1 : fsn_fail_errno(err, errno, "fsync '%s'", path);
    }
    free(buf);
  }
  close(fd);
  return rc;
}

int fsn_write_create(const char *path, const void *data, size_t len, mode_t mode,
                     int *adopted, fsn_failpoints *fp, const char *key, fsn_err *err) {
  char tmp[4200];
  const char *k = key_or_base(key, path);
  *adopted = 0;
  fsn_failpoint_hit(fp, "before-write", k);
  if (write_temp(path, data, len, mode, tmp, sizeof tmp, err) != 0) {
    if (tmp[0]) unlink(tmp);
    return -1;
  }
  fsn_failpoint_hit(fp, "before-link", k);
  int rc = 0;
  if (link(tmp, path) != 0) {
    int e = errno;
    if (e == EEXIST) {
      int same = same_content(path, data, len, err);
      if (same == 1) *adopted = 1;
      else if (same == 0)
        rc = fsn_fail(err, "ECONFLICT", "create '%s': a different file already exists", path);
      else
        rc = -1;
    } else {
      rc = fsn_fail_errno(err, e, "create '%s'", path);
    }
  }
  unlink(tmp);
  if (rc == 0 && fsn_fsync_parent(path, err) != 0) rc = -1;
  if (rc == 0) fsn_failpoint_hit(fp, "after-link", k);
  return rc;
}

/* {=== directory publication ===} */

/* start_only: queue every file's dirty pages for writeback
 * (sync_file_range WRITE) and return without waiting, changing nothing:
 * done before a long read of the same tree (a verification), the fsyncs
 * after it find their I/O done or under way. */
static int sync_tree(int dirfd, const char *shown, int depth, int private_modes, int start_only, fsn_err *err) {
  if (depth > 256) return fsn_fail(err, "EUNSAFE", "'%s': too deep", shown);
  fsn_dir *d = fsn_dir_open(dirfd);
  if (!d) return fsn_fail_errno(err, errno, "'%s'", shown);
  int rc = 0;
  const char *name;
  while (rc == 0 && (name = fsn_dir_next(d)) != NULL) {
    struct stat st;
    if (fstatat(dirfd, name, &st, AT_SYMLINK_NOFOLLOW) != 0) {
      rc = fsn_fail_errno(err, errno, "'%s/%s'", shown, name);
      break;
    }
    if (!S_ISDIR(st.st_mode) && !S_ISREG(st.st_mode)) {
      rc = fsn_fail(err, "EUNSAFE", "'%s/%s': not a regular file or directory", shown, name);
      break;
    }
    int flags = O_RDONLY | O_NOFOLLOW | O_CLOEXEC | (S_ISDIR(st.st_mode) ? O_DIRECTORY : 0);
    int fd = openat(dirfd, name, flags);
    if (fd < 0) {
      rc = fsn_fail_errno(err, errno, "open '%s/%s'", shown, name);
      break;
    }
    if (S_ISDIR(st.st_mode)) {
      char sub[4200];
      snprintf(sub, sizeof sub, "%s/%s", shown, name);
      rc = sync_tree(fd, sub, depth + 1, private_modes, start_only, err);
    } else if (rc == 0 && start_only && sync_file_range(fd, 0, 0, SYNC_FILE_RANGE_WRITE) != 0) {
      rc = fsn_fail_errno(err, errno, "writeback '%s/%s'", shown, name);
    }
    if (start_only) {
      close(fd);
      continue;
    }
    /* chmod only what needs it: a chmod moves ctime, and a hashed tree's
     * fingerprint (hash.h) must survive its publication. */
    mode_t want = S_ISDIR(st.st_mode) ? 0700 : 0600;
    if (rc == 0 && private_modes && (st.st_mode & 07777) != want && fchmod(fd, want) != 0)
      rc = fsn_fail_errno(err, errno, "chmod '%s/%s'", shown, name);
    if (rc == 0 && fsync(fd) != 0)
      rc = fsn_fail_errno(err, errno, "fsync '%s/%s'", shown, name);
    close(fd);
  }
  if (rc == 0 && errno) rc = fsn_fail_errno(err, errno, "read '%s'", shown);
  fsn_dir_close(d);
  return rc;
}

static int sync_root(const char *src, int private_modes, int start_only, const char *verb, fsn_err *err) {
  int fd = open(src, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0) {
    int e = errno;
    struct stat lst;
    /* O_NOFOLLOW|O_DIRECTORY on a symlink fails with ENOTDIR, not ELOOP. */
    if ((e == ELOOP || e == ENOTDIR) && lstat(src, &lst) == 0 && S_ISLNK(lst.st_mode))
      return fsn_fail(err, "EUNSAFE", "%s '%s': is a symbolic link", verb, src);
    return fsn_fail_errno(err, e, "%s '%s'", verb, src);
  }
  int rc = sync_tree(fd, src, 0, private_modes, start_only, err);
  if (start_only) {
    close(fd);
    return rc;
  }
  struct stat st;
  if (rc == 0 && private_modes && (fstat(fd, &st) != 0 || (st.st_mode & 07777) != 0700) &&
      fchmod(fd, 0700) != 0)
    rc = fsn_fail_errno(err, errno, "chmod '%s'", src);
  if (rc == 0 && fsync(fd) != 0) rc = fsn_fail_errno(err, errno, "fsync '%s'", src);
  close(fd);
  return rc;
}

int fsn_sync_dir_tree(const char *src, int private_modes, fsn_err *err) {
  return sync_root(src, private_modes, 0, "sync", err);
}

int fsn_start_writeback_tree(const char *src, fsn_err *err) {
  return sync_root(src, 0, 1, "writeback", err);
}

int fsn_publish_dir(const char *src, const char *dst, int flags, fsn_failpoints *fp,
                    const char *key, fsn_err *err) {
  const char *k = key_or_base(key, dst);
  if (flags & FSN_PUBLISH_SYNCED) {
    /* The caller made the tree durable (fsn_sync_dir_tree) and proved it
     * unchanged since: fsyncing every file again would only cost a device
     * flush each. The root must still be a directory, not a symlink. */
    struct stat st;
    if (lstat(src, &st) != 0) return fsn_fail_errno(err, errno, "publish '%s'", src);
    if (S_ISLNK(st.st_mode)) return fsn_fail(err, "EUNSAFE", "publish '%s': is a symbolic link", src);
    if (!S_ISDIR(st.st_mode)) return fsn_fail(err, "ENOTDIR", "publish '%s': not a directory", src);
  } else if (sync_root(src, flags & FSN_PUBLISH_PRIVATE, 0, "publish", err) != 0) {
    return -1;
  }
  fsn_failpoint_hit(fp, "before-publish", k);
  if (renameat2(AT_FDCWD, src, AT_FDCWD, dst, RENAME_NOREPLACE) != 0) {
    int e = errno;
    if (e == EEXIST || e == ENOTEMPTY)
      return fsn_fail(err, "EEXIST", "publish '%s' as '%s': target already exists", src, dst);
    if (e == EINVAL || e == ENOSYS)
      return fsn_fail(err, "ENOTSUP", "publish '%s' as '%s': this filesystem cannot rename without replacing (use a local filesystem)", src, dst);
    return fsn_fail_errno(err, e, "publish '%s' as '%s'", src, dst);
  }
  if (fsn_fsync_parents(dst, src, err) != 0) return -1;
  fsn_failpoint_hit(fp, "after-publish", k);
  return 0;
}

/* {=== staging directories ===} */

int fsn_mkdir_private(const char *path, int *created, fsn_err *err) {
  *created = 0;
  if (mkdir(path, 0700) == 0) {
    *created = 1;
    return fsn_fsync_parent(path, err);
  }
  if (errno != EEXIST) return fsn_fail_errno(err, errno, "mkdir '%s'", path);
  struct stat st;
  if (lstat(path, &st) != 0) return fsn_fail_errno(err, errno, "stat '%s'", path);
  if (S_ISLNK(st.st_mode)) return fsn_fail(err, "EUNSAFE", "mkdir '%s': is a symbolic link", path);
  if (!S_ISDIR(st.st_mode)) return fsn_fail(err, "ENOTDIR", "mkdir '%s': exists and is not a directory", path);
  if (st.st_uid != geteuid())
    return fsn_fail(err, "EUNSAFE", "mkdir '%s': owned by uid %ld, not by us", path, (long)st.st_uid);
  if ((st.st_mode & 07777) != 0700 && chmod(path, 0700) != 0)
    return fsn_fail_errno(err, errno, "chmod '%s'", path);
  return 0;
}

static int remove_in(int dirfd, const char *shown, int depth, fsn_err *err) {
  if (depth > 256) return fsn_fail(err, "EUNSAFE", "'%s': too deep", shown);
  fsn_dir *d = fsn_dir_open(dirfd);
  if (!d) return fsn_fail_errno(err, errno, "'%s'", shown);
  int rc = 0;
  const char *dname;
  while (rc == 0 && (dname = fsn_dir_next(d)) != NULL) {
    struct stat st;
    if (fstatat(dirfd, dname, &st, AT_SYMLINK_NOFOLLOW) != 0) {
      if (errno == ENOENT) continue;
      rc = fsn_fail_errno(err, errno, "stat '%s/%s'", shown, dname);
      break;
    }
    if (S_ISDIR(st.st_mode)) {
      int sub = openat(dirfd, dname, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
      if (sub < 0) { rc = fsn_fail_errno(err, errno, "open '%s/%s'", shown, dname); break; }
      char name[4200];
      snprintf(name, sizeof name, "%s/%s", shown, dname);
      rc = remove_in(sub, name, depth + 1, err);
      close(sub);
      if (rc == 0 && unlinkat(dirfd, dname, AT_REMOVEDIR) != 0 && errno != ENOENT)
        rc = fsn_fail_errno(err, errno, "rmdir '%s'", name);
    } else if (unlinkat(dirfd, dname, 0) != 0 && errno != ENOENT) {
      rc = fsn_fail_errno(err, errno, "unlink '%s/%s'", shown, dname);
    }
  }
  fsn_dir_close(d);
  return rc;
}

int fsn_remove_tree(const char *path, int *removed, fsn_err *err) {
  *removed = 0;
  struct stat st;
  if (lstat(path, &st) != 0) {
    if (errno == ENOENT) return 0;
    return fsn_fail_errno(err, errno, "remove '%s'", path);
  }
  if (S_ISLNK(st.st_mode)) return fsn_fail(err, "EUNSAFE", "remove '%s': is a symbolic link", path);
  if (S_ISDIR(st.st_mode)) {
    int fd = open(path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) return fsn_fail_errno(err, errno, "remove '%s'", path);
    int rc = remove_in(fd, path, 0, err);
    close(fd);
    if (rc) return -1;
    if (rmdir(path) != 0) return fsn_fail_errno(err, errno, "rmdir '%s'", path);
  } else if (unlink(path) != 0) {
    return fsn_fail_errno(err, errno, "unlink '%s'", path);
  }
  *removed = 1;
  return fsn_fsync_parent(path, err);
}

int fsn_safe_relative(const char *path, size_t len, fsn_err *err) {
  if (len == 0) return fsn_fail(err, "EUNSAFE", "path is empty");
  if (memchr(path, 0, len)) return fsn_fail(err, "EUNSAFE", "path contains a NUL byte");
  if (path[0] == '/') return fsn_fail(err, "EUNSAFE", "'%s': absolute path", path);
  size_t start = 0;
  for (size_t i = 0; i <= len; i++) {
    if (i < len && path[i] != '/') continue;
    size_t n = i - start;
    if (n == 0) return fsn_fail(err, "EUNSAFE", "'%s': empty path component", path);
    if (n == 1 && path[start] == '.') return fsn_fail(err, "EUNSAFE", "'%s': '.' component", path);
    if (n == 2 && path[start] == '.' && path[start + 1] == '.')
      return fsn_fail(err, "EUNSAFE", "'%s': '..' component", path);
    start = i + 1;
  }
  return 0;
}

int fsn_free_space(const char *path, uint64_t *avail, uint64_t *total, fsn_err *err) {
  struct statvfs sv;
  if (statvfs(path, &sv) != 0) return fsn_fail_errno(err, errno, "free space of '%s'", path);
  *avail = (uint64_t)sv.f_bavail * (uint64_t)sv.f_frsize;
  *total = (uint64_t)sv.f_blocks * (uint64_t)sv.f_frsize;
  return 0;
}

int fsn_read_file(const char *path, size_t max, fsn_buf *out, fsn_err *err) {
  int fd = fsn_open_regular(AT_FDCWD, path, path, err);
  if (fd < 0) return -1;
  struct stat st;
  int rc = 0;
  if (fstat(fd, &st) != 0) rc = fsn_fail_errno(err, errno, "stat '%s'", path);
  else if ((uint64_t)st.st_size > (uint64_t)max)
    rc = fsn_fail(err, "ETOOBIG", "read '%s': %lld bytes, more than the limit of %zu", path,
                  (long long)st.st_size, max);
  else if (fsn_buf_reserve(out, (size_t)st.st_size + 1) != 0)
    rc = fsn_fail(err, "ENOMEM", "out of memory");
  else {
    char chunk[65536];
    for (;;) {
      ssize_t r = read(fd, chunk, sizeof chunk);
      if (r < 0) {
        if (errno == EINTR) continue;
        rc = fsn_fail_errno(err, errno, "read '%s'", path);
        break;
      }
      if (r == 0) break;
      if (out->len + (size_t)r > max) {
        rc = fsn_fail(err, "ETOOBIG", "read '%s': more than the limit of %zu bytes", path, max);
        break;
      }
      fsn_buf_add(out, chunk, (size_t)r);
      if (out->oom) { rc = fsn_fail(err, "ENOMEM", "out of memory"); break; }
    }
  }
  close(fd);
  return rc;
}
