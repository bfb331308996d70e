/* Growable byte buffer. */
#include "buf.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void fsn_buf_init(fsn_buf *b) { memset(b, 0, sizeof *b); }

void fsn_buf_free(fsn_buf *b) {
  free(b->data);
  fsn_buf_init(b);
}

void fsn_buf_reset(fsn_buf *b) {
  b->len = 0;
  b->oom = 0;
}

int fsn_buf_reserve(fsn_buf *b, size_t extra) {
  if (b->oom) return -1;
  if (b->cap - b->len >= extra) return 0;
  size_t need = b->len + extra;
  if (need < b->len) { b->oom = 1; return -1; }
  size_t cap = b->cap ? b->cap : 256;
  while (cap < need) {
    if (cap > ((size_t)-1) / 2) { cap = need; break; }
    cap *= 2;
  }
  char *p = realloc(b->data, cap);
  if (!p) { b->oom = 1; return -1; }
  b->data = p;
  b->cap = cap;
  return 0;
}

void fsn_buf_add(fsn_buf *b, const void *p, size_t n) {
  if (n == 0 || fsn_buf_reserve(b, n) != 0) return;
  memcpy(b->data + b->len, p, n);
  b->len += n;
}

void fsn_buf_addc(fsn_buf *b, char c) {
  if (fsn_buf_reserve(b, 1) != 0) return;
  b->data[b->len++] = c;
}

void fsn_buf_adds(fsn_buf *b, const char *s) { fsn_buf_add(b, s, strlen(s)); }

void fsn_buf_addf(fsn_buf *b, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(NULL, 0, fmt, ap);
  va_end(ap);
  if (n < 0 || fsn_buf_reserve(b, (size_t)n + 1) != 0) return;
  va_start(ap, fmt);
  vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
  va_end(ap);
  b->len += (size_t)n;
}
