/* SHA-256 of strings, files and directory trees, and copy-while-hashing.
 * The tree digest is the manifest contract (canic-backup-model.md §5.2):
 * regular files only, component-wise path order, SHA-256 over
 * "path NUL file-hex LF". Traversal never follows a symlink. */
#ifndef FSN_HASH_H
#define FSN_HASH_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "err.h"

/* The fetched digest, shared read-only by every worker thread. */
typedef struct fsn_hasher fsn_hasher;

fsn_hasher *fsn_hasher_new(fsn_err *err);
void fsn_hasher_free(fsn_hasher *h);

#define FSN_HEX_LEN 64

int fsn_sha256_hex(fsn_hasher *h, const void *data, size_t len,
                   char hex[FSN_HEX_LEN + 1], fsn_err *err);

/* Hash a regular file; the last component is opened no-follow. Uses the
 * hasher's read buffer: one call at a time per hasher (one per Lua state). */
int fsn_hash_file(fsn_hasher *h, const char *path, char hex[FSN_HEX_LEN + 1],
                  uint64_t *size, fsn_err *err);

typedef struct fsn_tree_file {
  char *path; /* relative, '/'-joined, raw bytes of the names */
  uint64_t size;
  char hex[FSN_HEX_LEN + 1];
  dev_t dev;
  ino_t ino;
  int64_t mtime_ns, ctime_ns; /* as the file was when read (or stat'ed) */
} fsn_tree_file;

typedef struct fsn_tree {
  fsn_tree_file *files; /* in digest order */
  size_t count, cap;
  char **dirs; /* relative directory paths, parents first (copy only) */
  size_t ndirs, dircap;
  uint64_t bytes;
  char digest[FSN_HEX_LEN + 1];      /* empty for fsn_stat_tree */
  char fingerprint[FSN_HEX_LEN + 1]; /* see fsn_stat_tree */
} fsn_tree;

void fsn_tree_init(fsn_tree *t);
void fsn_tree_free(fsn_tree *t);

/* threads <= 0 means one per online CPU. */
int fsn_hash_tree(fsn_hasher *h, const char *root, int threads, fsn_tree *out,
                  fsn_err *err);

/* The tree's fingerprint without reading a byte of content: SHA-256 over
 * "path NUL size SP inode SP mtime_ns SP ctime_ns LF" per regular file, in
 * digest order. fsn_hash_tree records the same fingerprint from the stat of
 * each file as it was read (and fails when a file changed during its read),
 * so an equal fingerprint later means the same inodes, the same sizes, and
 * no write since: ctime cannot be set back by an unprivileged process. */
int fsn_stat_tree(fsn_hasher *h, const char *root, fsn_tree *out, fsn_err *err);

/* {=== hashing in the background ===}
 * A tree hashed on its own thread (and that thread's pool), so the caller
 * keeps scheduling while the bytes are read. The task owns its hasher and
 * its copy of the path; its signals are blocked, so SIGINT and SIGTERM still
 * reach the thread that waits. */
typedef struct fsn_hash_task fsn_hash_task;

fsn_hash_task *fsn_hash_task_start(const char *root, int threads, fsn_err *err);
/* Readable (POLLIN) once the task has finished. */
int fsn_hash_task_fd(const fsn_hash_task *t);
int fsn_hash_task_finished(const fsn_hash_task *t);
/* Waits for the task, then moves its tree into out (once) or fills err. */
int fsn_hash_task_result(fsn_hash_task *t, fsn_tree *out, fsn_err *err);
/* Cancels a running task (it stops at the next 1 MiB read), waits for its
 * thread and frees everything. NULL is a no-op. */
void fsn_hash_task_free(fsn_hash_task *t);

/* Copy src into dst, a new directory (0700; files 0600) that must not exist,
 * and describe the bytes actually copied. With sync, every copied file and
 * directory is fsynced. On failure dst is left for the caller to remove. */
int fsn_copy_tree(fsn_hasher *h, const char *src, const char *dst, int threads,
                  int sync, fsn_tree *out, fsn_err *err);

/* Bytes and files hashed by fsn_hash_file, fsn_hash_tree and fsn_copy_tree
 * in this process so far (every thread, every task). */
void fsn_hash_stats(uint64_t *bytes, uint64_t *files);

/* Read buffers this process has mapped so far. Buffers are kept for reuse
 * (up to 8), so sequential jobs map no new one. */
uint64_t fsn_hash_buffers_mapped(void);

/* Component-wise comparison of '/'-joined relative paths. */
int fsn_path_component_cmp(const char *a, const char *b);

#endif
