/* Target `readers`: the Lua readers of untrusted documents (manifest 0.36
 * and 0.108, download journal, backup plan, restore plan, mapping, the
 * Canic registry's Candid reply, inventory), through fuzz/readers.lua in an
 * embedded Lua 5.4 with the engine linked in. The first byte of an input
 * chooses the reader, the rest is the document. A refusal with a registry
 * code is the expected answer to a bad document; a traceback (any error
 * that is not the registry's) aborts: an operator would see "internal
 * error" where a corrupt file should have been named. */
#include <stdio.h>
#include <stdlib.h>

#include <lauxlib.h>

#include "fuzz.h"

static lua_State *L;
static int check_ref;

int LLVMFuzzerInitialize(int *argc, char ***argv) {
  (void)argc;
  (void)argv;
  L = fz_lua_new();
  lua_pushstring(L, fz_tmpdir());
  lua_setglobal(L, "FUZZ_TMPDIR");
  const char *src = getenv("FLEETSNAP_SOURCE");
  if (!src || !*src) src = FLEETSNAP_SOURCE_DIR;
  char path[4096];
  snprintf(path, sizeof path, "%s/fuzz/readers.lua", src);
  if (luaL_loadfile(L, path) != LUA_OK || lua_pcall(L, 0, 1, 0) != LUA_OK)
    fz_die("%s: %s", path, lua_tostring(L, -1));
  lua_getfield(L, -1, "check");
  check_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  lua_settop(L, 0);
  /* After loading: what counts is the lines the inputs reach. */
  fz_lua_coverage(L);
  return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  lua_rawgeti(L, LUA_REGISTRYINDEX, check_ref);
  lua_pushlstring(L, (const char *)data, size);
  if (lua_pcall(L, 1, 1, 0) != LUA_OK) fz_die("the harness failed: %s", lua_tostring(L, -1));
  if (!lua_isnil(L, -1)) fz_die("%s", lua_tostring(L, -1));
  lua_settop(L, 0);
  lua_gc(L, LUA_GCCOLLECT);
  return 0;
}
