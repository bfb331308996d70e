/* Operational errors of the engine core: a stable upper-case code plus a
 * message with context. The Lua binding turns one into `nil, msg, code`. */
#ifndef FSN_ERR_H
#define FSN_ERR_H

#include <stddef.h>

typedef struct fsn_err {
  char code[24];
  char msg[1024];
} fsn_err;

/* Fill err; returns -1 so callers can `return fsn_fail(...)`. */
int fsn_fail(fsn_err *err, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Like fsn_fail, with ": <strerror(errnum)>" appended and the code taken from
 * errnum (ENOENT, EACCES, ...). */
int fsn_fail_errno(fsn_err *err, int errnum, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Stable upper-case name of an errno value ("ENOENT"); "EIO" for unknown. */
const char *fsn_errno_name(int errnum);

#endif
