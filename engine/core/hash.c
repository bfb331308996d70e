/* SHA-256 over OpenSSL EVP, loaded on a hasher's first use (crypto.h): each
 * worker thread owns one EVP_MD_CTX and borrows one read buffer from a
 * process-wide cache (below); hash_file reuses one buffer owned by the
 * hasher. */
#define _GNU_SOURCE
#include "hash.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "buf.h"
#include "crypto.h"
#include "json.h"
#include "pathwalk.h"

#define READ_CHUNK (1u << 20)

struct fsn_hasher {
  const fsn_crypto *c; /* set by use(), before any thread of a pool starts */
  unsigned char *file_buf; /* fsn_hash_file's, made on its first call, kept */
};

/* {=== read buffers ===} */

/* A read buffer on one transparent huge page where the kernel allows it.
 * A malloc'd 1 MiB buffer is fresh memory on each call (glibc maps a block
 * that large anew, or grows the heap for it), and read() then faults its 256
 * pages in one by one: in a VM such a fault costs ~25 us, 6-9 ms of CPU per
 * buffer, which made the first hash.file calls of a process (and every
 * hash.tree worker) slower than the rest. One 2 MiB page is one fault, about
 * 0.3 ms. Best effort: with THP "never" the madvise fails and the buffer is
 * ordinary pages, as before. (2 MiB is the PMD size of x86-64 and of arm64
 * with 4 KiB pages; elsewhere the alignment is merely wasted.) */
#define HUGE_PAGE (2u << 20)

