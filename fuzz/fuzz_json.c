/* Target `json`: the strict JSON decoder and both encoders, by round trip.
 *
 *  1. Core: the event parser's events are written back with the writer
 *     primitives (fsn_json_write_*); that text must parse to the same
 *     events, and writing them again must give the same text.
 *  2. Binding: engine.json.decode, then encode (canonical and pretty), then
 *     decode again: the two decoded values must be equal (integer and float
 *     kept apart, -0.0 kept, empty arrays and objects kept apart), and the
 *     canonical encoding must be a fixed point.
 * Any difference aborts: a document that changes on its way through the
 * engine would change a manifest's or a plan's meaning on rewrite. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>

#include "fuzz.h"
#include "json.h"

/* {=== core round trip ===} */

typedef struct echo {
  fsn_buf text; /* the events written back as JSON */
  fsn_buf log;  /* the events, tagged, for comparison */
  int comma[FSN_JSON_MAX_DEPTH + 2];
  int depth;
  int after_key;
} echo;

/* A separator before a value (none right after a key). */
static void sep(echo *e) {
  if (e->after_key) {
    e->after_key = 0;
    return;
  }
  if (e->comma[e->depth]) fsn_buf_addc(&e->text, ',');
  e->comma[e->depth] = 1;
}

static const char *on_null(void *c) {
  echo *e = c;
  sep(e);
  fsn_buf_adds(&e->text, "null");
  fsn_buf_addc(&e->log, 'n');
  return NULL;
}

static const char *on_bool(void *c, int v) {
  echo *e = c;
  sep(e);
  fsn_buf_adds(&e->text, v ? "true" : "false");
  fsn_buf_addc(&e->log, v ? 't' : 'f');
  return NULL;
}

static const char *on_int(void *c, int64_t v) {
  echo *e = c;
  sep(e);
  fsn_json_write_integer(&e->text, v);
  fsn_buf_addc(&e->log, 'i');
  fsn_buf_add(&e->log, &v, sizeof v);
  return NULL;
}

static const char *on_num(void *c, double v) {
  echo *e = c;
  sep(e);
  if (fsn_json_write_double(&e->text, v) != 0) fz_die("the parser produced a non-finite number");
  /* The bits, so that -0.0 and 0.0 differ. */
  fsn_buf_addc(&e->log, 'd');
  fsn_buf_add(&e->log, &v, sizeof v);
  return NULL;
}

static const char *on_string(void *c, const char *s, size_t len, int is_key) {
  echo *e = c;
  sep(e);
  if (!fsn_utf8_valid(s, len)) fz_die("the parser produced a string that is not UTF-8");
  fsn_json_write_string(&e->text, s, len);
  fsn_buf_addc(&e->log, is_key ? 'k' : 's');
  uint64_t n = len;
  fsn_buf_add(&e->log, &n, sizeof n);
  fsn_buf_add(&e->log, s, len);
  if (is_key) {
    fsn_buf_addc(&e->text, ':');
    e->after_key = 1;
  }
  return NULL;
}

static const char *open_(echo *e, char c) {
  sep(e);
  fsn_buf_addc(&e->text, c);
  fsn_buf_addc(&e->log, c);
  if (e->depth > FSN_JSON_MAX_DEPTH) fz_die("nesting deeper than FSN_JSON_MAX_DEPTH");
  e->comma[++e->depth] = 0;
  return NULL;
}

static const char *close_(echo *e, char c) {
  fsn_buf_addc(&e->text, c);
  fsn_buf_addc(&e->log, c);
  e->depth--;
  return NULL;
}

static const char *on_begin_array(void *c) { return open_(c, '['); }
static const char *on_end_array(void *c) { return close_(c, ']'); }
static const char *on_begin_object(void *c) { return open_(c, '{'); }
static const char *on_end_object(void *c) { return close_(c, '}'); }

static const fsn_json_handler handler = {
  on_null, on_bool, on_int, on_num, on_string,
  on_begin_array, on_end_array, on_begin_object, on_end_object,
};

/* Parses text into e; 0 on success. */
static int parse(const char *text, size_t len, echo *e, fsn_err *err) {
  memset(e, 0, sizeof *e);
  fsn_buf_init(&e->text);
  fsn_buf_init(&e->log);
  char *scratch = malloc(len ? len : 1);
  if (!scratch) fz_die("out of memory");
  int rc = fsn_json_parse(text, len, scratch, &handler, e, err);
  free(scratch);
  if (e->text.oom || e->log.oom) fz_die("out of memory");
  return rc;
}

