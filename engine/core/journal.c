/* Write-ahead journal: framing, group commit, torn-tail recovery. */
#define _GNU_SOURCE
#include "journal.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include "crc32c.h"
#include "pathwalk.h"

static const unsigned char MAGIC[2] = {0xA1, 0xF5};

void fsn_journal_init(fsn_journal *j) {
  memset(j, 0, sizeof *j);
  j->fd = -1;
}

static uint32_t get32(const unsigned char *p) {
  return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static void put32(unsigned char *p, uint32_t v) {
  p[0] = (unsigned char)v;
  p[1] = (unsigned char)(v >> 8);
  p[2] = (unsigned char)(v >> 16);
  p[3] = (unsigned char)(v >> 24);
}

static uint32_t frame_crc(const unsigned char *lenbytes, const void *payload, size_t len) {
  uint32_t c = fsn_crc32c_update(0, lenbytes, 4);
  return fsn_crc32c_update(c, payload, len);
}

/* Length of the valid frame at p (within n bytes), or 0. */
static size_t valid_frame(const unsigned char *p, size_t n) {
  if (n < FSN_JOURNAL_FRAME_LEN || p[0] != MAGIC[0] || p[1] != MAGIC[1]) return 0;
  uint32_t len = get32(p + 2);
  if (len == 0 || len > FSN_JOURNAL_MAX_RECORD || len > n - FSN_JOURNAL_FRAME_LEN) return 0;
  if (frame_crc(p + 2, p + FSN_JOURNAL_FRAME_LEN, len) != get32(p + 6)) return 0;
  return FSN_JOURNAL_FRAME_LEN + len;
}

static void frame_header(unsigned char h[FSN_JOURNAL_FRAME_LEN], const void *payload, size_t len) {
  h[0] = MAGIC[0];
  h[1] = MAGIC[1];
  put32(h + 2, (uint32_t)len);
  put32(h + 6, frame_crc(h + 2, payload, len));
}

static int write_header(int fd, const char *path, fsn_err *err) {
  if (ftruncate(fd, 0) != 0 ||
      pwrite(fd, FSN_JOURNAL_HEADER, FSN_JOURNAL_HEADER_LEN, 0) != FSN_JOURNAL_HEADER_LEN ||
      fsync(fd) != 0)
    return fsn_fail_errno(err, errno, "journal '%s': write header", path);
  return 0;
}

/* Scans the frames; cuts a torn tail; refuses corruption before the tail. */
static int recover(fsn_journal *j, uint64_t size, fsn_err *err) {
  const unsigned char *map = mmap(NULL, size, PROT_READ, MAP_PRIVATE, j->fd, 0);
  if (map == MAP_FAILED) return fsn_fail_errno(err, errno, "journal '%s': map", j->path);
  int rc = 0;
  if (memcmp(map, FSN_JOURNAL_HEADER, FSN_JOURNAL_HEADER_LEN) != 0) {
    rc = fsn_fail(err, "ECORRUPT", "journal '%s': not a fleetsnap journal (bad header)", j->path);
    goto out;
  }
  uint64_t off = FSN_JOURNAL_HEADER_LEN;
  while (off < size) {
    size_t n = valid_frame(map + off, (size_t)(size - off));
    if (!n) break;
    off += n;
    j->records++;
  }
  if (off < size) {
    /* Only a crash during the last group commit can leave a bad frame, and
     * nothing valid is ever written after it. */
    for (uint64_t q = off + 1; q + FSN_JOURNAL_FRAME_LEN <= size; q++) {
      if (map[q] != MAGIC[0] || map[q + 1] != MAGIC[1]) continue;
      if (valid_frame(map + q, (size_t)(size - q))) {
        rc = fsn_fail(err, "ECORRUPT",
                      "journal '%s': corrupt record at offset %llu (a valid record follows at offset %llu)",
                      j->path, (unsigned long long)off, (unsigned long long)q);
        goto out;
      }
    }
    j->torn_bytes = size - off;
    if (!j->readonly && (ftruncate(j->fd, (off_t)off) != 0 || fsync(j->fd) != 0)) {
      rc = fsn_fail_errno(err, errno, "journal '%s': cut torn tail", j->path);
      goto out;
    }
  }
  j->end = off;
out:
  munmap((void *)map, size);
  return rc;
}

/* The open shared by writers and readers: j->readonly chooses whether a
 * journal may be created, restarted after a torn header, or cut. */
static int open_journal(fsn_journal *j, const char *path, fsn_err *err) {
  j->path = strdup(path);
  if (!j->path) return fsn_fail(err, "ENOMEM", "out of memory");
  int fd;
  if (j->readonly) {
    fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
  } else {
    fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd >= 0) j->created = 1;
    else if (errno == EEXIST) fd = open(path, O_RDWR | O_NOFOLLOW | O_CLOEXEC);
  }
  int rc = 0;
  if (fd < 0) {
    int e = errno;
    rc = e == ELOOP ? fsn_fail(err, "EUNSAFE", "journal '%s': is a symbolic link", path)
                    : fsn_fail_errno(err, e, "journal '%s'", path);
  } else {
    j->fd = fd;
    struct stat st;
    if (fstat(fd, &st) != 0) {
      rc = fsn_fail_errno(err, errno, "journal '%s'", path);
    } else if (!S_ISREG(st.st_mode)) {
      rc = fsn_fail(err, "EUNSAFE", "journal '%s': not a regular file", path);
    } else if ((uint64_t)st.st_size < FSN_JOURNAL_HEADER_LEN) {
      /* New, or a crash before the header was durable: a writer starts it
       * (again); a reader sees an empty journal. */
      char head[FSN_JOURNAL_HEADER_LEN];
      ssize_t n = pread(fd, head, sizeof head, 0);
      if (n < 0 || memcmp(head, FSN_JOURNAL_HEADER, (size_t)n) != 0)
        rc = fsn_fail(err, "ECORRUPT", "journal '%s': not a fleetsnap journal (bad header)", path);
      else if (!j->readonly && (rc = write_header(fd, path, err)) == 0)
        rc = fsn_fsync_parent(path, err);
      j->torn_bytes = n > 0 ? (uint64_t)n : 0;
      j->end = FSN_JOURNAL_HEADER_LEN;
    } else {
      rc = recover(j, (uint64_t)st.st_size, err);
    }
  }
  if (rc != 0) {
    if (fd >= 0) close(fd);
    free(j->path);
    fsn_journal_init(j);
    return -1;
  }
  return 0;
}

