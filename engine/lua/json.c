/* engine.json: strict decode into Lua tables, canonical/pretty encode.
 * Decoded arrays and objects carry a shared metatable that records their
 * kind, so that empty ones round-trip; json.array/object/ordered mark
 * hand-built tables the same way. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "aux.h"
#include "json.h"

#define DEFAULT_MAX_BYTES ((lua_Integer)256 << 20)
#define KIND_FIELD "__jsonkind"
#define ORDER_FIELD "__jsonorder"

/* {=== decode ===} */

typedef struct decoder {
  lua_State *L;
  int array_mt, object_mt; /* stack indices */
  int depth;
  lua_Integer index[FSN_JSON_MAX_DEPTH + 1]; /* next array slot, or 0 for an object */
} decoder;

/* Stores the value on top into the enclosing container, if any. */
static const char *put(decoder *d) {
  lua_State *L = d->L;
  if (d->depth == 0) return NULL;
  lua_Integer *ix = &d->index[d->depth];
  if (*ix > 0) {
    lua_rawseti(L, -2, (*ix)++);
  } else {
    /* stack: table key value */
    lua_rawset(L, -3);
  }
  return NULL;
}

static const char *on_null(void *ctx) {
  decoder *d = ctx;
  lua_pushlightuserdata(d->L, NULL);
  return put(d);
}

static const char *on_bool(void *ctx, int v) {
  decoder *d = ctx;
  lua_pushboolean(d->L, v);
  return put(d);
}

static const char *on_int(void *ctx, int64_t v) {
  decoder *d = ctx;
  lua_pushinteger(d->L, (lua_Integer)v);
  return put(d);
}

static const char *on_num(void *ctx, double v) {
  decoder *d = ctx;
  lua_pushnumber(d->L, (lua_Number)v);
  return put(d);
}

static const char *on_string(void *ctx, const char *s, size_t len, int is_key) {
  decoder *d = ctx;
  lua_State *L = d->L;
  lua_pushlstring(L, s, len);
  if (!is_key) return put(d);
  lua_pushvalue(L, -1);
  if (lua_rawget(L, -3) != LUA_TNIL) {
    lua_pop(L, 1);
    return "duplicate key in object";
  }
  lua_pop(L, 1);
  return NULL;
}

static const char *begin(decoder *d, int mt, lua_Integer first) {
  lua_State *L = d->L;
  if (!lua_checkstack(L, 4)) return "document too deep for the Lua stack";
  lua_newtable(L);
  lua_pushvalue(L, mt);
  lua_setmetatable(L, -2);
  d->index[++d->depth] = first;
  return NULL;
}

static const char *on_begin_array(void *ctx) {
  decoder *d = ctx;
  return begin(d, d->array_mt, 1);
}

static const char *on_begin_object(void *ctx) {
  decoder *d = ctx;
  return begin(d, d->object_mt, 0);
}

static const char *on_end(void *ctx) {
  decoder *d = ctx;
  d->depth--;
  return put(d);
}

static const fsn_json_handler HANDLER = {
  on_null, on_bool, on_int, on_num, on_string,
  on_begin_array, on_end, on_begin_object, on_end,
};

int fsn_lua_json_decode(lua_State *L, int state_idx, const char *text, size_t len,
                        fsn_err *err) {
  state_idx = lua_absindex(L, state_idx);
  int base = lua_gettop(L);
  /* The scratch is a userdata, so a memory error inside a callback leaks
   * nothing. */
  char *scratch = lua_newuserdatauv(L, len + 1, 0);
  lua_getiuservalue(L, state_idx, 1);
  lua_getiuservalue(L, state_idx, 2);
  decoder d = {L, base + 2, base + 3, 0, {0}};
  if (fsn_json_parse(text, len, scratch, &HANDLER, &d, err) != 0) {
    lua_settop(L, base);
    return -1;
  }
  lua_replace(L, base + 1);
  lua_settop(L, base + 1);
  return 0;
}

