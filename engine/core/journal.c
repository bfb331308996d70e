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

/* {=== resynchronisation after a bad frame ===}
 *
 * After the first invalid frame the rest of the file is searched for any
 * valid frame: one means corruption, none a torn tail. Checking each "A1 F5"
 * candidate by checksumming the payload it claims costs that length, and a
 * crafted file can put a candidate claiming the rest of the file every six
 * bytes: quadratic (minutes for 1 MiB). Instead every byte after the bad
 * frame is fed to the CRC once, and each candidate's checksum is derived from
 * running values.
 *
 * CRC-32C is linear over GF(2). Write raw(r, m) for the register after
 * feeding bytes m into r (the table loop without the inversions:
 * fsn_crc32c_update(c, m) is ~raw(~c, m)) and a*b for multiplication of
 * polynomials mod P. Then
 *   raw(r, m)      = r * x^(8|m|)  ^  raw(0, m)
 *   raw(0, [a, b)) = R(b)  ^  R(a) * x^(8(b-a))     where R(i) = raw(0, [off, i))
 * A frame at q of length L (payload [q+10, e), e = q+10+L; length bytes at
 * q+2, checksum at q+6) has crc = ~raw(raw(~0, lenbytes), [q+10, e)), so it
 * is valid iff
 *   R(e) == (raw(~0, lenbytes) ^ R(q+10)) * x^(8L)  ^  ~crc.
 * The right side is known when the running CRC passes q+10, the left when it
 * passes e; candidates wait in between in a min-heap on e. Each byte is
 * searched once and checksummed once; a candidate costs O(log L)
 * multiplications and a push and a pop (log of the number waiting, at most
 * one per six bytes, 24 bytes of memory each). */

#define CRC32C_POLY 0x82F63B78u /* reflected Castagnoli polynomial */

/* a*b mod P, bit-reflected like the CRC (x^0 is the top bit). */
static uint32_t gf_mul(uint32_t a, uint32_t b) {
  uint32_t p = 0;
  for (uint32_t m = 1u << 31; m; m >>= 1) {
    if (a & m) p ^= b;
    b = (b & 1) ? (b >> 1) ^ CRC32C_POLY : b >> 1;
  }
  return p;
}

/* x^(8n) mod P, from pow2[k] = x^(2^k) mod P: the product of
 * x^(2^(i+3)) over the bits i of n, which is a record length (k < 32). */
_Static_assert(FSN_JOURNAL_MAX_RECORD < (1u << 29), "record lengths fit the power table");
static uint32_t x_pow_8n(uint32_t n, const uint32_t pow2[32]) {
  uint32_t p = 1u << 31;
  for (unsigned k = 3; n; n >>= 1, k++)
    if (n & 1) p = gf_mul(pow2[k], p);
  return p;
}

static uint32_t crc_raw(uint32_t r, const void *p, size_t n) {
  return ~fsn_crc32c_update(~r, p, n);
}

typedef struct candidate {
  uint64_t end;   /* offset just past its payload: where R(end) is known */
  uint64_t start; /* offset of its magic */
  uint32_t want;  /* R(end) iff the frame is valid */
} candidate;

typedef struct cand_heap {
  candidate *v;
  size_t n, cap;
} cand_heap;

static int heap_push(cand_heap *h, candidate c) {
  if (h->n == h->cap) {
    size_t cap = h->cap ? h->cap * 2 : 64;
    candidate *v = realloc(h->v, cap * sizeof *v);
    if (!v) return -1;
    h->v = v;
    h->cap = cap;
  }
  size_t i = h->n++;
  while (i > 0 && h->v[(i - 1) / 2].end > c.end) {
    h->v[i] = h->v[(i - 1) / 2];
    i = (i - 1) / 2;
  }
  h->v[i] = c;
  return 0;
}

static candidate heap_pop(cand_heap *h) {
  candidate top = h->v[0], last = h->v[--h->n];
  size_t i = 0;
  for (;;) {
    size_t c = 2 * i + 1;
    if (c >= h->n) break;
    if (c + 1 < h->n && h->v[c + 1].end < h->v[c].end) c++;
    if (h->v[c].end >= last.end) break;
    h->v[i] = h->v[c];
    i = c;
  }
  if (h->n) h->v[i] = last;
  return top;
}

