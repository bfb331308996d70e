/* engine.signals: SIGINT, SIGTERM and SIGHUP as a flag the executor checks
 * at safe points (and that ends proc.wait_any), so that an interrupted run
 * restarts what it stopped instead of dying mid-effect. */
#include "aux.h"
#include "signals.h"

static int l_catch(lua_State *L) {
  fsn_err err;
  if (fsn_signals_catch(&err) != 0) return fsn_lua_fail(L, &err);
  lua_pushboolean(L, 1);
  return 1;
}

/* The first signal caught since the last clear, by name, and how many were
 * caught since; nil if none. */
static int l_pending(lua_State *L) {
  int count;
  int sig = fsn_signals_pending(&count);
  if (!sig) {
    lua_pushnil(L);
    return 1;
  }
  lua_pushstring(L, fsn_signal_name(sig));
  lua_pushinteger(L, count);
  return 2;
}

static int l_clear(lua_State *L) {
  (void)L;
  fsn_signals_clear();
  return 0;
}

static int l_release(lua_State *L) {
  (void)L;
  fsn_signals_release();
  return 0;
}

static const luaL_Reg funcs[] = {
  {"catch", l_catch},
  {"pending", l_pending},
  {"clear", l_clear},
  {"release", l_release},
  {NULL, NULL},
};

void fsn_open_signals(lua_State *L, int state_idx) {
  fsn_lua_register(L, state_idx, "signals", funcs);
}
