/* Target `tree`: the tree walk, hash and copy on trees made from the input.
 *
 * The input is a little program (one op byte, then its operands) that
 * builds a tree of directories, files (up to just over 1 MiB, so that
 * reads span the engine's 1 MiB buffer), hard links and symbolic links,
 * with names of any bytes but NUL and '/'. The target keeps its own model
 * of what it made and checks the engine against it:
 *
 *  - with a symbolic link anywhere, hash and copy refuse with EUNSAFE (a
 *    link is never followed, never copied);
 *  - otherwise the hashed tree lists exactly the model's regular files, in
 *    component order (checked by an independent comparison), each with its
 *    size and SHA-256, and the digest is SHA-256 over "path NUL hex LF"
 *    (the path as UTF-8, invalid bytes as U+FFFD, per the contract);
 *  - the stat-only fingerprint equals the one recorded while hashing;
 *  - the copy reports the same digest, hashing the copy gives it again,
 *    and every directory of the model (empty ones too) exists in the copy. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "buf.h"
#include "fuzz.h"
#include "hash.h"
#include "json.h"

#define MAX_ENTRIES 48
#define MAX_DEPTH 6
#define MAX_NAME 12

typedef struct entry {
  char path[(MAX_NAME + 1) * (MAX_DEPTH + 1) + 1];
  char hex[FSN_HEX_LEN + 1];
  uint64_t size;
  char kind; /* 'f' file (or hard link), 'd' directory, 'l' symbolic link */
} entry;

typedef struct model {
  entry e[MAX_ENTRIES];
  size_t n;
  int links; /* symbolic links made */
} model;

typedef struct input {
  const uint8_t *p;
  size_t left;
} input;

static fsn_hasher *hasher;
static char *buffer; /* file contents */
#define MAX_FILE ((1u << 20) + 65536)

int LLVMFuzzerInitialize(int *argc, char ***argv) {
  (void)argc;
  (void)argv;
  fsn_err err;
  hasher = fsn_hasher_new(&err);
  if (!hasher) fz_die("hasher: %s", err.msg);
  buffer = malloc(MAX_FILE);
  if (!buffer) fz_die("out of memory");
  return 0;
}

static int take(input *in) {
  if (in->left == 0) return -1;
  in->left--;
  return *in->p++;
}

/* A name of 1..MAX_NAME bytes: any byte but NUL and '/', never "." or "..". */
static int take_name(input *in, char *out) {
  int len = take(in);
  if (len < 0) return -1;
  len = len % MAX_NAME + 1;
  for (int i = 0; i < len; i++) {
    int c = take(in);
    if (c < 0) return -1;
    out[i] = (c == 0 || c == '/') ? 'x' : (char)c;
  }
  out[len] = 0;
  if (!strcmp(out, ".") || !strcmp(out, "..")) out[0] = 'd';
  return 0;
}

static void join(char *out, size_t cap, const char *dir, const char *name) {
  snprintf(out, cap, "%s%s%s", dir, *dir ? "/" : "", name);
}

