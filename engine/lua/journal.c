/* engine.journal: records are Lua tables stored as canonical JSON. */
#include <string.h>

#include "aux.h"
#include "journal.h"

#define JOURNAL_TYPE "fleetsnap.Journal"

typedef struct journal_ud {
  fsn_journal j;
} journal_ud;

static int journal_gc(lua_State *L) {
  journal_ud *u = luaL_checkudata(L, 1, JOURNAL_TYPE);
  fsn_err err;
  fsn_journal_close(&u->j, &err);
  return 0;
}

static journal_ud *check_open(lua_State *L, int idx) {
  journal_ud *u = luaL_checkudata(L, idx, JOURNAL_TYPE);
  if (u->j.fd < 0) luaL_error(L, "journal is closed");
  return u;
}

static void push_info(lua_State *L, const fsn_journal *j) {
  lua_createtable(L, 0, 4);
  lua_pushinteger(L, (lua_Integer)j->records);
  lua_setfield(L, -2, "records");
  lua_pushinteger(L, (lua_Integer)j->torn_bytes);
  lua_setfield(L, -2, "torn_bytes");
  lua_pushinteger(L, (lua_Integer)j->end);
  lua_setfield(L, -2, "bytes");
  lua_pushboolean(L, j->created);
  lua_setfield(L, -2, "created");
}

static int l_open(lua_State *L) {
  const char *path = luaL_checkstring(L, 1);
  static const char *const allowed[] = {"readonly", NULL};
  fsn_lua_check_options(L, 2, allowed);
  int readonly = fsn_lua_opt_boolean(L, 2, "readonly", 0);
  journal_ud *u = lua_newuserdatauv(L, sizeof *u, 2);
  fsn_journal_init(&u->j);
  luaL_setmetatable(L, JOURNAL_TYPE);
  /* Anchor the engine state: the journal uses its failpoints and JSON
   * metatables for as long as it lives. */
  lua_pushvalue(L, FSN_STATE_IDX);
  lua_setiuservalue(L, -2, 1);
  lua_pushvalue(L, 1);
  lua_setiuservalue(L, -2, 2);
  fsn_err err;
  int rc = readonly ? fsn_journal_open_readonly(&u->j, path, &err)
                    : fsn_journal_open(&u->j, path, &fsn_lua_state(L)->fp, &err);
  if (rc != 0) return fsn_lua_fail(L, &err);
  push_info(L, &u->j);
  return 2;
}

static int buffer_record(lua_State *L, journal_ud *u) {
  luaL_checktype(L, 2, LUA_TTABLE);
  const char *key = luaL_optstring(L, 3, NULL);
  fsn_buf *b = fsn_lua_newbuf(L);
  fsn_lua_json_encode(L, 2, b, 0);
  fsn_err err;
  if (fsn_journal_write(&u->j, b->data, b->len, key, &err) != 0) return fsn_lua_fail(L, &err);
  return 0;
}

static int m_write(lua_State *L) {
  journal_ud *u = check_open(L, 1);
  int n = buffer_record(L, u);
  if (n) return n;
  lua_pushboolean(L, 1);
  return 1;
}

static int m_sync(lua_State *L) {
  journal_ud *u = check_open(L, 1);
  fsn_err err;
  if (fsn_journal_sync(&u->j, &err) != 0) return fsn_lua_fail(L, &err);
  lua_pushboolean(L, 1);
  return 1;
}

static int m_append(lua_State *L) {
  journal_ud *u = check_open(L, 1);
  int n = buffer_record(L, u);
  if (n) return n;
  fsn_err err;
  if (fsn_journal_sync(&u->j, &err) != 0) return fsn_lua_fail(L, &err);
  lua_pushboolean(L, 1);
  return 1;
}

/* Iterator closure: upvalues 1 = journal, 2 = offset, 3 = buffer box. */
static int records_next(lua_State *L) {
  journal_ud *u = check_open(L, lua_upvalueindex(1));
  uint64_t off = (uint64_t)lua_tointeger(L, lua_upvalueindex(2));
  fsn_buf *b = lua_touserdata(L, lua_upvalueindex(3));
  fsn_err err;
  int r = fsn_journal_next(&u->j, &off, b, &err);
  if (r < 0) return luaL_error(L, "%s (%s)", err.msg, err.code);
  if (r == 0) return 0;
  lua_pushinteger(L, (lua_Integer)off);
  lua_replace(L, lua_upvalueindex(2));
  lua_getiuservalue(L, lua_upvalueindex(1), 1);
  if (fsn_lua_json_decode(L, -1, b->data, b->len, &err) != 0)
    return luaL_error(L, "journal record before offset %d: %s", (int)off, err.msg);
  return 1;
}

static int m_records(lua_State *L) {
  check_open(L, 1);
  lua_settop(L, 1);
  lua_pushinteger(L, 0);
  fsn_lua_newbuf(L);
  lua_pushcclosure(L, records_next, 3);
  return 1;
}

static int m_compact(lua_State *L) {
  journal_ud *u = check_open(L, 1);
  luaL_checktype(L, 2, LUA_TTABLE);
  fsn_buf *b = fsn_lua_newbuf(L);
  fsn_lua_json_encode(L, 2, b, 0);
  fsn_err err;
  if (fsn_journal_compact(&u->j, b->data, b->len, &err) != 0) return fsn_lua_fail(L, &err);
  lua_pushboolean(L, 1);
  return 1;
}

static int m_info(lua_State *L) {
  journal_ud *u = check_open(L, 1);
  push_info(L, &u->j);
  lua_pushinteger(L, (lua_Integer)u->j.npending);
  lua_setfield(L, -2, "pending");
  return 1;
}

static int m_path(lua_State *L) {
  luaL_checkudata(L, 1, JOURNAL_TYPE);
  lua_getiuservalue(L, 1, 2);
  return 1;
}

static int m_close(lua_State *L) {
  journal_ud *u = luaL_checkudata(L, 1, JOURNAL_TYPE);
  fsn_err err;
  if (fsn_journal_close(&u->j, &err) != 0) return fsn_lua_fail(L, &err);
  lua_pushboolean(L, 1);
  return 1;
}

static int m_tostring(lua_State *L) {
  journal_ud *u = luaL_checkudata(L, 1, JOURNAL_TYPE);
  lua_getiuservalue(L, 1, 2);
  lua_pushfstring(L, "fleetsnap.Journal (%s)%s", lua_tostring(L, -1), u->j.fd >= 0 ? "" : " (closed)");
  return 1;
}

static const luaL_Reg methods[] = {
  {"write", m_write},
  {"sync", m_sync},
  {"append", m_append},
  {"records", m_records},
  {"compact", m_compact},
  {"info", m_info},
  {"path", m_path},
  {"close", m_close},
  {NULL, NULL},
};

static const luaL_Reg meta[] = {
  {"__gc", journal_gc},
  {"__close", journal_gc},
  {"__tostring", m_tostring},
  {NULL, NULL},
};

static const luaL_Reg funcs[] = {
  {"open", l_open},
  {NULL, NULL},
};

void fsn_open_journal(lua_State *L, int state_idx) {
  fsn_lua_class(L, JOURNAL_TYPE, methods, meta);
  fsn_lua_register(L, state_idx, "journal", funcs);
}
