/* engine.lock: flock-based locks; a Lock can be inherited by a child
 * process (engine.proc inherit) so that it lives as long as the child's
 * whole process tree. */
#include <string.h>

#include "aux.h"
#include "lock.h"

#define LOCK_TYPE "fleetsnap.Lock"

typedef struct lock_ud {
  fsn_lock l;
} lock_ud;

static int lock_close(lua_State *L) {
  lock_ud *u = luaL_checkudata(L, 1, LOCK_TYPE);
  fsn_lock_release(&u->l);
  return 0;
}

static int l_acquire(lua_State *L) {
  const char *path = luaL_checkstring(L, 1);
  static const char *const allowed[] = {"wait_ms", "owner", "range", NULL};
  fsn_lua_check_options(L, 2, allowed);
  lua_Integer wait_ms = fsn_lua_opt_integer(L, 2, "wait_ms", -1);
  const char *owner = fsn_lua_opt_string(L, 2, "owner", NULL);
  lua_Integer range = fsn_lua_opt_integer(L, 2, "range", -1);
  if (range < -1 || (range >= 0 && owner)) return luaL_error(L, "option 'range' must be >= 0, without 'owner'");
  /* Created closed first, so the descriptor always has an owner. */
  lock_ud *u = lua_newuserdatauv(L, sizeof *u, 1);
  u->l.fd = -1;
  luaL_setmetatable(L, LOCK_TYPE);
  lua_pushvalue(L, 1);
  lua_setiuservalue(L, -2, 1);
  fsn_err err;
  if (range >= 0) {
    if (fsn_lock_acquire_range(&u->l, path, (long long)range, (long)wait_ms, &err) != 0) return fsn_lua_fail(L, &err);
    return 1;
  }
  fsn_buf *text = fsn_lua_newbuf(L);
  if (owner) fsn_buf_adds(text, owner);
  else fsn_lock_default_owner(text);
  fsn_buf_addc(text, 0);
  if (text->oom) return luaL_error(L, "out of memory");
  if (fsn_lock_acquire(&u->l, path, (long)wait_ms, text->data, &err) != 0) return fsn_lua_fail(L, &err);
  lua_pop(L, 1);
  return 1;
}

/* probe(path [, {wait_ms, create, range}]): true when the lock (the byte at
 * range of a shared file, or the whole file) is free. create
 * false: a missing file counts as free and is not made (one lstat fewer
 * than a caller's own existence check). */
static int l_probe(lua_State *L) {
  const char *path = luaL_checkstring(L, 1);
  static const char *const allowed[] = {"wait_ms", "create", "range", NULL};
  fsn_lua_check_options(L, 2, allowed);
  lua_Integer wait_ms = fsn_lua_opt_integer(L, 2, "wait_ms", -1);
  int create = fsn_lua_opt_boolean(L, 2, "create", 1);
  lua_Integer range = fsn_lua_opt_integer(L, 2, "range", -1);
  if (range < -1) return luaL_error(L, "option 'range' must be >= 0");
  fsn_err err;
  if (fsn_lock_probe_range(path, (long long)range, (long)wait_ms, create, &err) != 0) return fsn_lua_fail(L, &err);
  lua_pushboolean(L, 1);
  return 1;
}

static int l_owner(lua_State *L) {
  const char *path = luaL_checkstring(L, 1);
  fsn_buf *b = fsn_lua_newbuf(L);
  fsn_err err;
  if (fsn_lock_owner(path, b, &err) != 0) return fsn_lua_fail(L, &err);
  lua_newtable(L);
  size_t i = 0;
  while (i < b->len) {
    const char *line = b->data + i;
    const char *nl = memchr(line, '\n', b->len - i);
    size_t n = nl ? (size_t)(nl - line) : b->len - i;
    const char *eq = memchr(line, '=', n);
    if (eq) {
      lua_pushlstring(L, line, (size_t)(eq - line));
      lua_pushlstring(L, eq + 1, n - (size_t)(eq - line) - 1);
      lua_rawset(L, -3);
    }
    i += n + 1;
  }
  lua_getfield(L, -1, "pid");
  if (lua_isstring(L, -1)) {
    lua_Integer pid = lua_tointeger(L, -1);
    if (pid > 0) {
      lua_pushinteger(L, pid);
      lua_setfield(L, -3, "pid");
    }
  }
  lua_pop(L, 1);
  return 1;
}

static int m_release(lua_State *L) {
  lock_close(L);
  return 0;
}

static int m_held(lua_State *L) {
  lock_ud *u = luaL_checkudata(L, 1, LOCK_TYPE);
  lua_pushboolean(L, u->l.fd >= 0);
  return 1;
}

static int m_path(lua_State *L) {
  luaL_checkudata(L, 1, LOCK_TYPE);
  lua_getiuservalue(L, 1, 1);
  return 1;
}

static int m_tostring(lua_State *L) {
  lock_ud *u = luaL_checkudata(L, 1, LOCK_TYPE);
  lua_getiuservalue(L, 1, 1);
  lua_pushfstring(L, "fleetsnap.Lock (%s)%s", lua_tostring(L, -1), u->l.fd >= 0 ? "" : " (released)");
  return 1;
}

static const luaL_Reg methods[] = {
  {"release", m_release},
  {"close", m_release},
  {"held", m_held},
  {"path", m_path},
  {NULL, NULL},
};

static const luaL_Reg meta[] = {
  {"__gc", lock_close},
  {"__close", lock_close},
  {"__tostring", m_tostring},
  {NULL, NULL},
};

static const luaL_Reg funcs[] = {
  {"acquire", l_acquire},
  {"probe", l_probe},
  {"owner", l_owner},
  {NULL, NULL},
};

void fsn_open_lock(lua_State *L, int state_idx) {
  fsn_lua_class(L, LOCK_TYPE, methods, meta);
  fsn_lua_register(L, state_idx, "lock", funcs);
}

int fsn_lua_lock_fd(lua_State *L, int idx) {
  lock_ud *u = luaL_checkudata(L, idx, LOCK_TYPE);
  if (u->l.fd < 0) luaL_error(L, "cannot pass a released lock to a process");
  return u->l.fd;
}