int fsn_journal_open(fsn_journal *j, const char *path, fsn_failpoints *fp, fsn_err *err) {
  fsn_journal_init(j);
  j->fp = fp;
  return open_journal(j, path, err);
}

int fsn_journal_open_readonly(fsn_journal *j, const char *path, fsn_err *err) {
  fsn_journal_init(j);
  j->readonly = 1;
  return open_journal(j, path, err);
}

int fsn_journal_write(fsn_journal *j, const void *payload, size_t len, const char *key,
                      fsn_err *err) {
  if (j->readonly) return fsn_fail(err, "EINVAL", "journal '%s': opened read-only", j->path);
  if (j->broken)
    return fsn_fail(err, "EIO", "journal '%s': an earlier write failed; reopen it", j->path);
  if (len == 0 || len > FSN_JOURNAL_MAX_RECORD)
    return fsn_fail(err, "ETOOBIG", "journal '%s': record of %zu bytes (limit %u)", j->path,
                    len, FSN_JOURNAL_MAX_RECORD);
  unsigned char h[FSN_JOURNAL_FRAME_LEN];
  frame_header(h, payload, len);
  fsn_buf_add(&j->pending, h, sizeof h);
  fsn_buf_add(&j->pending, payload, len);
  fsn_buf_add(&j->pending_keys, key ? key : "", (key ? strlen(key) : 0) + 1);
  if (j->pending.oom || j->pending_keys.oom) {
    j->broken = 1;
    return fsn_fail(err, "ENOMEM", "journal '%s': out of memory", j->path);
  }
  j->npending++;
  return 0;
}

static void hit_each(fsn_journal *j, const char *point) {
  const char *k = j->pending_keys.data;
  for (size_t i = 0; i < j->npending; i++) {
    fsn_failpoint_hit(j->fp, point, k);
    k += strlen(k) + 1;
  }
}

int fsn_journal_sync(fsn_journal *j, fsn_err *err) {
  if (j->broken)
    return fsn_fail(err, "EIO", "journal '%s': an earlier write failed; reopen it", j->path);
  if (j->npending == 0) return 0;
  hit_each(j, "before-append");
  const char *p = j->pending.data;
  size_t left = j->pending.len;
  uint64_t off = j->end;
  while (left > 0) {
    ssize_t w = pwrite(j->fd, p, left, (off_t)off);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) break;
    p += w;
    left -= (size_t)w;
    off += (uint64_t)w;
  }
  /* After a failed fdatasync the kernel may have dropped the dirty pages;
   * retrying could "succeed" without the data (fsyncgate), so stop here. */
  if (left > 0 || fdatasync(j->fd) != 0) {
    int e = errno ? errno : EIO;
    j->broken = 1;
    if (ftruncate(j->fd, (off_t)j->end) == 0) fdatasync(j->fd);
    return fsn_fail_errno(err, e, "journal '%s': append", j->path);
  }
  j->end = off;
  j->records += j->npending;
  hit_each(j, "after-append");
  fsn_buf_reset(&j->pending);
  fsn_buf_reset(&j->pending_keys);
  j->npending = 0;
  return 0;
}

