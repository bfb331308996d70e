/* engine.hash: SHA-256 of strings, files and trees; copy_tree. */
#include <string.h>

#include "aux.h"

#define TREE_BOX "fleetsnap.TreeBox"
#define TASK_TYPE "fleetsnap.HashTask"

static int l_sha256(lua_State *L) {
  size_t len;
  const char *s = luaL_checklstring(L, 1, &len);
  char hex[FSN_HEX_LEN + 1];
  fsn_err err;
  if (fsn_sha256_hex(fsn_lua_state(L)->hasher, s, len, hex, &err) != 0) return fsn_lua_fail(L, &err);
  lua_pushstring(L, hex);
  return 1;
}

static int l_file(lua_State *L) {
  const char *path = luaL_checkstring(L, 1);
  char hex[FSN_HEX_LEN + 1];
  uint64_t size = 0;
  fsn_err err;
  if (fsn_hash_file(fsn_lua_state(L)->hasher, path, hex, &size, &err) != 0)
    return fsn_lua_fail(L, &err);
  lua_pushstring(L, hex);
  lua_pushinteger(L, (lua_Integer)size);
  return 2;
}

static int tree_box_gc(lua_State *L) {
  fsn_tree_free((fsn_tree *)luaL_checkudata(L, 1, TREE_BOX));
  return 0;
}

/* The core fills a tree owned by a userdata, so pushing the result (which
 * may raise on memory errors) cannot leak it. */
static fsn_tree *new_tree_box(lua_State *L) {
  fsn_tree *t = lua_newuserdatauv(L, sizeof *t, 0);
  fsn_tree_init(t);
  if (luaL_newmetatable(L, TREE_BOX)) {
    lua_pushcfunction(L, tree_box_gc);
    lua_setfield(L, -2, "__gc");
  }
  lua_setmetatable(L, -2);
  return t;
}

static void push_tree(lua_State *L, const fsn_tree *t) {
  lua_createtable(L, 0, 4);
  if (t->digest[0]) {
    lua_pushstring(L, t->digest);
    lua_setfield(L, -2, "digest");
  }
  lua_pushinteger(L, (lua_Integer)t->bytes);
  lua_setfield(L, -2, "bytes");
  if (t->fingerprint[0]) {
    lua_pushstring(L, t->fingerprint);
    lua_setfield(L, -2, "fingerprint");
  }
  lua_createtable(L, (int)t->count, 0);
  for (size_t i = 0; i < t->count; i++) {
    lua_createtable(L, 0, 3);
    lua_pushstring(L, t->files[i].path);
    lua_setfield(L, -2, "path");
    lua_pushinteger(L, (lua_Integer)t->files[i].size);
    lua_setfield(L, -2, "size");
    if (t->files[i].hex[0]) {
      lua_pushstring(L, t->files[i].hex);
      lua_setfield(L, -2, "sha256");
    }
    lua_rawseti(L, -2, (lua_Integer)i + 1);
  }
  lua_setfield(L, -2, "files");
}

static int threads_option(lua_State *L, int idx) {
  lua_Integer n = fsn_lua_opt_integer(L, idx, "threads", 0);
  if (n < 0 || n > 64) luaL_error(L, "option 'threads' must be between 0 and 64");
  return (int)n;
}

static int l_tree(lua_State *L) {
  const char *path = luaL_checkstring(L, 1);
  static const char *const allowed[] = {"threads", NULL};
  fsn_lua_check_options(L, 2, allowed);
  int threads = threads_option(L, 2);
  fsn_tree *t = new_tree_box(L);
  fsn_err err;
  if (fsn_hash_tree(fsn_lua_state(L)->hasher, path, threads, t, &err) != 0)
    return fsn_lua_fail(L, &err);
  push_tree(L, t);
  return 1;
}

/* The tree's stat fingerprint, no content read (see fsn_stat_tree). */
static int l_fingerprint(lua_State *L) {
  const char *path = luaL_checkstring(L, 1);
  fsn_tree *t = new_tree_box(L);
  fsn_err err;
  if (fsn_stat_tree(fsn_lua_state(L)->hasher, path, t, &err) != 0) return fsn_lua_fail(L, &err);
  push_tree(L, t);
  return 1;
}

/* {=== background tasks ===} */

typedef struct task_ud {
  fsn_hash_task *t;
} task_ud;

static task_ud *check_task(lua_State *L, int idx) {
  task_ud *u = luaL_checkudata(L, idx, TASK_TYPE);
  if (!u->t) luaL_error(L, "hash task is closed");
  return u;
}

