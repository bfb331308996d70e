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

/* {=== Lua line coverage ===}
 * The Lua interpreter is not instrumented, so libFuzzer would see only the
 * engine's C code under the readers and steer blind through the Lua ones.
 * A line hook feeds it the Lua side too: each (previous line, line) pair of
 * the same chunk, hashed AFL-style into libFuzzer's extra counters. */
#define LUA_COV_SIZE 65536
__attribute__((section("__libfuzzer_extra_counters"), used)) static uint8_t lua_cov[LUA_COV_SIZE];
static uintptr_t lua_cov_prev;

static void line_hook(lua_State *L, lua_Debug *ar) {
  if (!lua_getinfo(L, "S", ar)) return;
  /* A chunk's source string lives as long as its functions: the modules are
   * loaded once, so its address names the file. */
  uintptr_t here = ((uintptr_t)ar->source * 0x9E3779B1u) ^ ((uintptr_t)ar->currentline * 0x85EBCA77u);
  here ^= here >> 15;
  size_t slot = (size_t)((here ^ lua_cov_prev) % LUA_COV_SIZE);
  if (lua_cov[slot] < 255) lua_cov[slot]++;
  lua_cov_prev = here >> 1;
}

void fz_lua_coverage(lua_State *L) {
  lua_sethook(L, line_hook, LUA_MASKLINE, 0);
}