/* Builds the tree under root from the input, recording it in m. */
static void build(const char *root, input *in, model *m) {
  char cwd[sizeof m->e[0].path] = "";
  int depth = 0;
  int rootfd = open(root, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (rootfd < 0) fz_die("open %s: %s", root, strerror(errno));
  while (m->n < MAX_ENTRIES) {
    int op = take(in);
    if (op < 0) break;
    char name[MAX_NAME + 1], rel[sizeof cwd];
    if (op % 7 == 1) { /* up one directory */
      char *slash = strrchr(cwd, '/');
      if (slash) *slash = 0;
      else cwd[0] = 0;
      if (depth > 0) depth--;
      continue;
    }
    if (take_name(in, name) != 0) break;
    join(rel, sizeof rel, cwd, name);
    entry *e = &m->e[m->n];
    memset(e, 0, sizeof *e);
    memcpy(e->path, rel, strlen(rel) + 1);
    switch (op % 7) {
      case 0: /* a directory, entered */
        if (depth >= MAX_DEPTH) continue;
        if (mkdirat(rootfd, rel, 0700) != 0) continue; /* the name is taken */
        e->kind = 'd';
        memcpy(cwd, rel, strlen(rel) + 1);
        depth++;
        break;
      case 2:   /* a small file: its bytes are the input's next bytes */
      case 3:   /* a large file: a pattern */
      case 6: { /* an empty file */
        int a = take(in), b = take(in);
        if (a < 0 || b < 0) goto done;
        /* Large files are up to 60 KiB, or (rarely: each costs milliseconds)
         * within 32 KiB of the engine's 1 MiB read buffer, either side. */
        size_t size = 0;
        if (op % 7 == 2) size = (size_t)a % 64;
        else if (op % 7 == 3 && a < 240) size = (size_t)a << 8 | (size_t)b;
        else if (op % 7 == 3) size = (1u << 20) - 32768 + ((size_t)(a - 240) << 12 | (size_t)b);
        for (size_t i = 0; i < size; i++) {
          int c = op % 7 == 2 ? take(in) : -1;
          buffer[i] = (char)(c >= 0 ? c : (int)((i * 131u + (unsigned)b) & 0xff));
        }
        int fd = openat(rootfd, rel, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
        if (fd < 0) continue;
        size_t off = 0;
        while (off < size) {
          ssize_t w = write(fd, buffer + off, size - off);
          if (w <= 0) fz_die("write %s: %s", rel, strerror(errno));
          off += (size_t)w;
        }
        close(fd);
        fsn_err err;
        if (fsn_sha256_hex(hasher, buffer, size, e->hex, &err) != 0) fz_die("sha256: %s", err.msg);
        e->size = size;
        e->kind = 'f';
        break;
      }
      case 4: { /* a symbolic link to a path of the input's bytes */
        char target[MAX_NAME * 2 + 2];
        if (take_name(in, target) != 0) goto done;
        if (take(in) & 1) memmove(target + 3, target, strlen(target) + 1), memcpy(target, "../", 3);
        if (symlinkat(target, rootfd, rel) != 0) continue;
        e->kind = 'l';
        m->links++;
        break;
      }
      case 5: { /* a hard link to an earlier file */
        int k = take(in);
        if (k < 0) goto done;
        size_t files = 0;
        for (size_t i = 0; i < m->n; i++) files += m->e[i].kind == 'f';
        if (files == 0) continue;
        size_t want = (size_t)k % files;
        const entry *src = NULL;
        for (size_t i = 0; i < m->n && !src; i++)
          if (m->e[i].kind == 'f' && want-- == 0) src = &m->e[i];
        if (linkat(rootfd, src->path, rootfd, rel, 0) != 0) continue;
        *e = *src;
        memcpy(e->path, rel, strlen(rel) + 1);
        break;
      }
    }
    m->n++;
  }
done:
  close(rootfd);
}

/* Component order, computed apart from the engine's: component by
 * component, bytes unsigned, a prefix first. */
static int component_cmp(const char *a, const char *b) {
  for (;;) {
    size_t la = strcspn(a, "/"), lb = strcspn(b, "/");
    size_t n = la < lb ? la : lb;
    int c = memcmp(a, b, n);
    if (c) return c;
    if (la != lb) return la < lb ? -1 : 1;
    a += la;
    b += lb;
    if (!*a || !*b) return *a ? 1 : *b ? -1 : 0;
    a++;
    b++;
  }
}

static int cmp_entries(const void *x, const void *y) {
  return component_cmp(((const entry *)x)->path, ((const entry *)y)->path);
}

/* The files of the model in component order; returns their count. */
static size_t model_files(const model *m, entry *out) {
  size_t n = 0;
  for (size_t i = 0; i < m->n; i++)
    if (m->e[i].kind == 'f') out[n++] = m->e[i];
  if (n > 1) qsort(out, n, sizeof *out, cmp_entries);
  return n;
}

static void check_tree(const model *m, const fsn_tree *t, const char *what) {
  static entry files[MAX_ENTRIES];
  size_t n = model_files(m, files);
  if (t->count != n) fz_die("%s: %zu files listed, %zu made", what, t->count, n);
  fsn_buf b;
  fsn_buf_init(&b);
  uint64_t bytes = 0;
  for (size_t i = 0; i < n; i++) {
    const fsn_tree_file *f = &t->files[i];
    if (strcmp(f->path, files[i].path) != 0) fz_die("%s: file %zu is '%s', expected '%s'", what, i, f->path, files[i].path);
    if (f->size != files[i].size || strcmp(f->hex, files[i].hex) != 0)
      fz_die("%s: '%s' has size %llu and digest %s, expected %llu and %s", what, f->path,
             (unsigned long long)f->size, f->hex, (unsigned long long)files[i].size, files[i].hex);
    if (i > 0 && fsn_path_component_cmp(t->files[i - 1].path, f->path) >= 0)
      fz_die("%s: '%s' and '%s' out of order", what, t->files[i - 1].path, f->path);
    /* The contract hashes the name as Rust's to_string_lossy shows it. */
    fsn_utf8_lossy(&b, f->path, strlen(f->path));
    fsn_buf_addc(&b, 0);
    fsn_buf_adds(&b, f->hex);
    fsn_buf_addc(&b, '\n');
    bytes += f->size;
  }
  char digest[FSN_HEX_LEN + 1];
  fsn_err err;
  if (b.oom || fsn_sha256_hex(hasher, b.data ? b.data : "", b.len, digest, &err) != 0) fz_die("digest");
  fsn_buf_free(&b);
  if (strcmp(digest, t->digest) != 0) fz_die("%s: tree digest %s, expected %s", what, t->digest, digest);
  if (t->bytes != bytes) fz_die("%s: %llu bytes, expected %llu", what, (unsigned long long)t->bytes, (unsigned long long)bytes);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  char base[512], src[600], dst[600];
  snprintf(base, sizeof base, "%s/tree", fz_tmpdir());
  snprintf(src, sizeof src, "%s/src", base);
  snprintf(dst, sizeof dst, "%s/dst", base);
  fz_rmtree(base);
  if (mkdir(base, 0700) != 0 || mkdir(src, 0700) != 0) fz_die("mkdir %s: %s", src, strerror(errno));

  static model m;
  memset(&m, 0, sizeof m);
  input in = {data, size};
  build(src, &in, &m);

  fsn_tree t, st, copy, again;
  fsn_err err;
  int rc = fsn_hash_tree(hasher, src, 1, &t, &err);
  if (m.links) {
    if (rc == 0 || strcmp(err.code, "EUNSAFE") != 0)
      fz_die("a tree with a symbolic link was hashed (%s)", rc ? err.code : "accepted");
    if (fsn_copy_tree(hasher, src, dst, 1, 0, &copy, &err) == 0 || strcmp(err.code, "EUNSAFE") != 0)
      fz_die("a tree with a symbolic link was copied (%s)", err.code);
    return 0;
  }
  if (rc != 0) fz_die("hash: %s %s", err.code, err.msg);
  check_tree(&m, &t, "hash");
  if (fsn_stat_tree(hasher, src, &st, &err) != 0) fz_die("stat: %s %s", err.code, err.msg);
  if (strcmp(st.fingerprint, t.fingerprint) != 0) fz_die("the stat fingerprint differs from the hash's");
  if (st.count != t.count || st.bytes != t.bytes) fz_die("stat and hash list different files");
  fsn_tree_free(&st);

  if (fsn_copy_tree(hasher, src, dst, 1, 0, &copy, &err) != 0) fz_die("copy: %s %s", err.code, err.msg);
  check_tree(&m, &copy, "copy");
  if (fsn_hash_tree(hasher, dst, 1, &again, &err) != 0) fz_die("hash of the copy: %s %s", err.code, err.msg);
  check_tree(&m, &again, "hash of the copy");
  for (size_t i = 0; i < m.n; i++) {
    if (m.e[i].kind != 'd') continue;
    char p[sizeof dst + sizeof m.e[i].path + 1];
    snprintf(p, sizeof p, "%s/%s", dst, m.e[i].path);
    struct stat sb;
    if (lstat(p, &sb) != 0 || !S_ISDIR(sb.st_mode)) fz_die("directory '%s' was not copied", m.e[i].path);
  }
  fsn_tree_free(&t);
  fsn_tree_free(&copy);
  fsn_tree_free(&again);
  return 0;
}