static int l_decode(lua_State *L) {
  size_t len;
  const char *text = luaL_checklstring(L, 1, &len);
  static const char *const allowed[] = {"max_bytes", "name", NULL};
  fsn_lua_check_options(L, 2, allowed);
  lua_Integer max = fsn_lua_opt_integer(L, 2, "max_bytes", DEFAULT_MAX_BYTES);
  const char *name = fsn_lua_opt_string(L, 2, "name", NULL);
  fsn_err err;
  if ((lua_Integer)len > max) {
    fsn_fail(&err, "ETOOBIG", "%s%sdocument of %zu bytes exceeds the limit of %lld bytes",
             name ? name : "", name ? ": " : "", len, (long long)max);
    return fsn_lua_fail(L, &err);
  }
  if (fsn_lua_json_decode(L, FSN_STATE_IDX, text, len, &err) != 0) {
    if (name) {
      fsn_err e2 = err;
      fsn_fail(&err, e2.code, "%s: %s", name, e2.msg);
    }
    return fsn_lua_fail(L, &err);
  }
  return 1;
}

/* {=== encode ===} */

typedef struct encoder {
  lua_State *L;
  fsn_buf *b;
  int pretty;
} encoder;

typedef struct key_ref {
  const char *s;
  size_t len;
} key_ref;

static int cmp_keys(const void *a, const void *b) {
  const key_ref *x = a, *y = b;
  size_t n = x->len < y->len ? x->len : y->len;
  int c = memcmp(x->s, y->s, n);
  if (c) return c;
  return x->len < y->len ? -1 : x->len > y->len;
}

static void newline(encoder *e, int depth) {
  if (!e->pretty) return;
  fsn_buf_addc(e->b, '\n');
  for (int i = 0; i < depth; i++) fsn_buf_add(e->b, "  ", 2);
}

static void encode_value(encoder *e, int idx, int depth);

static void encode_string(encoder *e, int idx) {
  size_t len;
  const char *s = lua_tolstring(e->L, idx, &len);
  if (!fsn_utf8_valid(s, len)) luaL_error(e->L, "json.encode: string is not valid UTF-8");
  fsn_json_write_string(e->b, s, len);
}

/* Kind of the table at idx: 'a' array, 'o' object; pushes its key order
 * table (or nil). */
static int table_kind(encoder *e, int idx) {
  lua_State *L = e->L;
  if (lua_getmetatable(L, idx)) {
    int has_order = lua_getfield(L, -1, ORDER_FIELD) == LUA_TTABLE;
    lua_getfield(L, -2, KIND_FIELD);
    const char *kind = lua_tostring(L, -1);
    int k = kind && !strcmp(kind, "array") ? 'a' : (kind && !strcmp(kind, "object") ? 'o' : 0);
    lua_pop(L, 1);
    lua_remove(L, -2); /* the metatable; the order (or nil) stays */
    if (has_order) return 'o';
    if (k) return k;
  } else {
    lua_pushnil(L);
  }
  /* Unmarked: an array if the keys are exactly 1..n, an object if all keys
   * are strings; an empty table is an object. */
  lua_Integer n = 0, max = 0;
  int strings = 0;
  lua_pushnil(L);
  while (lua_next(L, idx)) {
    lua_pop(L, 1);
    if (lua_type(L, -1) == LUA_TSTRING) {
      strings++;
    } else if (lua_isinteger(L, -1) && lua_tointeger(L, -1) >= 1) {
      n++;
      if (lua_tointeger(L, -1) > max) max = lua_tointeger(L, -1);
    } else {
      luaL_error(L, "json.encode: table key of type %s", luaL_typename(L, -1));
    }
  }
  if (n && strings) luaL_error(L, "json.encode: table mixes array and object keys");
  if (n && max != n) luaL_error(L, "json.encode: array with holes (%d of %d slots set)", (int)n, (int)max);
  return n ? 'a' : 'o';
}

static void encode_array(encoder *e, int idx, int depth) {
  lua_State *L = e->L;
  lua_Integer n = (lua_Integer)lua_rawlen(L, idx);
  fsn_buf_addc(e->b, '[');
  for (lua_Integer i = 1; i <= n; i++) {
    if (i > 1) fsn_buf_addc(e->b, ',');
    newline(e, depth + 1);
    if (lua_rawgeti(L, idx, i) == LUA_TNIL)
      luaL_error(L, "json.encode: array has no value at index %d", (int)i);
    encode_value(e, lua_gettop(L), depth + 1);
    lua_pop(L, 1);
  }
  if (n) newline(e, depth);
  fsn_buf_addc(e->b, ']');
}

