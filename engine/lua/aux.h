/* Shared pieces of the Lua binding: the engine state every function gets as
 * upvalue 1, failure returns, option checking, owned scratch boxes. */
#ifndef FSN_LUA_AUX_H
#define FSN_LUA_AUX_H

#include <lauxlib.h>
#include <lua.h>

#include "buf.h"
#include "err.h"
#include "failpoint.h"
#include "hash.h"

#define FSN_STATE "fleetsnap.Engine"

/* Engine-wide state; user values: 1 = JSON array metatable, 2 = object one. */
typedef struct fsn_state {
  fsn_hasher *hasher;
  fsn_failpoints fp;
} fsn_state;

#define FSN_STATE_IDX lua_upvalueindex(1)

static inline fsn_state *fsn_lua_state(lua_State *L) {
  return (fsn_state *)lua_touserdata(L, FSN_STATE_IDX);
}

/* Pushes nil, message, code; returns 3. */
int fsn_lua_fail(lua_State *L, const fsn_err *err);

/* Creates the metatable `name` with methods in __index and meta entries. */
void fsn_lua_class(lua_State *L, const char *name, const luaL_Reg *methods,
                   const luaL_Reg *meta);

/* Raises if the options table at idx (nil allowed) has a key not listed. */
void fsn_lua_check_options(lua_State *L, int idx, const char *const *allowed);
lua_Integer fsn_lua_opt_integer(lua_State *L, int idx, const char *key, lua_Integer def);
const char *fsn_lua_opt_string(lua_State *L, int idx, const char *key, const char *def);
int fsn_lua_opt_boolean(lua_State *L, int idx, const char *key, int def);

/* A growable buffer owned by a userdata left on the stack, so a raised
 * error frees it through __gc. */
fsn_buf *fsn_lua_newbuf(lua_State *L);

/* Sets t[name] = a new table of funcs, each with the state as upvalue;
 * state at state_idx, table t at top. */
void fsn_lua_register(lua_State *L, int state_idx, const char *name, const luaL_Reg *funcs);

/* JSON, shared with the journal. decode pushes the value or fills err. */
int fsn_lua_json_decode(lua_State *L, int state_idx, const char *text, size_t len,
                        fsn_err *err);
/* Encodes the value at idx into b (canonical or pretty); raises on values
 * that are not JSON. */
void fsn_lua_json_encode(lua_State *L, int idx, fsn_buf *b, int pretty);

/* The descriptor of a held fleetsnap.Lock at idx (raises otherwise). */
int fsn_lua_lock_fd(lua_State *L, int idx);
/* The completion descriptor of the fleetsnap.HashTask at idx, -2 when the
 * value is not one (raises when it is closed). */
int fsn_lua_hash_task_fd(lua_State *L, int idx);

void fsn_open_json(lua_State *L, int state_idx);
void fsn_open_hash(lua_State *L, int state_idx);
void fsn_open_fs(lua_State *L, int state_idx);
void fsn_open_lock(lua_State *L, int state_idx);
void fsn_open_proc(lua_State *L, int state_idx);
void fsn_open_journal(lua_State *L, int state_idx);
void fsn_open_signals(lua_State *L, int state_idx);

#endif
