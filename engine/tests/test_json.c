/* Unit tests of the JSON core: parser events, errors, writer primitives. */
#include <math.h>
#include <stdint.h>

#include "check.h"
#include "json.h"

/* A handler that renders events back into a compact text. */
typedef struct echo {
  fsn_buf out;
  int need_comma[200];
  int depth;
} echo;

static void sep(echo *e) {
  if (e->need_comma[e->depth]) fsn_buf_addc(&e->out, ',');
  e->need_comma[e->depth] = 1;
}
static const char *e_null(void *c) { sep(c); fsn_buf_adds(&((echo *)c)->out, "null"); return NULL; }
static const char *e_bool(void *c, int v) { sep(c); fsn_buf_adds(&((echo *)c)->out, v ? "true" : "false"); return NULL; }
static const char *e_int(void *c, int64_t v) { sep(c); fsn_buf_addf(&((echo *)c)->out, "i%lld", (long long)v); return NULL; }
static const char *e_num(void *c, double v) { sep(c); fsn_buf_addf(&((echo *)c)->out, "d%g", v); return NULL; }
static const char *e_str(void *c, const char *s, size_t n, int is_key) {
  echo *e = c;
  if (is_key) {
    sep(e);
    fsn_buf_addc(&e->out, 'k');
    fsn_buf_add(&e->out, s, n);
    fsn_buf_addc(&e->out, ':');
    e->need_comma[e->depth] = 0;
    return n == 6 && memcmp(s, "reject", 6) == 0 ? "rejected key" : NULL;
  }
  sep(e);
  fsn_buf_addc(&e->out, '\'');
  fsn_buf_add(&e->out, s, n);
  fsn_buf_addc(&e->out, '\'');
  return NULL;
}
static const char *e_open(echo *e, char c) { sep(e); fsn_buf_addc(&e->out, c); e->need_comma[++e->depth] = 0; return NULL; }
static const char *e_close(echo *e, char c) { fsn_buf_addc(&e->out, c); e->depth--; return NULL; }
static const char *e_ba(void *c) { return e_open(c, '['); }
static const char *e_ea(void *c) { return e_close(c, ']'); }
static const char *e_bo(void *c) { return e_open(c, '{'); }
static const char *e_eo(void *c) { return e_close(c, '}'); }

static const fsn_json_handler H = {e_null, e_bool, e_int, e_num, e_str, e_ba, e_ea, e_bo, e_eo};

static int parse(const char *text, char *out, size_t cap, fsn_err *err) {
  echo e;
  memset(&e, 0, sizeof e);
  fsn_buf_init(&e.out);
  size_t len = strlen(text);
  char *scratch = malloc(len + 1);
  int rc = fsn_json_parse(text, len, scratch, &H, &e, err);
  fsn_buf_addc(&e.out, 0);
  snprintf(out, cap, "%s", e.out.data);
  free(scratch);
  fsn_buf_free(&e.out);
  return rc;
}

static void expect_ok(const char *text, const char *events) {
  char out[512];
  fsn_err err = {{0}, {0}};
  CHECK(parse(text, out, sizeof out, &err) == 0);
  CHECK_STR(out, events);
}

static void expect_error(const char *text, const char *msg) {
  char out[512];
  fsn_err err = {{0}, {0}};
  CHECK(parse(text, out, sizeof out, &err) == -1);
  CHECK_STR(err.code, "EJSON");
  CHECK_STR(err.msg, msg);
}

