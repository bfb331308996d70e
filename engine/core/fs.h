/* Durable file-system operations: every write reaches the disk before it is
 * visible under its final name, and the directory entry is fsynced after.
 * Failpoints (key = opts key or the target's last component):
 *   write_replace: before-write, before-rename, after-rename
 *   write_create:  before-write, before-link, after-link
 *   publish_dir:   before-publish, after-publish */
#ifndef FSN_FS_H
#define FSN_FS_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "buf.h"
#include "err.h"
#include "failpoint.h"

/* Temp sibling, write, fsync, rename over path, fsync the parent. */
int fsn_write_replace(const char *path, const void *data, size_t len, mode_t mode,
                      fsn_failpoints *fp, const char *key, fsn_err *err);

/* Publish path only if it does not exist (link-based, never replaces). An
 * existing identical file is adopted (*adopted = 1); a different one is
 * ECONFLICT; an existing symlink or special file is EUNSAFE. */
int fsn_write_create(const char *path, const void *data, size_t len, mode_t mode,
                     int *adopted, fsn_failpoints *fp, const char *key, fsn_err *err);

/* fsync every file and directory of src bottom-up; with private_modes,
 * every directory becomes 0700 and every file 0600 first (only those not
 * so already: a chmod moves ctime, which a tree fingerprint records). */
int fsn_sync_dir_tree(const char *src, int private_modes, fsn_err *err);

/* Starts the writeback of every file of src (sync_file_range WRITE) and
 * returns without waiting; durable only once fsn_sync_dir_tree has run.
 * For a tree about to be read whole (verified) before it is synced. */
int fsn_start_writeback_tree(const char *src, fsn_err *err);

/* fsn_publish_dir's flags. SYNCED: the caller ran fsn_sync_dir_tree on src
 * (with PRIVATE if wanted) and nothing was written since; only the rename
 * and its directories' fsyncs remain. */
#define FSN_PUBLISH_PRIVATE 1
#define FSN_PUBLISH_SYNCED 2

/* fsync every file and directory of src bottom-up, rename it to dst with
 * RENAME_NOREPLACE, fsync both parents. EEXIST when dst exists. With
 * private_modes, every directory becomes 0700 and every file 0600 first. */
int fsn_publish_dir(const char *src, const char *dst, int flags, fsn_failpoints *fp,
                    const char *key, fsn_err *err);

/* Create a 0700 directory or accept an existing one of ours (tightened to
 * 0700); refuses a symlink, a non-directory or another owner's directory. */
int fsn_mkdir_private(const char *path, int *created, fsn_err *err);

/* Remove a tree without following any symlink in it; a missing path is not
 * an error (*removed = 0); path itself being a symlink is EUNSAFE. */
int fsn_remove_tree(const char *path, int *removed, fsn_err *err);

/* A relative path safe to join under a root: not empty, not absolute, no
 * empty, "." or ".." component. EUNSAFE otherwise. */
int fsn_safe_relative(const char *path, size_t len, fsn_err *err);

int fsn_free_space(const char *path, uint64_t *avail, uint64_t *total, fsn_err *err);

/* Read a whole regular file (last component no-follow) of at most max bytes
 * into out. ETOOBIG past max. */
int fsn_read_file(const char *path, size_t max, fsn_buf *out, fsn_err *err);

#endif