static void encode_member(encoder *e, int idx, const char *k, size_t klen, int depth,
                          int *count) {
  lua_State *L = e->L;
  lua_pushlstring(L, k, klen);
  if (lua_rawget(L, idx) == LUA_TNIL) {
    lua_pop(L, 1);
    return;
  }
  if ((*count)++) fsn_buf_addc(e->b, ',');
  newline(e, depth + 1);
  if (!fsn_utf8_valid(k, klen)) luaL_error(L, "json.encode: key is not valid UTF-8");
  fsn_json_write_string(e->b, k, klen);
  fsn_buf_add(e->b, e->pretty ? ": " : ":", e->pretty ? 2 : 1);
  encode_value(e, lua_gettop(L), depth + 1);
  lua_pop(L, 1);
}

static void encode_object(encoder *e, int idx, int order_idx, int depth) {
  lua_State *L = e->L;
  size_t nkeys = 0;
  lua_pushnil(L);
  while (lua_next(L, idx)) {
    lua_pop(L, 1);
    if (lua_type(L, -1) != LUA_TSTRING)
      luaL_error(L, "json.encode: object key of type %s", luaL_typename(L, -1));
    nkeys++;
  }
  /* Scratch for the key list lives in a userdata: a raised error frees it. */
  key_ref *keys = lua_newuserdatauv(L, (nkeys ? nkeys : 1) * sizeof *keys, 0);
  int keys_idx = lua_gettop(L);
  size_t k = 0;
  lua_pushnil(L);
  while (lua_next(L, idx)) {
    lua_pop(L, 1);
    keys[k].s = lua_tolstring(L, -1, &keys[k].len); /* anchored by the table */
    k++;
  }
  qsort(keys, nkeys, sizeof *keys, cmp_keys);
  int count = 0;
  fsn_buf_addc(e->b, '{');
  if (!lua_isnil(L, order_idx)) {
    /* Keys in the given order first, then any others in canonical order. */
    lua_Integer n = (lua_Integer)lua_rawlen(L, order_idx);
    for (lua_Integer i = 1; i <= n; i++) {
      lua_rawgeti(L, order_idx, i);
      size_t len;
      const char *s = lua_tolstring(L, -1, &len);
      if (s) encode_member(e, idx, s, len, depth, &count);
      lua_pop(L, 1);
    }
    for (size_t j = 0; j < nkeys; j++) {
      int listed = 0;
      for (lua_Integer i = 1; i <= n && !listed; i++) {
        lua_rawgeti(L, order_idx, i);
        size_t len;
        const char *s = lua_tolstring(L, -1, &len);
        listed = s && len == keys[j].len && !memcmp(s, keys[j].s, len);
        lua_pop(L, 1);
      }
      if (!listed) encode_member(e, idx, keys[j].s, keys[j].len, depth, &count);
    }
  } else {
    for (size_t j = 0; j < nkeys; j++) encode_member(e, idx, keys[j].s, keys[j].len, depth, &count);
  }
  if (count) newline(e, depth);
  fsn_buf_addc(e->b, '}');
  lua_settop(L, keys_idx - 1);
}

static void encode_value(encoder *e, int idx, int depth) {
  lua_State *L = e->L;
  if (depth > FSN_JSON_MAX_DEPTH)
    luaL_error(L, "json.encode: nesting deeper than %d (a cycle?)", FSN_JSON_MAX_DEPTH);
  switch (lua_type(L, idx)) {
  case LUA_TNIL:
    fsn_buf_add(e->b, "null", 4);
    break;
  case LUA_TBOOLEAN:
    if (lua_toboolean(L, idx)) fsn_buf_add(e->b, "true", 4);
    else fsn_buf_add(e->b, "false", 5);
    break;
  case LUA_TNUMBER:
    if (lua_isinteger(L, idx)) fsn_json_write_integer(e->b, (int64_t)lua_tointeger(L, idx));
    else if (fsn_json_write_double(e->b, (double)lua_tonumber(L, idx)) != 0)
      luaL_error(L, "json.encode: NaN and infinity are not JSON");
    break;
  case LUA_TSTRING:
    encode_string(e, idx);
    break;
  case LUA_TLIGHTUSERDATA:
    if (lua_touserdata(L, idx) == NULL) {
      fsn_buf_add(e->b, "null", 4);
      break;
    }
    /* fallthrough */
  default:
    luaL_error(L, "json.encode: cannot encode a %s", luaL_typename(L, idx));
    break;
  case LUA_TTABLE: {
    luaL_checkstack(L, 8, "json.encode: too deep");
    int kind = table_kind(e, idx);
    int order_idx = lua_gettop(L);
    if (kind == 'a') encode_array(e, idx, depth);
    else encode_object(e, idx, order_idx, depth);
    lua_pop(L, 1);
  }
  }
  if (e->b->oom) luaL_error(L, "json.encode: out of memory");
}