static void test_parser(void) {
  expect_ok("{\"a\":[1,-2,true,false,null],\"b\":{}}", "{ka:[i1,i-2,true,false,null],kb:{}}");
  expect_ok(" [ ] ", "[]");
  expect_ok("1700000000123456789", "i1700000000123456789");
  expect_ok("-9223372036854775808", "i-9223372036854775808");
  expect_ok("9223372036854775808", "d9.22337e+18");
  expect_ok("1.5", "d1.5");
  expect_ok("1e2", "d100");
  expect_ok("\"\\u00e9\\ud83d\\ude00\\n\"", "'\xc3\xa9\xf0\x9f\x98\x80\n'");
  expect_error("[1,2,]", "line 1, column 6: trailing comma in array");
  expect_error("{\"a\":1,}", "line 1, column 8: trailing comma in object");
  expect_error("[1]x", "line 1, column 4: trailing characters after the value");
  expect_error("\n\n  [NaN]", "line 3, column 4: NaN and Infinity are not JSON");
  expect_error("[-Infinity]", "line 1, column 2: NaN and Infinity are not JSON");
  expect_error("[01]", "line 1, column 3: ',' or ']' expected");
  expect_error("[1.]", "line 1, column 2: bad number: digit expected after '.'");
  expect_error("\"a\xff\"", "line 1, column 3: invalid UTF-8 in string");
  expect_error("\"\xed\xa0\x80\"", "line 1, column 2: invalid UTF-8 in string");
  expect_error("\"\\ud800\"", "line 1, column 2: unpaired surrogate in \\u escape");
  expect_error("\"a\tb\"", "line 1, column 3: control character in string");
  expect_error("\"\\x\"", "line 1, column 2: bad escape in string");
  expect_error("", "line 1, column 1: value expected");
  expect_error("{\"reject\":1}", "line 1, column 2: rejected key");
  expect_error("1e999", "line 1, column 1: number out of range");
  expect_error("\xEF\xBB\xBF{}", "line 1, column 1: byte order mark is not allowed");
  char deep[300];
  memset(deep, '[', 129);
  memset(deep + 129, ']', 129);
  deep[258] = 0;
  expect_error(deep, "line 1, column 129: nesting deeper than 128");
  deep[1] = 0;
  memset(deep, '[', 128);
  memset(deep + 128, ']', 128);
  deep[256] = 0;
  char expected[300];
  memcpy(expected, deep, 257);
  expect_ok(deep, expected);
}

static void test_writer(void) {
  fsn_buf b;
  fsn_buf_init(&b);
  fsn_json_write_string(&b, "a\"\\\n\x01\xc3\xa9", 7);
  fsn_buf_addc(&b, 0);
  CHECK_STR(b.data, "\"a\\\"\\\\\\n\\u0001\xc3\xa9\"");
  double vals[] = {1.0, 0.1, 1e300, 5e-324, 123456.789, -2.5, 1e21};
  const char *txt[] = {"1.0", "0.1", "1e+300", "5e-324", "123456.789", "-2.5", "1e+21"};
  for (int i = 0; i < 7; i++) {
    fsn_buf_reset(&b);
    CHECK(fsn_json_write_double(&b, vals[i]) == 0);
    fsn_buf_addc(&b, 0);
    CHECK_STR(b.data, txt[i]);
  }
  CHECK(fsn_json_write_double(&b, NAN) == -1);
  CHECK(fsn_json_write_double(&b, INFINITY) == -1);
  fsn_buf_reset(&b);
  fsn_json_write_integer(&b, INT64_MIN);
  fsn_buf_addc(&b, 0);
  CHECK_STR(b.data, "-9223372036854775808");
  fsn_buf_free(&b);
}

static void test_utf8(void) {
  CHECK(fsn_utf8_valid("h\xc3\xa9llo", 6));
  CHECK(!fsn_utf8_valid("\xc0\x80", 2));    /* overlong */
  CHECK(!fsn_utf8_valid("\xed\xa0\x80", 3)); /* surrogate */
  CHECK(!fsn_utf8_valid("\xf4\x90\x80\x80", 4)); /* > U+10FFFF */
  CHECK(!fsn_utf8_valid("\xe2\x82", 2));    /* truncated */
  fsn_buf b;
  fsn_buf_init(&b);
  fsn_utf8_lossy(&b, "a\xff" "b\xe2\x82" "c", 6);
  fsn_buf_addc(&b, 0);
  CHECK_STR(b.data, "a\xef\xbf\xbd" "b\xef\xbf\xbd" "c");
  fsn_buf_free(&b);
}

int main(void) {
  test_parser();
  test_writer();
  test_utf8();
  return check_done("test_json");
}
