/* Strict JSON parser (events) and canonical writer primitives. */
#include "json.h"

#include <locale.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* {=== UTF-8 ===} */

/* Length of the valid UTF-8 sequence at s, or 0 if it is invalid there. For
 * an invalid one, *bad is set to the length of the maximal subpart to
 * replace with U+FFFD (at least 1). */
static size_t utf8_seq(const unsigned char *s, size_t len, size_t *bad) {
  unsigned char c = s[0];
  size_t n;
  unsigned char lo = 0x80, hi = 0xBF;
  /* Written on every path (a bad lead byte is a subpart of one): gcc -O3
   * cannot otherwise tell that callers only read it after a 0 return. */
  *bad = 1;
  if (c < 0x80) return 1;
  if (c >= 0xC2 && c <= 0xDF) n = 2;
  else if (c == 0xE0) { n = 3; lo = 0xA0; }
  else if (c >= 0xE1 && c <= 0xEC) n = 3;
  else if (c == 0xED) { n = 3; hi = 0x9F; }
  else if (c >= 0xEE && c <= 0xEF) n = 3;
  else if (c == 0xF0) { n = 4; lo = 0x90; }
  else if (c >= 0xF1 && c <= 0xF3) n = 4;
  else if (c == 0xF4) { n = 4; hi = 0x8F; }
  else return 0;
  for (size_t i = 1; i < n; i++) {
    if (i >= len) { *bad = i; return 0; }
    unsigned char d = s[i];
    unsigned char l = (i == 1) ? lo : 0x80, h = (i == 1) ? hi : 0xBF;
    if (d < l || d > h) { *bad = i; return 0; }
  }
  return n;
}

int fsn_utf8_valid(const char *s, size_t len) {
  const unsigned char *p = (const unsigned char *)s;
  size_t i = 0, bad;
  while (i < len) {
    if (p[i] < 0x80) { i++; continue; }
    size_t n = utf8_seq(p + i, len - i, &bad);
    if (!n) return 0;
    i += n;
  }
  return 1;
}

void fsn_utf8_lossy(fsn_buf *b, const char *s, size_t len) {
  const unsigned char *p = (const unsigned char *)s;
  size_t i = 0, bad;
  while (i < len) {
    size_t n = utf8_seq(p + i, len - i, &bad);
    if (n) {
      fsn_buf_add(b, p + i, n);
      i += n;
    } else {
      fsn_buf_add(b, "\xEF\xBF\xBD", 3);
      i += bad;
    }
  }
}

/* {=== parser ===} */

typedef struct parser {
  const char *p, *end, *start;
  char *scratch;
  const fsn_json_handler *h;
  void *ctx;
  fsn_err *err;
  int depth;
} parser;

static int fail_at(parser *ps, const char *at, const char *reason) {
  size_t line = 1, col = 1;
  for (const char *q = ps->start; q < at && q < ps->end; q++) {
    if (*q == '\n') { line++; col = 1; }
    else if (((unsigned char)*q & 0xC0) != 0x80) col++;
  }
  return fsn_fail(ps->err, "EJSON", "line %zu, column %zu: %s", line, col,
                  reason);
}

static int cb(parser *ps, const char *at, const char *msg) {
  return msg ? fail_at(ps, at, msg) : 0;
}

static void skip_ws(parser *ps) {
  while (ps->p < ps->end) {
    char c = *ps->p;
    if (c == ' ' || c == '\t' || c == '\n' || c == '\r') ps->p++;
    else break;
  }
}