static unsigned char *read_buf_map(void) {
  unsigned char *m = mmap(NULL, 2 * HUGE_PAGE, PROT_READ | PROT_WRITE,
                          MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (m == MAP_FAILED) return NULL;
  unsigned char *a = (unsigned char *)(((uintptr_t)m + HUGE_PAGE - 1) & ~(uintptr_t)(HUGE_PAGE - 1));
  if (a > m) munmap(m, (size_t)(a - m));
  munmap(a + HUGE_PAGE, (size_t)(m + 2 * HUGE_PAGE - (a + HUGE_PAGE)));
  madvise(a, HUGE_PAGE, MADV_HUGEPAGE);
  return a;
}

/* Buffers given back are kept for the next job of the process instead of
 * unmapped: a backup hashes one small tree per member, and mapping a fresh
 * buffer for each (the kernel zeroes the whole huge page on its first
 * fault, then unmapping it shoots down the TLB) cost more CPU than hashing
 * the member's bytes. At most BUF_CACHE buffers (8 x 2 MiB) stay mapped,
 * the most that run at once on a machine of up to 8 CPUs. */
#define BUF_CACHE 8
static pthread_mutex_t buf_mu = PTHREAD_MUTEX_INITIALIZER;
static unsigned char *buf_cache[BUF_CACHE];
static int buf_cached;
static uint64_t buf_mapped; /* buffers ever mapped: what a test counts */

static unsigned char *read_buf_new(void) {
  unsigned char *b = NULL;
  pthread_mutex_lock(&buf_mu);
  if (buf_cached > 0) b = buf_cache[--buf_cached];
  pthread_mutex_unlock(&buf_mu);
  if (b) return b;
  b = read_buf_map();
  if (b) __atomic_fetch_add(&buf_mapped, 1, __ATOMIC_RELAXED);
  return b;
}

uint64_t fsn_hash_buffers_mapped(void) {
  return __atomic_load_n(&buf_mapped, __ATOMIC_RELAXED);
}

static void read_buf_free(unsigned char *b) {
  if (!b) return;
  pthread_mutex_lock(&buf_mu);
  if (buf_cached < BUF_CACHE) {
    buf_cache[buf_cached++] = b;
    b = NULL;
  }
  pthread_mutex_unlock(&buf_mu);
  if (b) munmap(b, HUGE_PAGE);
}

static int crypto_fail(const fsn_crypto *c, fsn_err *err, const char *what) {
  unsigned long e = c->err_get();
  char text[256] = "unknown OpenSSL error";
  if (e) c->err_string(e, text, sizeof text);
  c->err_clear();
  return fsn_fail(err, "ECRYPTO", "%s: %s", what, text);
}

fsn_hasher *fsn_hasher_new(fsn_err *err) {
  fsn_hasher *h = calloc(1, sizeof *h);
  if (!h) fsn_fail(err, "ENOMEM", "out of memory");
  return h;
}

void fsn_hasher_free(fsn_hasher *h) {
  if (!h) return;
  read_buf_free(h->file_buf);
  free(h);
}

/* The library, loaded on the hasher's first use. */
static const fsn_crypto *use(fsn_hasher *h, fsn_err *err) {
  if (!h->c) h->c = fsn_crypto_load(err);
  return h->c;
}

static void to_hex(const unsigned char *d, char hex[FSN_HEX_LEN + 1]) {
  static const char digits[] = "0123456789abcdef";
  for (int i = 0; i < 32; i++) {
    hex[2 * i] = digits[d[i] >> 4];
    hex[2 * i + 1] = digits[d[i] & 15];
  }
  hex[FSN_HEX_LEN] = 0;
}

int fsn_sha256_hex(fsn_hasher *h, const void *data, size_t len,
                   char hex[FSN_HEX_LEN + 1], fsn_err *err) {
  unsigned char d[32];
  unsigned int n = 0;
  const fsn_crypto *c = use(h, err);
  if (!c) return -1;
  EVP_MD_CTX *ctx = c->ctx_new();
  if (!ctx) return fsn_fail(err, "ENOMEM", "out of memory");
  int ok = c->init(ctx, c->sha256, NULL) && c->update(ctx, data, len) && c->final(ctx, d, &n);
  c->ctx_free(ctx);
  if (!ok) return crypto_fail(c, err, "sha256");
  to_hex(d, hex);
  return 0;
}

/* {=== one stream ===} */

/* Every byte and file hashed by this process, on any thread: how a test
 * (or a benchmark) proves that a backup reads each byte once. */
static uint64_t stat_bytes, stat_files;

void fsn_hash_stats(uint64_t *bytes, uint64_t *files) {
  *bytes = __atomic_load_n(&stat_bytes, __ATOMIC_RELAXED);
  *files = __atomic_load_n(&stat_files, __ATOMIC_RELAXED);
}

/* Hash fd to its end; with out >= 0, write every byte read there as well.
 * A set *cancel (read between chunks) ends it with ECANCELED. */
static int hash_stream(const fsn_crypto *c, EVP_MD_CTX *ctx, int fd, int out,
                       unsigned char *buf, const char *what, const int *cancel,
                       uint64_t *size, char hex[FSN_HEX_LEN + 1], fsn_err *err) {
  unsigned char d[32];
  unsigned int n = 0;
  uint64_t total = 0;
  if (!c->init(ctx, c->sha256, NULL)) return crypto_fail(c, err, what);
  posix_fadvise(fd, 0, 0, POSIX_FADV_SEQUENTIAL);
  for (;;) {
    if (cancel && __atomic_load_n(cancel, __ATOMIC_RELAXED))
      return fsn_fail(err, "ECANCELED", "hashing '%s' was cancelled", what);
    ssize_t r = read(fd, buf, READ_CHUNK);
    if (r < 0) {
      if (errno == EINTR) continue;
      return fsn_fail_errno(err, errno, "read '%s'", what);
    }
    if (r == 0) break;
    if (!c->update(ctx, buf, (size_t)r)) return crypto_fail(c, err, what);
    if (out >= 0 && fsn_write_all(out, buf, (size_t)r) != 0)
      return fsn_fail_errno(err, errno, "write copy of '%s'", what);
    total += (uint64_t)r;
  }
  if (!c->final(ctx, d, &n)) return crypto_fail(c, err, what);
  to_hex(d, hex);
  *size = total;
  __atomic_fetch_add(&stat_bytes, total, __ATOMIC_RELAXED);
  __atomic_fetch_add(&stat_files, 1, __ATOMIC_RELAXED);
  return 0;
}

int fsn_hash_file(fsn_hasher *h, const char *path, char hex[FSN_HEX_LEN + 1],
                  uint64_t *size, fsn_err *err) {
  const fsn_crypto *c = use(h, err);
  if (!c) return -1;
  int fd = fsn_open_regular(AT_FDCWD, path, path, err);
  if (fd < 0) return -1;
  if (!h->file_buf) h->file_buf = read_buf_new();
  EVP_MD_CTX *ctx = c->ctx_new();
  int rc;
  if (!ctx || !h->file_buf) rc = fsn_fail(err, "ENOMEM", "out of memory");
  else rc = hash_stream(c, ctx, fd, -1, h->file_buf, path, NULL, size, hex, err);
  c->ctx_free(ctx);
  close(fd);
  return rc;
}

/* {=== tree walk ===} */

void fsn_tree_init(fsn_tree *t) { memset(t, 0, sizeof *t); }

void fsn_tree_free(fsn_tree *t) {
  for (size_t i = 0; i < t->count; i++) free(t->files[i].path);
  for (size_t i = 0; i < t->ndirs; i++) free(t->dirs[i]);
  free(t->files);
  free(t->dirs);
  fsn_tree_init(t);
}

int fsn_path_component_cmp(const char *a, const char *b) {
  /* Mapping '/' below every other byte makes byte order component order:
   * the path whose component ends first sorts first. */
  const unsigned char *p = (const unsigned char *)a, *q = (const unsigned char *)b;
  for (;; p++, q++) {
    unsigned x = *p == '/' ? 1 : (*p ? (unsigned)*p + 1 : 0);
    unsigned y = *q == '/' ? 1 : (*q ? (unsigned)*q + 1 : 0);
    if (x != y) return x < y ? -1 : 1;
    if (!x) return 0;
  }
}

static int cmp_files(const void *a, const void *b) {
  return fsn_path_component_cmp(((const fsn_tree_file *)a)->path,
                                ((const fsn_tree_file *)b)->path);
}

/* An empty tree has files == NULL, and qsort's pointer must be valid even
 * for zero elements (C11 7.22.5; UBSan reports it). */
static void sort_files(fsn_tree *t) {
  if (t->count > 1) qsort(t->files, t->count, sizeof *t->files, cmp_files);
}

static const char *kind_name(mode_t m) {
  if (S_ISLNK(m)) return "a symbolic link";
  if (S_ISFIFO(m)) return "a FIFO";
  if (S_ISSOCK(m)) return "a socket";
  if (S_ISCHR(m)) return "a character device";
  if (S_ISBLK(m)) return "a block device";
  return "not a regular file or directory";
}

static char *join(const char *dir, const char *name) {
  size_t a = strlen(dir), b = strlen(name);
  char *p = malloc(a + b + 2);
  if (!p) return NULL;
  if (a) { memcpy(p, dir, a); p[a] = '/'; a++; }
  memcpy(p + a, name, b + 1);
  return p;
}

static int64_t ns_of(struct timespec ts) {
  return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static int walk(int dirfd, const char *rel, const char *root, fsn_tree *t,
                int depth, fsn_err *err) {
  if (depth > 256) return fsn_fail(err, "EUNSAFE", "tree '%s': deeper than 256 levels at '%s'", root, rel);
  fsn_dir *d = fsn_dir_open(dirfd);
  if (!d) return fsn_fail_errno(err, errno, "tree '%s': read '%s'", root, rel);
  int rc = 0;
  for (;;) {
    const char *dname = fsn_dir_next(d);
    if (!dname) {
      if (errno) rc = fsn_fail_errno(err, errno, "tree '%s': read '%s'", root, rel);
      break;
    }
    char *path = join(rel, dname);
    if (!path) { rc = fsn_fail(err, "ENOMEM", "out of memory"); break; }
    struct stat st;
    if (fstatat(dirfd, dname, &st, AT_SYMLINK_NOFOLLOW) != 0) {
      rc = fsn_fail_errno(err, errno, "tree '%s': stat '%s'", root, path);
      free(path);
      break;
    }
    if (S_ISDIR(st.st_mode)) {
      int sub = openat(dirfd, dname, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
      if (sub < 0) {
        rc = fsn_fail_errno(err, errno, "tree '%s': open '%s'", root, path);
        free(path);
        break;
      }
      if (t->ndirs == t->dircap) {
        size_t cap = t->dircap ? t->dircap * 2 : 16;
        char **nd = realloc(t->dirs, cap * sizeof *nd);
        if (!nd) { close(sub); free(path); rc = fsn_fail(err, "ENOMEM", "out of memory"); break; }
        t->dirs = nd;
        t->dircap = cap;
      }
      t->dirs[t->ndirs++] = path;
      rc = walk(sub, path, root, t, depth + 1, err);
      close(sub);
      if (rc) break;
    } else if (S_ISREG(st.st_mode)) {
      if (t->count == t->cap) {
        size_t cap = t->cap ? t->cap * 2 : 64;
        fsn_tree_file *nf = realloc(t->files, cap * sizeof *nf);
        if (!nf) { free(path); rc = fsn_fail(err, "ENOMEM", "out of memory"); break; }
        t->files = nf;
        t->cap = cap;
      }
      fsn_tree_file *f = &t->files[t->count++];
      memset(f, 0, sizeof *f);
      f->path = path;
      f->size = (uint64_t)st.st_size;
      f->dev = st.st_dev;
      f->ino = st.st_ino;
      f->mtime_ns = ns_of(st.st_mtim);
      f->ctime_ns = ns_of(st.st_ctim);
    } else {
      rc = fsn_fail(err, "EUNSAFE", "tree '%s': '%s' is %s", root, path, kind_name(st.st_mode));
      free(path);
      break;
    }
  }
  fsn_dir_close(d);
  return rc;
}

/* {=== worker pool ===} */

typedef struct job {
  const fsn_hasher *h;
  fsn_tree *t;
  int src_root, dst_root; /* dst_root < 0: hash only */
  int sync;
  const char *src_name;
  const int *cancel; /* NULL, or a flag another thread may set */
  size_t next; /* atomic */
  int stop;    /* atomic */
  pthread_mutex_t mu;
  size_t err_index;
  fsn_err err;
} job;

static void record_error(job *j, size_t i, const fsn_err *e) {
  pthread_mutex_lock(&j->mu);
  if (i < j->err_index) {
    j->err_index = i;
    j->err = *e;
  }
  pthread_mutex_unlock(&j->mu);
  __atomic_store_n(&j->stop, 1, __ATOMIC_RELAXED);
}

static int do_file(job *j, EVP_MD_CTX *ctx, unsigned char *buf, fsn_tree_file *f,
                   fsn_err *e) {
  char what[4200];
  snprintf(what, sizeof what, "%s/%s", j->src_name, f->path);
  int fd = fsn_open_regular(j->src_root, f->path, what, e);
  if (fd < 0) return -1;
  struct stat st;
  if (fstat(fd, &st) != 0 || st.st_dev != f->dev || st.st_ino != f->ino) {
    close(fd);
    return fsn_fail(e, "EUNSAFE", "tree '%s': '%s' changed while it was read", j->src_name, f->path);
  }
  int out = -1;
  if (j->dst_root >= 0) {
    out = fsn_create_beneath(j->dst_root, f->path, 0600, e);
    if (out < 0) { close(fd); return -1; }
  }
  int rc = hash_stream(j->h->c, ctx, fd, out, buf, what, j->cancel, &f->size, f->hex, e);
  /* The fingerprint records the file as it was read: a write during the
   * read (it moves mtime and ctime) or a size other than the bytes hashed
   * fails here rather than vouching for bytes nobody read. */
  struct stat after;
  if (rc == 0 && (fstat(fd, &after) != 0 || after.st_size != st.st_size ||
                  (uint64_t)after.st_size != f->size ||
                  ns_of(after.st_mtim) != ns_of(st.st_mtim) ||
                  ns_of(after.st_ctim) != ns_of(st.st_ctim)))
    rc = fsn_fail(e, "EUNSAFE", "tree '%s': '%s' changed while it was read", j->src_name, f->path);
  f->mtime_ns = ns_of(st.st_mtim);
  f->ctime_ns = ns_of(st.st_ctim);
  if (rc == 0 && out >= 0 && j->sync && fsync(out) != 0)
    rc = fsn_fail_errno(e, errno, "fsync copy of '%s'", what);
  if (out >= 0 && close(out) != 0 && rc == 0)
    rc = fsn_fail_errno(e, errno, "close copy of '%s'", what);
  close(fd);
  return rc;
}

static void *worker(void *arg) {
  job *j = arg;
  fsn_err e;
  EVP_MD_CTX *ctx = j->h->c->ctx_new();
  unsigned char *buf = read_buf_new();
  if (!ctx || !buf) {
    fsn_fail(&e, "ENOMEM", "out of memory");
    record_error(j, 0, &e);
  }
  while (ctx && buf && !__atomic_load_n(&j->stop, __ATOMIC_RELAXED) &&
         !(j->cancel && __atomic_load_n(j->cancel, __ATOMIC_RELAXED))) {
    size_t i = __atomic_fetch_add(&j->next, 1, __ATOMIC_RELAXED);
    if (i >= j->t->count) break;
    if (do_file(j, ctx, buf, &j->t->files[i], &e) != 0) record_error(j, i, &e);
  }
  read_buf_free(buf);
  j->h->c->ctx_free(ctx);
  return NULL;
}

static int online_cpus(void) {
  long n = sysconf(_SC_NPROCESSORS_ONLN);
  return n > 0 ? (int)n : 1;
}

static int run_pool(job *j, int threads, fsn_err *err) {
  if (threads <= 0) threads = online_cpus();
  if ((size_t)threads > j->t->count) threads = j->t->count ? (int)j->t->count : 1;
  if (threads > 64) threads = 64;
  pthread_t tid[64];
  int started = 0;
  j->err_index = (size_t)-1;
  pthread_mutex_init(&j->mu, NULL);
  for (int i = 1; i < threads; i++) {
    if (pthread_create(&tid[i], NULL, worker, j) != 0) break;
    started++;
  }
  worker(j); /* the calling thread works too */
  for (int i = 1; i <= started; i++) pthread_join(tid[i], NULL);
  pthread_mutex_destroy(&j->mu);
  if (j->err_index != (size_t)-1) {
    *err = j->err;
    return -1;
  }
  if (j->cancel && __atomic_load_n(j->cancel, __ATOMIC_RELAXED))
    return fsn_fail(err, "ECANCELED", "hashing '%s' was cancelled", j->src_name);
  return 0;
}

static int finish_digest(const fsn_hasher *h, fsn_tree *t, fsn_err *err) {
  const fsn_crypto *c = h->c;
  EVP_MD_CTX *ctx = c->ctx_new();
  fsn_buf lossy;
  fsn_buf_init(&lossy);
  int ok = ctx && c->init(ctx, c->sha256, NULL);
  t->bytes = 0;
  for (size_t i = 0; ok && i < t->count; i++) {
    fsn_tree_file *f = &t->files[i];
    fsn_buf_reset(&lossy);
    fsn_utf8_lossy(&lossy, f->path, strlen(f->path));
    fsn_buf_addc(&lossy, 0);
    fsn_buf_add(&lossy, f->hex, FSN_HEX_LEN);
    fsn_buf_addc(&lossy, '\n');
    if (lossy.oom) { ok = 0; break; }
    ok = c->update(ctx, lossy.data, lossy.len);
    t->bytes += f->size;
  }
  unsigned char d[32];
  unsigned int n = 0;
  if (ok) ok = c->final(ctx, d, &n);
  int oom = lossy.oom || !ctx;
  fsn_buf_free(&lossy);
  c->ctx_free(ctx);
  if (oom) return fsn_fail(err, "ENOMEM", "out of memory");
  if (!ok) return crypto_fail(c, err, "tree digest");
  to_hex(d, t->digest);
  return 0;
}

static int finish_fingerprint(const fsn_hasher *h, fsn_tree *t, fsn_err *err) {
  fsn_buf b;
  fsn_buf_init(&b);
  char num[96];
  for (size_t i = 0; i < t->count; i++) {
    const fsn_tree_file *f = &t->files[i];
    fsn_buf_add(&b, f->path, strlen(f->path));
    fsn_buf_addc(&b, 0);
    int n = snprintf(num, sizeof num, "%llu %llu %lld %lld\n", (unsigned long long)f->size,
                     (unsigned long long)f->ino, (long long)f->mtime_ns, (long long)f->ctime_ns);
    fsn_buf_add(&b, num, (size_t)n);
  }
  int rc;
  if (b.oom) rc = fsn_fail(err, "ENOMEM", "out of memory");
  else rc = fsn_sha256_hex((fsn_hasher *)h, b.data ? b.data : "", b.len, t->fingerprint, err);
  fsn_buf_free(&b);
  return rc;
}

static int open_root(const char *root, fsn_err *err) {
  int fd = open(root, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  if (fd >= 0) return fd;
  int e = errno;
  struct stat st;
  if ((e == ELOOP || e == ENOTDIR) && lstat(root, &st) == 0) {
    if (S_ISLNK(st.st_mode))
      return fsn_fail(err, "EUNSAFE", "tree '%s': is a symbolic link", root);
    return fsn_fail(err, "ENOTDIR", "tree '%s': not a directory", root);
  }
  return fsn_fail_errno(err, e, "tree '%s'", root);
}

static int hash_tree(fsn_hasher *h, const char *root, int threads, const int *cancel,
                     fsn_tree *out, fsn_err *err) {
  fsn_tree_init(out);
  if (!use(h, err)) return -1;
  int rfd = open_root(root, err);
  if (rfd < 0) return -1;
  int rc = walk(rfd, "", root, out, 0, err);
  if (rc == 0) {
    sort_files(out);
    job j = {.h = h, .t = out, .src_root = rfd, .dst_root = -1, .src_name = root, .cancel = cancel};
    rc = run_pool(&j, threads, err);
  }
  if (rc == 0) rc = finish_digest(h, out, err);
  if (rc == 0) rc = finish_fingerprint(h, out, err);
  close(rfd);
  if (rc) fsn_tree_free(out);
  return rc;
}

int fsn_hash_tree(fsn_hasher *h, const char *root, int threads, fsn_tree *out,
                  fsn_err *err) {
  return hash_tree(h, root, threads, NULL, out, err);
}

int fsn_stat_tree(fsn_hasher *h, const char *root, fsn_tree *out, fsn_err *err) {
  fsn_tree_init(out);
  int rfd = open_root(root, err);
  if (rfd < 0) return -1;
  int rc = walk(rfd, "", root, out, 0, err);
  close(rfd);
  if (rc == 0) {
    sort_files(out);
    for (size_t i = 0; i < out->count; i++) out->bytes += out->files[i].size;
    rc = finish_fingerprint(h, out, err);
  }
  if (rc) fsn_tree_free(out);
  return rc;
}

/* {=== hashing in the background ===} */

struct fsn_hash_task {
  fsn_hasher *h;
  char *root;
  int threads;
  int cancel;   /* atomic: set by fsn_hash_task_free */
  int finished; /* atomic: set by the thread as its last act */
  int efd;
  pthread_t thread;
  int started, joined, taken;
  fsn_tree tree;
  int rc;
  fsn_err err;
};

static void *task_main(void *arg) {
  fsn_hash_task *t = arg;
  t->rc = hash_tree(t->h, t->root, t->threads, &t->cancel, &t->tree, &t->err);
  __atomic_store_n(&t->finished, 1, __ATOMIC_RELEASE);
  uint64_t one = 1;
  while (write(t->efd, &one, sizeof one) < 0 && errno == EINTR) {}
  return NULL;
}

fsn_hash_task *fsn_hash_task_start(const char *root, int threads, fsn_err *err) {
  fsn_hash_task *t = calloc(1, sizeof *t);
  if (!t) { fsn_fail(err, "ENOMEM", "out of memory"); return NULL; }
  t->efd = -1;
  fsn_tree_init(&t->tree);
  t->threads = threads;
  t->h = fsn_hasher_new(err);
  if (!t->h) goto fail;
  t->root = strdup(root);
  if (!t->root) { fsn_fail(err, "ENOMEM", "out of memory"); goto fail; }
  t->efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (t->efd < 0) { fsn_fail_errno(err, errno, "eventfd"); goto fail; }
  /* The thread (and its pool) inherit a mask with every signal blocked. */
  sigset_t all, old;
  sigfillset(&all);
  pthread_sigmask(SIG_SETMASK, &all, &old);
  int e = pthread_create(&t->thread, NULL, task_main, t);
  pthread_sigmask(SIG_SETMASK, &old, NULL);
  if (e != 0) { fsn_fail_errno(err, e, "start a hashing thread for '%s'", root); goto fail; }
  t->started = 1;
  return t;
fail:
  fsn_hash_task_free(t);
  return NULL;
}

int fsn_hash_task_fd(const fsn_hash_task *t) { return t->efd; }

int fsn_hash_task_finished(const fsn_hash_task *t) {
  return __atomic_load_n(&t->finished, __ATOMIC_ACQUIRE);
}

static void task_join(fsn_hash_task *t) {
  if (t->started && !t->joined) {
    pthread_join(t->thread, NULL);
    t->joined = 1;
  }
}

int fsn_hash_task_result(fsn_hash_task *t, fsn_tree *out, fsn_err *err) {
  task_join(t);
  if (t->rc != 0) {
    *err = t->err;
    return -1;
  }
  if (t->taken) return fsn_fail(err, "EINVAL", "the result of hashing '%s' was taken already", t->root);
  *out = t->tree;
  fsn_tree_init(&t->tree);
  t->taken = 1;
  return 0;
}

void fsn_hash_task_free(fsn_hash_task *t) {
  if (!t) return;
  __atomic_store_n(&t->cancel, 1, __ATOMIC_RELAXED);
  task_join(t);
  fsn_tree_free(&t->tree);
  if (t->efd >= 0) close(t->efd);
  fsn_hasher_free(t->h);
  free(t->root);
  free(t);
}

int fsn_copy_tree(fsn_hasher *h, const char *src, const char *dst, int threads,
                  int sync, fsn_tree *out, fsn_err *err) {
  fsn_tree_init(out);
  if (!use(h, err)) return -1;
  int sfd = open_root(src, err);
  if (sfd < 0) return -1;
  int dfd = -1, rc = walk(sfd, "", src, out, 0, err);
  if (rc == 0) {
    if (mkdir(dst, 0700) != 0) rc = fsn_fail_errno(err, errno, "copy '%s' to '%s'", src, dst);
    else if ((dfd = open(dst, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)) < 0)
      rc = fsn_fail_errno(err, errno, "copy '%s' to '%s'", src, dst);
  }
  /* Parents come before children in walk order. */
  for (size_t i = 0; rc == 0 && i < out->ndirs; i++)
    if (fsn_mkdir_beneath(dfd, out->dirs[i], 0700, err) != 0) rc = -1;
  if (rc == 0) {
    sort_files(out);
    job j = {.h = h, .t = out, .src_root = sfd, .dst_root = dfd, .sync = sync, .src_name = src};
    rc = run_pool(&j, threads, err);
  }
  for (size_t i = out->ndirs; rc == 0 && sync && i > 0; i--)
    if (fsn_fsync_beneath(dfd, out->dirs[i - 1], err) != 0) rc = -1;
  if (rc == 0 && sync && fsync(dfd) != 0)
    rc = fsn_fail_errno(err, errno, "fsync '%s'", dst);
  if (rc == 0 && sync) rc = fsn_fsync_parent(dst, err);
  if (rc == 0) rc = finish_digest(h, out, err);
  if (dfd >= 0) close(dfd);
  close(sfd);
  if (rc) fsn_tree_free(out);
  return rc;
}
