/* luaopen_fleetsnap_engine: the engine state and the submodule tables. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "aux.h"
#include "signals.h"

#define FSN_BUF_TYPE "fleetsnap.Buffer"

int fsn_lua_fail(lua_State *L, const fsn_err *err) {
  luaL_pushfail(L);
  lua_pushstring(L, err->msg);
  lua_pushstring(L, err->code[0] ? err->code : "EIO");
  return 3;
}

void fsn_lua_class(lua_State *L, const char *name, const luaL_Reg *methods,
                   const luaL_Reg *meta) {
  luaL_newmetatable(L, name);
  luaL_setfuncs(L, meta, 0);
  lua_newtable(L);
  luaL_setfuncs(L, methods, 0);
  lua_setfield(L, -2, "__index");
  lua_pop(L, 1);
}

void fsn_lua_check_options(lua_State *L, int idx, const char *const *allowed) {
  if (lua_isnoneornil(L, idx)) return;
  luaL_checktype(L, idx, LUA_TTABLE);
  lua_pushnil(L);
  while (lua_next(L, idx)) {
    lua_pop(L, 1);
    if (lua_type(L, -1) != LUA_TSTRING) luaL_error(L, "option names must be strings");
    const char *k = lua_tostring(L, -1);
    int ok = 0;
    for (const char *const *a = allowed; *a; a++)
      if (!strcmp(*a, k)) { ok = 1; break; }
    if (!ok) luaL_error(L, "unknown option '%s'", k);
  }
}

static int opt_field(lua_State *L, int idx, const char *key) {
  if (lua_isnoneornil(L, idx)) return LUA_TNIL;
  return lua_getfield(L, idx, key);
}

lua_Integer fsn_lua_opt_integer(lua_State *L, int idx, const char *key, lua_Integer def) {
  int t = opt_field(L, idx, key);
  if (t == LUA_TNIL) {
    if (!lua_isnoneornil(L, idx)) lua_pop(L, 1);
    return def;
  }
  int isnum;
  lua_Integer v = lua_tointegerx(L, -1, &isnum);
  if (!isnum) luaL_error(L, "option '%s' must be an integer", key);
  lua_pop(L, 1);
  return v;
}

const char *fsn_lua_opt_string(lua_State *L, int idx, const char *key, const char *def) {
  int t = opt_field(L, idx, key);
  if (t == LUA_TNIL) {
    if (!lua_isnoneornil(L, idx)) lua_pop(L, 1);
    return def;
  }
  if (t != LUA_TSTRING) luaL_error(L, "option '%s' must be a string", key);
  /* The options table keeps the string alive. */
  const char *s = lua_tostring(L, -1);
  lua_pop(L, 1);
  return s;
}

int fsn_lua_opt_boolean(lua_State *L, int idx, const char *key, int def) {
  int t = opt_field(L, idx, key);
  if (t == LUA_TNIL) {
    if (!lua_isnoneornil(L, idx)) lua_pop(L, 1);
    return def;
  }
  if (t != LUA_TBOOLEAN) luaL_error(L, "option '%s' must be a boolean", key);
  int v = lua_toboolean(L, -1);
  lua_pop(L, 1);
  return v;
}

static int buf_gc(lua_State *L) {
  fsn_buf_free((fsn_buf *)luaL_checkudata(L, 1, FSN_BUF_TYPE));
  return 0;
}

fsn_buf *fsn_lua_newbuf(lua_State *L) {
  fsn_buf *b = lua_newuserdatauv(L, sizeof *b, 0);
  fsn_buf_init(b);
  if (luaL_newmetatable(L, FSN_BUF_TYPE)) {
    lua_pushcfunction(L, buf_gc);
    lua_setfield(L, -2, "__gc");
  }
  lua_setmetatable(L, -2);
  return b;
}

void fsn_lua_register(lua_State *L, int state_idx, const char *name, const luaL_Reg *funcs) {
  lua_newtable(L);
  lua_pushvalue(L, state_idx);
  luaL_setfuncs(L, funcs, 1);
  lua_setfield(L, -2, name);
}

/* {=== engine state ===} */

