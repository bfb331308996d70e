/* Strict RFC 8259 JSON: an event parser and the writer primitives of the
 * canonical encoder. The core builds no value tree: the Lua binding turns
 * events into tables directly, which keeps one copy of a large document. */
#ifndef FSN_JSON_H
#define FSN_JSON_H

#include <stddef.h>
#include <stdint.h>

#include "buf.h"
#include "err.h"

#define FSN_JSON_MAX_DEPTH 128

/* Each callback returns NULL to go on, or a message to abort the parse; the
 * parser then reports that message at the position of the current token. */
typedef struct fsn_json_handler {
  const char *(*null_value)(void *ctx);
  const char *(*boolean)(void *ctx, int value);
  const char *(*integer)(void *ctx, int64_t value);
  const char *(*number)(void *ctx, double value);
  /* A string value or, with is_key set, an object key; s is unescaped. */
  const char *(*string)(void *ctx, const char *s, size_t len, int is_key);
  const char *(*begin_array)(void *ctx);
  const char *(*end_array)(void *ctx);
  const char *(*begin_object)(void *ctx);
  const char *(*end_object)(void *ctx);
} fsn_json_handler;

/* Parse text[0..len). scratch must hold at least len bytes (unescaped strings
 * never grow); it is owned by the caller so a callback that unwinds leaks
 * nothing. Errors: EJSON with "line L, column C: <reason>". */
int fsn_json_parse(const char *text, size_t len, char *scratch,
                   const fsn_json_handler *h, void *ctx, fsn_err *err);

/* Writer primitives. Strings must be valid UTF-8 (checked by the caller with
 * fsn_utf8_valid); the escaping is the minimal one (", \, controls). */
void fsn_json_write_string(fsn_buf *b, const char *s, size_t len);
void fsn_json_write_integer(fsn_buf *b, int64_t v);
/* Shortest text that reads back to the same double, with a fractional part
 * or exponent kept so that it reads back as a float. Returns -1 for NaN/inf. */
int fsn_json_write_double(fsn_buf *b, double v);

/* 1 if s[0..len) is valid UTF-8 (no surrogates, no overlongs, <= U+10FFFF). */
int fsn_utf8_valid(const char *s, size_t len);
/* Append s to b with every maximal invalid subsequence replaced by U+FFFD,
 * the way Rust's String::from_utf8_lossy does. */
void fsn_utf8_lossy(fsn_buf *b, const char *s, size_t len);

#endif
