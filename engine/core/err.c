/* Error construction for the engine core. */
#include "err.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

static void set_code(fsn_err *err, const char *code) {
  snprintf(err->code, sizeof err->code, "%s", code);
}

int fsn_fail(fsn_err *err, const char *code, const char *fmt, ...) {
  if (!err) return -1;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(err->msg, sizeof err->msg, fmt, ap);
  va_end(ap);
  set_code(err, code);
  return -1;
}

int fsn_fail_errno(fsn_err *err, int errnum, const char *fmt, ...) {
  if (!err) return -1;
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(err->msg, sizeof err->msg, fmt, ap);
  va_end(ap);
  if (n < 0) n = 0;
  if ((size_t)n < sizeof err->msg)
    snprintf(err->msg + n, sizeof err->msg - (size_t)n, ": %s", strerror(errnum));
  set_code(err, fsn_errno_name(errnum));
  return -1;
}

const char *fsn_errno_name(int e) {
  switch (e) {
  case ENOENT: return "ENOENT";
  case EEXIST: return "EEXIST";
  case EACCES: return "EACCES";
  case EPERM: return "EPERM";
  case ENOTDIR: return "ENOTDIR";
  case EISDIR: return "EISDIR";
  case ENOTEMPTY: return "ENOTEMPTY";
  case ELOOP: return "ELOOP";
  case ENOSPC: return "ENOSPC";
  case EDQUOT: return "EDQUOT";
  case EROFS: return "EROFS";
  case EXDEV: return "EXDEV";
  case EINVAL: return "EINVAL";
  case ENAMETOOLONG: return "ENAMETOOLONG";
  case EMFILE: return "EMFILE";
  case ENFILE: return "ENFILE";
  case ENOMEM: return "ENOMEM";
  case EAGAIN: return "EAGAIN";
  case EBUSY: return "EBUSY";
  case ENOTSUP: return "ENOTSUP";
  case ENOEXEC: return "ENOEXEC";
  case ECHILD: return "ECHILD";
  case EFBIG: return "EFBIG";
  case ETIMEDOUT: return "ETIMEDOUT";
  case ESRCH: return "ESRCH";
  default: return "EIO";
  }
}
