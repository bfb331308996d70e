/* No-follow path helpers shared by hash, fs and journal: every component of
 * a relative path is opened relative to its parent with O_NOFOLLOW, so a
 * symlink planted anywhere inside a tree is never followed. */
#ifndef FSN_PATHWALK_H
#define FSN_PATHWALK_H

#include <stddef.h>
#include <sys/types.h>

#include "err.h"

int fsn_write_all(int fd, const void *buf, size_t n);
int fsn_read_all(int fd, void *buf, size_t n, size_t *got);

/* Open a regular file read-only. With dirfd == AT_FDCWD, path is an ordinary
 * path whose last component must not be a symlink; otherwise path is relative
 * to dirfd and no component may be a symlink. `what` names it in errors.
 * Errors: EUNSAFE for a symlink or special file, else errno codes. */
int fsn_open_regular(int dirfd, const char *path, const char *what, fsn_err *err);

/* Create rel (exclusively) beneath dirfd, parents already present. */
int fsn_create_beneath(int dirfd, const char *rel, mode_t mode, fsn_err *err);
int fsn_mkdir_beneath(int dirfd, const char *rel, mode_t mode, fsn_err *err);
int fsn_fsync_beneath(int dirfd, const char *rel, fsn_err *err);

/* fsync a directory (opened read-only, as directory fsync requires). */
int fsn_fsync_dir(const char *path, fsn_err *err);
/* fsync the directory that holds path ("." for a bare name). */
int fsn_fsync_parent(const char *path, fsn_err *err);
/* The directories of a and b fsynced, a directory both share only once. */
int fsn_fsync_parents(const char *a, const char *b, fsn_err *err);

/* The entries of an open directory, read with getdents64 straight from fd
 * (from its current offset; fd stays the caller's): fdopendir on a dup cost
 * a dup, an fstat, two fcntl and a close per directory walked. Never "."
 * or "..". */
typedef struct fsn_dir fsn_dir;
/* NULL with errno ENOMEM. */
fsn_dir *fsn_dir_open(int fd);
/* The next name, valid until the next call; NULL at the end (errno 0) or
 * on a read error (errno set). */
const char *fsn_dir_next(fsn_dir *d);
void fsn_dir_close(fsn_dir *d);

/* Split path into its parent directory (malloc'd, "." for a bare name) and
 * its last component (pointer into path). NULL on OOM or empty name. */
char *fsn_dirname(const char *path, const char **base);

#endif