void fsn_lua_json_encode(lua_State *L, int idx, fsn_buf *b, int pretty) {
  encoder e = {L, b, pretty};
  encode_value(&e, lua_absindex(L, idx), 0);
}

static int l_encode(lua_State *L) {
  luaL_checkany(L, 1);
  static const char *const allowed[] = {"pretty", NULL};
  fsn_lua_check_options(L, 2, allowed);
  int pretty = fsn_lua_opt_boolean(L, 2, "pretty", 0);
  lua_settop(L, 1);
  fsn_buf *b = fsn_lua_newbuf(L);
  fsn_lua_json_encode(L, 1, b, pretty);
  lua_pushlstring(L, b->data ? b->data : "", b->len);
  return 1;
}

/* {=== marks ===} */

static int mark(lua_State *L, int uv) {
  luaL_checktype(L, 1, LUA_TTABLE);
  lua_settop(L, 1);
  if (lua_getmetatable(L, 1)) {
    lua_getiuservalue(L, FSN_STATE_IDX, 1);
    lua_getiuservalue(L, FSN_STATE_IDX, 2);
    if (!lua_rawequal(L, -1, -3) && !lua_rawequal(L, -2, -3))
      return luaL_error(L, "json: table already has a metatable");
    lua_settop(L, 1);
  }
  lua_getiuservalue(L, FSN_STATE_IDX, uv);
  lua_setmetatable(L, 1);
  return 1;
}

static int l_array(lua_State *L) { return mark(L, 1); }
static int l_object(lua_State *L) { return mark(L, 2); }

static int l_ordered(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  luaL_checktype(L, 2, LUA_TTABLE);
  lua_Integer n = (lua_Integer)lua_rawlen(L, 2);
  lua_createtable(L, (int)n, 0);
  for (lua_Integer i = 1; i <= n; i++) {
    if (lua_rawgeti(L, 2, i) != LUA_TSTRING) return luaL_error(L, "json.ordered: key %d is not a string", (int)i);
    lua_rawseti(L, -2, i);
  }
  lua_createtable(L, 0, 3);
  lua_insert(L, -2);
  lua_setfield(L, -2, ORDER_FIELD);
  lua_pushliteral(L, "object");
  lua_setfield(L, -2, KIND_FIELD);
  lua_pushliteral(L, "fleetsnap.json.ordered");
  lua_setfield(L, -2, "__name");
  lua_setmetatable(L, 1);
  lua_settop(L, 1);
  return 1;
}

static int l_kind(lua_State *L) {
  luaL_checkany(L, 1);
  if (lua_type(L, 1) != LUA_TTABLE || !lua_getmetatable(L, 1)) {
    luaL_pushfail(L);
    return 1;
  }
  lua_getfield(L, -1, KIND_FIELD);
  return 1;
}

static const luaL_Reg funcs[] = {
  {"decode", l_decode},
  {"encode", l_encode},
  {"array", l_array},
  {"object", l_object},
  {"ordered", l_ordered},
  {"kind", l_kind},
  {NULL, NULL},
};

static void new_kind_mt(lua_State *L, int state_idx, int uv, const char *kind) {
  lua_createtable(L, 0, 2);
  lua_pushstring(L, kind);
  lua_setfield(L, -2, KIND_FIELD);
  lua_pushfstring(L, "fleetsnap.json.%s", kind);
  lua_setfield(L, -2, "__name");
  lua_setiuservalue(L, state_idx, uv);
}

void fsn_open_json(lua_State *L, int state_idx) {
  new_kind_mt(L, state_idx, 1, "array");
  new_kind_mt(L, state_idx, 2, "object");
  fsn_lua_register(L, state_idx, "json", funcs);
  lua_getfield(L, -1, "json");
  lua_pushlightuserdata(L, NULL);
  lua_setfield(L, -2, "null");
  lua_pop(L, 1);
}