int fsn_lua_hash_task_fd(lua_State *L, int idx) {
  task_ud *u = luaL_testudata(L, idx, TASK_TYPE);
  if (!u) return -2;
  if (!u->t) luaL_error(L, "hash task is closed");
  return fsn_hash_task_fd(u->t);
}

/* hash.start_tree(path [, {threads}]): the task that hashes path's tree on
 * its own thread. Wait for it with proc.wait_any (with processes or not),
 * or task:result(). */
static int l_start_tree(lua_State *L) {
  const char *path = luaL_checkstring(L, 1);
  static const char *const allowed[] = {"threads", NULL};
  fsn_lua_check_options(L, 2, allowed);
  int threads = threads_option(L, 2);
  task_ud *u = lua_newuserdatauv(L, sizeof *u, 0);
  u->t = NULL;
  luaL_setmetatable(L, TASK_TYPE);
  fsn_err err;
  u->t = fsn_hash_task_start(path, threads, &err);
  if (!u->t) return fsn_lua_fail(L, &err);
  return 1;
}

/* task:result(): waits, then the tree (as hash.tree returns it) or nil,
 * message, code. The tree is handed over once. */
static int m_task_result(lua_State *L) {
  task_ud *u = check_task(L, 1);
  fsn_tree *t = new_tree_box(L);
  fsn_err err;
  if (fsn_hash_task_result(u->t, t, &err) != 0) return fsn_lua_fail(L, &err);
  push_tree(L, t);
  return 1;
}

static int m_task_done(lua_State *L) {
  lua_pushboolean(L, fsn_hash_task_finished(check_task(L, 1)->t));
  return 1;
}

/* Cancels a running task and waits for its thread. Idempotent. */
static int m_task_close(lua_State *L) {
  task_ud *u = luaL_checkudata(L, 1, TASK_TYPE);
  fsn_hash_task_free(u->t);
  u->t = NULL;
  return 0;
}

static int m_task_tostring(lua_State *L) {
  task_ud *u = luaL_checkudata(L, 1, TASK_TYPE);
  if (!u->t) lua_pushliteral(L, "fleetsnap.HashTask (closed)");
  else lua_pushfstring(L, "fleetsnap.HashTask (%s)", fsn_hash_task_finished(u->t) ? "finished" : "running");
  return 1;
}

static const luaL_Reg task_methods[] = {
  {"result", m_task_result},
  {"done", m_task_done},
  {"close", m_task_close},
  {NULL, NULL},
};

static const luaL_Reg task_meta[] = {
  {"__gc", m_task_close},
  {"__close", m_task_close},
  {"__tostring", m_task_tostring},
  {NULL, NULL},
};

static int l_copy_tree(lua_State *L) {
  const char *src = luaL_checkstring(L, 1);
  const char *dst = luaL_checkstring(L, 2);
  static const char *const allowed[] = {"threads", "sync", NULL};
  fsn_lua_check_options(L, 3, allowed);
  int threads = threads_option(L, 3);
  int sync = fsn_lua_opt_boolean(L, 3, "sync", 0);
  fsn_tree *t = new_tree_box(L);
  fsn_err err;
  if (fsn_copy_tree(fsn_lua_state(L)->hasher, src, dst, threads, sync, t, &err) != 0)
    return fsn_lua_fail(L, &err);
  push_tree(L, t);
  return 1;
}

/* hash.stats(): {bytes, files} hashed by this process so far. */
static int l_stats(lua_State *L) {
  uint64_t bytes, files;
  fsn_hash_stats(&bytes, &files);
  lua_createtable(L, 0, 2);
  lua_pushinteger(L, (lua_Integer)bytes);
  lua_setfield(L, -2, "bytes");
  lua_pushinteger(L, (lua_Integer)files);
  lua_setfield(L, -2, "files");
  return 1;
}

static const luaL_Reg funcs[] = {
  {"stats", l_stats},
  {"sha256", l_sha256},
  {"file", l_file},
  {"tree", l_tree},
  {"copy_tree", l_copy_tree},
  {"fingerprint", l_fingerprint},
  {"start_tree", l_start_tree},
  {NULL, NULL},
};

void fsn_open_hash(lua_State *L, int state_idx) {
  fsn_lua_class(L, TASK_TYPE, task_methods, task_meta);
  fsn_lua_register(L, state_idx, "hash", funcs);
}