/* The first offset >= from where a header that could be valid starts:
 * magic, 1 <= length <= limit, payload within the file; size if none.
 * *len gets its length. */
static uint64_t next_candidate(const unsigned char *map, uint64_t from, uint64_t size,
                               uint32_t *len, uint64_t *work) {
  while (from + FSN_JOURNAL_FRAME_LEN <= size) {
    size_t span = (size_t)(size - FSN_JOURNAL_FRAME_LEN + 1 - from);
    const unsigned char *a = memchr(map + from, MAGIC[0], span);
    if (!a) {
      *work += span;
      break;
    }
    uint64_t q = (uint64_t)(a - map);
    *work += q - from + 1;
    if (map[q + 1] == MAGIC[1]) {
      uint32_t l = get32(map + q + 2);
      if (l != 0 && l <= FSN_JOURNAL_MAX_RECORD && l <= size - q - FSN_JOURNAL_FRAME_LEN) {
        *len = l;
        return q;
      }
    }
    from = q + 1;
  }
  return size;
}

/* Offset of the first valid frame starting after off, or 0 if none (a frame
 * never starts at 0: the header is there). -1 when out of memory. */
static int64_t find_valid_frame(const unsigned char *map, uint64_t off, uint64_t size,
                                uint64_t *work) {
  uint32_t pow2[32];
  pow2[0] = 1u << 30; /* x^1 */
  for (int k = 1; k < 32; k++) pow2[k] = gf_mul(pow2[k - 1], pow2[k - 1]);

  cand_heap heap = {0};
  uint64_t pos = off; /* R(pos) == reg */
  uint32_t reg = 0, len = 0;
  uint64_t found = 0;
  uint64_t q = next_candidate(map, off + 1, size, &len, work);
  for (;;) {
    /* Once a valid frame is known, later candidates start after it: only the
     * pending ones (which start before) may still lower the offset. */
    uint64_t reg_at = (q < size && !found) ? q + FSN_JOURNAL_FRAME_LEN : UINT64_MAX;
    uint64_t pop_at = heap.n ? heap.v[0].end : UINT64_MAX;
    uint64_t next = reg_at < pop_at ? reg_at : pop_at;
    if (next == UINT64_MAX) break;
    reg = crc_raw(reg, map + pos, (size_t)(next - pos));
    *work += next - pos;
    pos = next;
    while (heap.n && heap.v[0].end == pos) {
      candidate c = heap_pop(&heap);
      if (c.want == reg && (!found || c.start < found)) found = c.start;
    }
    if (reg_at == pos) {
      candidate c = {.end = q + FSN_JOURNAL_FRAME_LEN + len, .start = q};
      uint32_t lead = crc_raw(~0u, map + q + 2, 4) ^ reg;
      c.want = gf_mul(x_pow_8n(len, pow2), lead) ^ ~get32(map + q + 6);
      *work += FSN_JOURNAL_FRAME_LEN;
      if (heap_push(&heap, c) != 0) {
        free(heap.v);
        return -1;
      }
      q = next_candidate(map, q + 1, size, &len, work);
    }
  }
  free(heap.v);
  return (int64_t)found;
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
  j->scan_work = off;
  while (off < size) {
    size_t n = valid_frame(map + off, (size_t)(size - off));
    j->scan_work += n ? n : FSN_JOURNAL_FRAME_LEN;
    if (!n) break;
    off += n;
    j->records++;
  }
  if (off < size) {
    /* Only a crash during the last group commit can leave a bad frame, and
     * nothing valid is ever written after it. */
    int64_t q = find_valid_frame(map, off, size, &j->scan_work);
    if (q < 0) {
      rc = fsn_fail(err, "ENOMEM", "journal '%s': out of memory", j->path);
      goto out;
    }
    if (q > 0) {
      rc = fsn_fail(err, "ECORRUPT",
                    "journal '%s': corrupt record at offset %llu (a valid record follows at offset %llu)",
                    j->path, (unsigned long long)off, (unsigned long long)q);
      goto out;
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