static void core_round_trip(const char *data, size_t size) {
  echo a, b, c;
  fsn_err err;
  if (parse(data, size, &a, &err) != 0) {
    if (strcmp(err.code, "EJSON") != 0) fz_die("parse failed with code %s: %s", err.code, err.msg);
    fsn_buf_free(&a.text);
    fsn_buf_free(&a.log);
    return;
  }
  if (parse(a.text.data, a.text.len, &b, &err) != 0)
    fz_die("the written-back text does not parse: %s\n%.*s", err.msg, (int)a.text.len, a.text.data);
  if (a.log.len != b.log.len || memcmp(a.log.data, b.log.data, a.log.len) != 0)
    fz_die("events differ after a round trip:\n%.*s", (int)a.text.len, a.text.data);
  if (parse(b.text.data, b.text.len, &c, &err) != 0 || c.text.len != b.text.len ||
      memcmp(c.text.data, b.text.data, b.text.len) != 0)
    fz_die("writing is not a fixed point:\n%.*s", (int)b.text.len, b.text.data);
  fsn_buf_free(&a.text);
  fsn_buf_free(&a.log);
  fsn_buf_free(&b.text);
  fsn_buf_free(&b.log);
  fsn_buf_free(&c.text);
  fsn_buf_free(&c.log);
}

/* {=== binding round trip ===} */

/* Defines round_trip(text): nil when the text is not JSON or survives the
 * trip; a string that says what differs otherwise. */
static const char BINDING[] =
    "local json = require('fleetsnap.engine').json\n"
    "local function same(a, b, path)\n"
    "  if type(a) ~= type(b) then return path .. ': ' .. type(a) .. ' became ' .. type(b) end\n"
    "  if type(a) == 'number' then\n"
    "    if math.type(a) ~= math.type(b) then return path .. ': ' .. math.type(a) .. ' became ' .. math.type(b) end\n"
    "    if a ~= b or (a == 0 and 1 / a ~= 1 / b) then return path .. ': ' .. a .. ' became ' .. b end\n"
    "    return nil\n"
    "  end\n"
    "  if type(a) ~= 'table' then\n"
    "    if a ~= b then return path .. ': ' .. tostring(a) .. ' became ' .. tostring(b) end\n"
    "    return nil\n"
    "  end\n"
    "  if json.kind(a) ~= json.kind(b) then\n"
    "    return path .. ': ' .. tostring(json.kind(a)) .. ' became ' .. tostring(json.kind(b))\n"
    "  end\n"
    "  for k, v in pairs(a) do\n"
    "    local why = same(v, b[k], path .. '.' .. tostring(k))\n"
    "    if why then return why end\n"
    "  end\n"
    "  for k in pairs(b) do\n"
    "    if a[k] == nil then return path .. '.' .. tostring(k) .. ': new' end\n"
    "  end\n"
    "  return nil\n"
    "end\n"
    "function round_trip(text)\n"
    "  local v, err, code = json.decode(text)\n"
    "  if v == nil then\n"
    "    if code ~= 'EJSON' then return 'decode failed with ' .. tostring(code) .. ': ' .. tostring(err) end\n"
    "    return nil\n"
    "  end\n"
    "  local canonical = json.encode(v)\n"
    "  local v2, err2 = json.decode(canonical)\n"
    "  if v2 == nil then return 'the canonical text does not decode: ' .. err2 .. '\\n' .. canonical end\n"
    "  local why = same(v, v2, '$')\n"
    "  if why then return 'canonical: ' .. why .. '\\n' .. canonical end\n"
    "  if json.encode(v2) ~= canonical then return 'canonical encoding is not a fixed point:\\n' .. canonical end\n"
    "  local pretty = json.encode(v, { pretty = true })\n"
    "  local v3, err3 = json.decode(pretty)\n"
    "  if v3 == nil then return 'the pretty text does not decode: ' .. err3 .. '\\n' .. pretty end\n"
    "  why = same(v, v3, '$')\n"
    "  if why then return 'pretty: ' .. why .. '\\n' .. pretty end\n"
    "  return nil\n"
    "end\n";

static lua_State *L;

int LLVMFuzzerInitialize(int *argc, char ***argv) {
  (void)argc;
  (void)argv;
  L = fz_lua_new();
  fz_lua_do(L, BINDING, "=fuzz_json");
  return 0;
}

static void binding_round_trip(const char *data, size_t size) {
  lua_getglobal(L, "round_trip");
  lua_pushlstring(L, data, size);
  if (lua_pcall(L, 1, 1, 0) != LUA_OK) fz_die("json raised: %s", lua_tostring(L, -1));
  if (!lua_isnil(L, -1)) fz_die("%s", lua_tostring(L, -1));
  lua_settop(L, 0);
  /* Each input's tables go now, not at some later input's expense. */
  lua_gc(L, LUA_GCCOLLECT);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  core_round_trip((const char *)data, size);
  binding_round_trip((const char *)data, size);
  return 0;
}
