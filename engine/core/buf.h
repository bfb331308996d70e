/* A growable byte buffer. Plain malloc; the Lua binding keeps every buffer
 * inside a userdata so that a raised error never leaks it. */
#ifndef FSN_BUF_H
#define FSN_BUF_H

#include <stddef.h>

typedef struct fsn_buf {
  char *data;
  size_t len;
  size_t cap;
  int oom; /* set once an allocation failed; later appends are ignored */
} fsn_buf;

void fsn_buf_init(fsn_buf *b);
void fsn_buf_free(fsn_buf *b);
void fsn_buf_reset(fsn_buf *b);
int fsn_buf_reserve(fsn_buf *b, size_t extra);
void fsn_buf_add(fsn_buf *b, const void *p, size_t n);
void fsn_buf_addc(fsn_buf *b, char c);
void fsn_buf_adds(fsn_buf *b, const char *s);
void fsn_buf_addf(fsn_buf *b, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

#endif