static int hexval(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

static int read_hex4(parser *ps, const char *q, unsigned *out) {
  if (ps->end - q < 4) return -1;
  unsigned v = 0;
  for (int i = 0; i < 4; i++) {
    int d = hexval(q[i]);
    if (d < 0) return -1;
    v = (v << 4) | (unsigned)d;
  }
  *out = v;
  return 0;
}

static size_t put_utf8(char *o, unsigned cp) {
  if (cp < 0x80) { o[0] = (char)cp; return 1; }
  if (cp < 0x800) {
    o[0] = (char)(0xC0 | (cp >> 6));
    o[1] = (char)(0x80 | (cp & 0x3F));
    return 2;
  }
  if (cp < 0x10000) {
    o[0] = (char)(0xE0 | (cp >> 12));
    o[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
    o[2] = (char)(0x80 | (cp & 0x3F));
    return 3;
  }
  o[0] = (char)(0xF0 | (cp >> 18));
  o[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
  o[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
  o[3] = (char)(0x80 | (cp & 0x3F));
  return 4;
}

/* Parses the string at ps->p (on the opening quote) into scratch. */
static int parse_string(parser *ps, int is_key) {
  const char *open = ps->p;
  const unsigned char *q = (const unsigned char *)ps->p + 1;
  const unsigned char *end = (const unsigned char *)ps->end;
  char *o = ps->scratch;
  for (;;) {
    if (q >= end) return fail_at(ps, open, "unterminated string");
    unsigned char c = *q;
    if (c == '"') { q++; break; }
    if (c < 0x20)
      return fail_at(ps, (const char *)q, "control character in string");
    if (c == '\\') {
      if (q + 1 >= end) return fail_at(ps, open, "unterminated string");
      char e = (char)q[1];
      const char *at = (const char *)q;
      q += 2;
      switch (e) {
      case '"': *o++ = '"'; break;
      case '\\': *o++ = '\\'; break;
      case '/': *o++ = '/'; break;
      case 'b': *o++ = '\b'; break;
      case 'f': *o++ = '\f'; break;
      case 'n': *o++ = '\n'; break;
      case 'r': *o++ = '\r'; break;
      case 't': *o++ = '\t'; break;
      case 'u': {
        unsigned cp, lo;
        if (read_hex4(ps, (const char *)q, &cp))
          return fail_at(ps, at, "bad \\u escape");
        q += 4;
        if (cp >= 0xD800 && cp <= 0xDBFF) {
          if (end - q < 6 || q[0] != '\\' || q[1] != 'u' ||
              read_hex4(ps, (const char *)q + 2, &lo) || lo < 0xDC00 ||
              lo > 0xDFFF)
            return fail_at(ps, at, "unpaired surrogate in \\u escape");
          q += 6;
          cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
        } else if (cp >= 0xDC00 && cp <= 0xDFFF) {
          return fail_at(ps, at, "unpaired surrogate in \\u escape");
        }
        o += put_utf8(o, cp);
        break;
      }
      default:
        return fail_at(ps, at, "bad escape in string");
      }
      continue;
    }
    if (c < 0x80) { *o++ = (char)c; q++; continue; }
    size_t bad, n = utf8_seq(q, (size_t)(end - q), &bad);
    if (!n) return fail_at(ps, (const char *)q, "invalid UTF-8 in string");
    memcpy(o, q, n);
    o += n;
    q += n;
  }
  ps->p = (const char *)q;
  return cb(ps, open, ps->h->string(ps->ctx, ps->scratch,
                                    (size_t)(o - ps->scratch), is_key));
}

static int parse_number(parser *ps) {
  const char *s = ps->p, *q = s;
  int is_float = 0;
  if (q < ps->end && *q == '-') q++;
  if (q >= ps->end) return fail_at(ps, s, "bad number");
  if (*q == '0') {
    q++;
  } else if (*q >= '1' && *q <= '9') {
    while (q < ps->end && *q >= '0' && *q <= '9') q++;
  } else {
    return fail_at(ps, s, "bad number");
  }
  if (q < ps->end && *q == '.') {
    is_float = 1;
    q++;
    if (q >= ps->end || *q < '0' || *q > '9')
      return fail_at(ps, s, "bad number: digit expected after '.'");
    while (q < ps->end && *q >= '0' && *q <= '9') q++;
  }
  if (q < ps->end && (*q == 'e' || *q == 'E')) {
    is_float = 1;
    q++;
    if (q < ps->end && (*q == '+' || *q == '-')) q++;
    if (q >= ps->end || *q < '0' || *q > '9')
      return fail_at(ps, s, "bad number: digit expected in exponent");
    while (q < ps->end && *q >= '0' && *q <= '9') q++;
  }
  ps->p = q;
  size_t n = (size_t)(q - s);
  if (!is_float) {
    /* Accumulate as negative so that INT64_MIN fits. */
    const char *d = s;
    int neg = (*d == '-');
    if (neg) d++;
    int64_t v = 0;
    int overflow = 0;
    for (; d < q; d++) {
      int digit = *d - '0';
      if (v < (INT64_MIN + digit) / 10) { overflow = 1; break; }
      v = v * 10 - digit;
    }
    if (!overflow && (neg || v != INT64_MIN))
      return cb(ps, s, ps->h->integer(ps->ctx, neg ? v : -v));
  }
  /* strtod follows the C locale's decimal point; Lua does the same dance. */
  char local[512];
  char *tmp = n < sizeof local ? local : malloc(n + 1);
  if (!tmp) return fsn_fail(ps->err, "ENOMEM", "out of memory");
  memcpy(tmp, s, n);
  tmp[n] = 0;
  const char *dp = localeconv()->decimal_point;
  if (dp && dp[0] != '.' && dp[0])
    for (char *c = tmp; *c; c++)
      if (*c == '.') *c = dp[0];
  double v = strtod(tmp, NULL);
  if (tmp != local) free(tmp);
  if (isinf(v)) return fail_at(ps, s, "number out of range");
  return cb(ps, s, ps->h->number(ps->ctx, v));
}

static int parse_value(parser *ps);

static int parse_array(parser *ps) {
  const char *open = ps->p;
  if (++ps->depth > FSN_JSON_MAX_DEPTH)
    return fail_at(ps, open, "nesting deeper than 128");
  ps->p++;
  if (cb(ps, open, ps->h->begin_array(ps->ctx))) return -1;
  skip_ws(ps);
  if (ps->p < ps->end && *ps->p == ']') {
    ps->p++;
  } else {
    for (;;) {
      if (parse_value(ps)) return -1;
      skip_ws(ps);
      if (ps->p >= ps->end) return fail_at(ps, open, "unterminated array");
      if (*ps->p == ',') {
        ps->p++;
        skip_ws(ps);
        if (ps->p < ps->end && *ps->p == ']')
          return fail_at(ps, ps->p, "trailing comma in array");
        continue;
      }
      if (*ps->p == ']') { ps->p++; break; }
      return fail_at(ps, ps->p, "',' or ']' expected");
    }
  }
  ps->depth--;
  return cb(ps, open, ps->h->end_array(ps->ctx));
}

static int parse_object(parser *ps) {
  const char *open = ps->p;
  if (++ps->depth > FSN_JSON_MAX_DEPTH)
    return fail_at(ps, open, "nesting deeper than 128");
  ps->p++;
  if (cb(ps, open, ps->h->begin_object(ps->ctx))) return -1;
  skip_ws(ps);
  if (ps->p < ps->end && *ps->p == '}') {
    ps->p++;
  } else {
    for (;;) {
      skip_ws(ps);
      if (ps->p >= ps->end) return fail_at(ps, open, "unterminated object");
      if (*ps->p != '"') {
        if (*ps->p == '}') return fail_at(ps, ps->p, "trailing comma in object");
        return fail_at(ps, ps->p, "string key expected");
      }
      if (parse_string(ps, 1)) return -1;
      skip_ws(ps);
      if (ps->p >= ps->end || *ps->p != ':')
        return fail_at(ps, ps->p, "':' expected");
      ps->p++;
      if (parse_value(ps)) return -1;
      skip_ws(ps);
      if (ps->p >= ps->end) return fail_at(ps, open, "unterminated object");
      if (*ps->p == ',') { ps->p++; continue; }
      if (*ps->p == '}') { ps->p++; break; }
      return fail_at(ps, ps->p, "',' or '}' expected");
    }
  }
  ps->depth--;
  return cb(ps, open, ps->h->end_object(ps->ctx));
}

static int literal(parser *ps, const char *word) {
  size_t n = strlen(word);
  if ((size_t)(ps->end - ps->p) < n || memcmp(ps->p, word, n) != 0)
    return 0;
  ps->p += n;
  return 1;
}

static int parse_value(parser *ps) {
  skip_ws(ps);
  if (ps->p >= ps->end) return fail_at(ps, ps->p, "value expected");
  const char *at = ps->p;
  switch (*ps->p) {
  case '{': return parse_object(ps);
  case '[': return parse_array(ps);
  case '"': return parse_string(ps, 0);
  case 't':
    if (literal(ps, "true")) return cb(ps, at, ps->h->boolean(ps->ctx, 1));
    break;
  case 'f':
    if (literal(ps, "false")) return cb(ps, at, ps->h->boolean(ps->ctx, 0));
    break;
  case 'n':
    if (literal(ps, "null")) return cb(ps, at, ps->h->null_value(ps->ctx));
    break;
  default:
    if (*ps->p == '-' && ps->end - ps->p > 1 && ps->p[1] == 'I') break;
    if (*ps->p == '-' || (*ps->p >= '0' && *ps->p <= '9'))
      return parse_number(ps);
  }
  if (*ps->p == 'N' || *ps->p == 'I' || *ps->p == '-')
    return fail_at(ps, at, "NaN and Infinity are not JSON");
  return fail_at(ps, at, "unexpected character");
}

int fsn_json_parse(const char *text, size_t len, char *scratch,
                   const fsn_json_handler *h, void *ctx, fsn_err *err) {
  parser ps = {text, text + len, text, scratch, h, ctx, err, 0};
  if (len >= 3 && memcmp(text, "\xEF\xBB\xBF", 3) == 0)
    return fail_at(&ps, text, "byte order mark is not allowed");
  if (parse_value(&ps)) return -1;
  skip_ws(&ps);
  if (ps.p != ps.end) return fail_at(&ps, ps.p, "trailing characters after the value");
  return 0;
}

/* {=== writer ===} */

void fsn_json_write_string(fsn_buf *b, const char *s, size_t len) {
  static const char hex[] = "0123456789abcdef";
  if (fsn_buf_reserve(b, len + 2) != 0) return;
  fsn_buf_addc(b, '"');
  size_t run = 0;
  for (size_t i = 0; i < len; i++) {
    unsigned char c = (unsigned char)s[i];
    if (c >= 0x20 && c != '"' && c != '\\') continue;
    fsn_buf_add(b, s + run, i - run);
    run = i + 1;
    switch (c) {
    case '"': fsn_buf_add(b, "\\\"", 2); break;
    case '\\': fsn_buf_add(b, "\\\\", 2); break;
    case '\b': fsn_buf_add(b, "\\b", 2); break;
    case '\f': fsn_buf_add(b, "\\f", 2); break;
    case '\n': fsn_buf_add(b, "\\n", 2); break;
    case '\r': fsn_buf_add(b, "\\r", 2); break;
    case '\t': fsn_buf_add(b, "\\t", 2); break;
    default: {
      char u[6] = {'\\', 'u', '0', '0', hex[c >> 4], hex[c & 15]};
      fsn_buf_add(b, u, 6);
    }
    }
  }
  fsn_buf_add(b, s + run, len - run);
  fsn_buf_addc(b, '"');
}

void fsn_json_write_integer(fsn_buf *b, int64_t v) {
  char tmp[24];
  int n = snprintf(tmp, sizeof tmp, "%lld", (long long)v);
  fsn_buf_add(b, tmp, (size_t)n);
}

int fsn_json_write_double(fsn_buf *b, double v) {
  if (isnan(v) || isinf(v)) return -1;
  char tmp[40];
  int n = 0;
  for (int prec = 1; prec <= 17; prec++) {
    n = snprintf(tmp, sizeof tmp, "%.*g", prec, v);
    if (strtod(tmp, NULL) == v) break;
  }
  /* Undo a locale's decimal comma, then keep the value a float on re-read. */
  const char *dp = localeconv()->decimal_point;
  int has_mark = 0;
  for (int i = 0; i < n; i++) {
    if (dp && dp[0] && tmp[i] == dp[0] && dp[0] != '.') tmp[i] = '.';
    if (tmp[i] == '.' || tmp[i] == 'e') has_mark = 1;
  }
  fsn_buf_add(b, tmp, (size_t)n);
  if (!has_mark) fsn_buf_add(b, ".0", 2);
  return 0;
}
