/* Advisory locks: flock(2) on a sidecar file opened no-follow. The kernel
 * lock is the only authority, so a SIGKILLed holder never blocks anyone;
 * the owner text inside the file is only for messages. */
#ifndef FSN_LOCK_H
#define FSN_LOCK_H

#include <stddef.h>

#include "buf.h"
#include "err.h"

typedef struct fsn_lock {
  int fd; /* -1 when released */
} fsn_lock;

/* Acquire an exclusive lock on path (created 0600 if missing). wait_ms < 0:
 * try once; otherwise keep trying with back-off for that long. owner_text,
 * if not NULL, replaces the file's content once the lock is held.
 * Errors: ELOCKED (message names the holder), EUNSAFE (symlink, not a
 * regular file), errno codes. */
int fsn_lock_acquire(fsn_lock *l, const char *path, long wait_ms,
                     const char *owner_text, fsn_err *err);
void fsn_lock_release(fsn_lock *l);

/* A lock on the one byte at range (>= 0) of a file that many locks share
 * (an open-file-description lock, F_OFD_SETLK): many locks for one new
 * file instead of a new file each. Inherited by a child like a whole-file
 * lock; no owner text (the file is shared). */
int fsn_lock_acquire_range(fsn_lock *l, const char *path, long long range, long wait_ms, fsn_err *err);

/* Whether the lock at path is free, without keeping it: 0 when it is (it
 * was taken and let go at once), -1 with ELOCKED when it stays held for
 * wait_ms (< 0: one try), or another error. create 0: a missing file (or
 * directory) counts as free and is not created. */
int fsn_lock_probe(const char *path, long wait_ms, int create, fsn_err *err);

/* fsn_lock_probe for the byte at range (< 0: the whole file). */
int fsn_lock_probe_range(const char *path, long long range, long wait_ms, int create, fsn_err *err);

/* The owner text of a lock file (possibly stale), for messages. */
int fsn_lock_owner(const char *path, fsn_buf *out, fsn_err *err);

/* Default owner text: pid, host, start time and argv of this process. */
void fsn_lock_default_owner(fsn_buf *out);

#endif