static int state_gc(lua_State *L) {
  fsn_state *s = luaL_checkudata(L, 1, FSN_STATE);
  fsn_hasher_free(s->hasher);
  s->hasher = NULL;
  fsn_failpoints_close(&s->fp);
  /* lua_close unloads this module after finalizing its state: no handler
   * may be left pointing into the unmapped code. */
  fsn_signals_release();
  return 0;
}

static int l_failpoint(lua_State *L) {
  const char *point = luaL_checkstring(L, 1);
  const char *key = luaL_optstring(L, 2, "");
  lua_pushinteger(L, fsn_failpoint_hit(&fsn_lua_state(L)->fp, point, key));
  return 1;
}

static int push_clock(lua_State *L, clockid_t id) {
  struct timespec ts;
  clock_gettime(id, &ts);
  lua_pushinteger(L, (lua_Integer)ts.tv_sec * 1000000000 + ts.tv_nsec);
  return 1;
}

/* Monotonic nanoseconds, for durations. */
static int l_monotonic_ns(lua_State *L) { return push_clock(L, CLOCK_MONOTONIC); }
/* Wall-clock nanoseconds since the epoch (the IC's u64 timestamp unit). */
static int l_realtime_ns(lua_State *L) { return push_clock(L, CLOCK_REALTIME); }

/* Sleeps without spawning a process (icp-sim's latency and bandwidth). */
static int l_sleep_ms(lua_State *L) {
  lua_Integer ms = luaL_checkinteger(L, 1);
  luaL_argcheck(L, ms >= 0, 1, "must not be negative");
  struct timespec ts = {(time_t)(ms / 1000), (long)(ms % 1000) * 1000000L};
  while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {}
  return 0;
}

/* Whether a descriptor (0, 1, 2) is a terminal: progress only there. */
static int l_isatty(lua_State *L) {
  lua_pushboolean(L, isatty((int)luaL_checkinteger(L, 1)));
  return 1;
}

static const luaL_Reg engine_funcs[] = {
  {"failpoint", l_failpoint},
  {"isatty", l_isatty},
  {"sleep_ms", l_sleep_ms},
  {"monotonic_ns", l_monotonic_ns},
  {"realtime_ns", l_realtime_ns},
  {NULL, NULL},
};

__attribute__((visibility("default"))) int luaopen_fleetsnap_engine(lua_State *L) {
  fsn_state *s = lua_newuserdatauv(L, sizeof *s, 2);
  memset(s, 0, sizeof *s);
  luaL_newmetatable(L, FSN_STATE);
  lua_pushcfunction(L, state_gc);
  lua_setfield(L, -2, "__gc");
  lua_setmetatable(L, -2);
  int state_idx = lua_gettop(L);
  fsn_err err;
  s->hasher = fsn_hasher_new(&err);
  if (!s->hasher) return luaL_error(L, "fleetsnap.engine: %s", err.msg);
  if (fsn_failpoints_parse(&s->fp, getenv("FLEETSNAP_FAILPOINT")) != 0)
    return luaL_error(L, "fleetsnap.engine: bad FLEETSNAP_FAILPOINT '%s' "
                         "(want <point>[@<key>]:<n>[,...])", getenv("FLEETSNAP_FAILPOINT"));
  if (fsn_failpoints_enabled() && fsn_failpoints_trace(&s->fp, getenv("FLEETSNAP_FAILPOINT_TRACE")) != 0)
    return luaL_error(L, "fleetsnap.engine: cannot open FLEETSNAP_FAILPOINT_TRACE '%s'",
                      getenv("FLEETSNAP_FAILPOINT_TRACE"));

  lua_newtable(L);
  lua_pushvalue(L, state_idx);
  luaL_setfuncs(L, engine_funcs, 1);
  lua_pushboolean(L, fsn_failpoints_enabled());
  lua_setfield(L, -2, "failpoints_enabled");
  lua_pushliteral(L, FLEETSNAP_VERSION);
  lua_setfield(L, -2, "version");
  fsn_open_json(L, state_idx);
  fsn_open_hash(L, state_idx);
  fsn_open_fs(L, state_idx);
  fsn_open_lock(L, state_idx);
  fsn_open_proc(L, state_idx);
  fsn_open_journal(L, state_idx);
  fsn_open_signals(L, state_idx);
  return 1;
}
