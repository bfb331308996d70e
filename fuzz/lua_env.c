/* The embedded Lua of the targets that go through the Lua binding. */
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>
#include <lualib.h>

#include "fuzz.h"

int luaopen_fleetsnap_engine(lua_State *L);

lua_State *fz_lua_new(void) {
  lua_State *L = luaL_newstate();
  if (!L) fz_die("luaL_newstate: out of memory");
  luaL_openlibs(L);
  const char *src = getenv("FLEETSNAP_SOURCE");
  if (!src || !*src) src = FLEETSNAP_SOURCE_DIR;
  lua_getglobal(L, "package");
  lua_pushfstring(L, "%s/lua/?.lua;%s/lua/?/init.lua", src, src);
  lua_setfield(L, -2, "path");
  /* No C module from outside: the engine is the one linked in here. */
  lua_pushliteral(L, "");
  lua_setfield(L, -2, "cpath");
  lua_getfield(L, -1, "preload");
  lua_pushcfunction(L, luaopen_fleetsnap_engine);
  lua_setfield(L, -2, "fleetsnap.engine");
  lua_pop(L, 2);
  return L;
}

void fz_lua_do(lua_State *L, const char *chunk, const char *name) {
  if (luaL_loadbuffer(L, chunk, strlen(chunk), name) != LUA_OK || lua_pcall(L, 0, 0, 0) != LUA_OK)
    fz_die("%s: %s", name, lua_tostring(L, -1));
}