int fsn_journal_next(fsn_journal *j, uint64_t *offset, fsn_buf *out, fsn_err *err) {
  if (*offset < FSN_JOURNAL_HEADER_LEN) *offset = FSN_JOURNAL_HEADER_LEN;
  if (*offset >= j->end) return 0;
  unsigned char h[FSN_JOURNAL_FRAME_LEN];
  if (pread(j->fd, h, sizeof h, (off_t)*offset) != (ssize_t)sizeof h)
    return fsn_fail(err, "ECORRUPT", "journal '%s': short record at offset %llu", j->path,
                    (unsigned long long)*offset);
  uint32_t len = get32(h + 2);
  if (h[0] != MAGIC[0] || h[1] != MAGIC[1] || len == 0 || len > FSN_JOURNAL_MAX_RECORD ||
      *offset + FSN_JOURNAL_FRAME_LEN + len > j->end)
    return fsn_fail(err, "ECORRUPT", "journal '%s': corrupt record at offset %llu", j->path,
                    (unsigned long long)*offset);
  fsn_buf_reset(out);
  if (fsn_buf_reserve(out, len) != 0) return fsn_fail(err, "ENOMEM", "out of memory");
  size_t got = 0;
  while (got < len) {
    ssize_t r = pread(j->fd, out->data + got, len - got,
                      (off_t)(*offset + FSN_JOURNAL_FRAME_LEN + got));
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) return fsn_fail_errno(err, r < 0 ? errno : EIO, "journal '%s': read", j->path);
    got += (size_t)r;
  }
  out->len = len;
  if (frame_crc(h + 2, out->data, len) != get32(h + 6))
    return fsn_fail(err, "ECORRUPT", "journal '%s': checksum mismatch at offset %llu", j->path,
                    (unsigned long long)*offset);
  *offset += FSN_JOURNAL_FRAME_LEN + len;
  return 1;
}

int fsn_journal_compact(fsn_journal *j, const void *payload, size_t len, fsn_err *err) {
  if (j->readonly) return fsn_fail(err, "EINVAL", "journal '%s': opened read-only", j->path);
  if (j->broken)
    return fsn_fail(err, "EIO", "journal '%s': an earlier write failed; reopen it", j->path);
  if (len == 0 || len > FSN_JOURNAL_MAX_RECORD)
    return fsn_fail(err, "ETOOBIG", "journal '%s': checkpoint of %zu bytes", j->path, len);
  if (fsn_journal_sync(j, err) != 0) return -1;
  const char *base;
  char *dir = fsn_dirname(j->path, &base);
  if (!dir) return fsn_fail(err, "ENOMEM", "out of memory");
  char tmp[4200];
  uint64_t r = 0;
  if (getrandom(&r, sizeof r, 0) != (ssize_t)sizeof r) r = (uint64_t)getpid();
  snprintf(tmp, sizeof tmp, "%s/.%s.fsn-tmp-%ld-%016llx", dir, base, (long)getpid(),
           (unsigned long long)r);
  free(dir);
  int fd = open(tmp, O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
  if (fd < 0) return fsn_fail_errno(err, errno, "journal '%s': compact", j->path);
  unsigned char h[FSN_JOURNAL_FRAME_LEN];
  frame_header(h, payload, len);
  int rc = 0;
  if (fsn_write_all(fd, FSN_JOURNAL_HEADER, FSN_JOURNAL_HEADER_LEN) != 0 ||
      fsn_write_all(fd, h, sizeof h) != 0 || fsn_write_all(fd, payload, len) != 0 ||
      fsync(fd) != 0)
    rc = fsn_fail_errno(err, errno, "journal '%s': compact", j->path);
  const char *key = strrchr(j->path, '/') ? strrchr(j->path, '/') + 1 : j->path;
  if (rc == 0) fsn_failpoint_hit(j->fp, "before-compact", key);
  if (rc == 0 && rename(tmp, j->path) != 0)
    rc = fsn_fail_errno(err, errno, "journal '%s': compact", j->path);
  if (rc != 0) {
    close(fd);
    unlink(tmp);
    return -1;
  }
  close(j->fd);
  j->fd = fd;
  j->end = FSN_JOURNAL_HEADER_LEN + sizeof h + len;
  j->records = 1;
  if (fsn_fsync_parent(j->path, err) != 0) {
    j->broken = 1;
    return -1;
  }
  fsn_failpoint_hit(j->fp, "after-compact", key);
  return 0;
}

int fsn_journal_close(fsn_journal *j, fsn_err *err) {
  if (j->fd < 0) return 0;
  int rc = (j->broken || j->readonly) ? 0 : fsn_journal_sync(j, err);
  close(j->fd);
  free(j->path);
  fsn_buf_free(&j->pending);
  fsn_buf_free(&j->pending_keys);
  fsn_journal_init(j);
  return rc;
}
